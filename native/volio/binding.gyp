{
  "targets": [
    {
      "target_name": "volio",
      "sources": ["volio.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
