// The real-client tests of nbd-clients.test.ts again, with the node on its pure-JS I/O path
// (TRICOPY_NATIVE=0, as when the native addon could not be built): the fallback serves real
// clients exactly as the native path does.
import '../support/js-io';
import './nbd-clients.test';
