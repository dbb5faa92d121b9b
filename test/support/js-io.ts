// Imported first by a test file that must run its nodes on the pure-JS I/O path: node processes it
// starts inherit TRICOPY_NATIVE=0, so they never load the native addon.
process.env.TRICOPY_NATIVE = '0';
