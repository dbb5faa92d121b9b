// volio: the calls the node's data path needs and Node's fs and net modules do not offer.
//
//   preadNowait(fd, buffer, offset, length, position) -> bytes read, or -errno
//     preadv2(RWF_NOWAIT): copies what the page cache holds and never waits for the disk; -EAGAIN
//     when it would have to (the caller then reads on libuv's thread pool).
//   pwritev(fd, buffers, position) -> bytes written, or -errno
//     one synchronous pwritev of up to 64 buffers, without the exception and context objects
//     fs.writevSync creates per call.
//   crc32c(pieces, previous) -> crc32c (Castagnoli) of the pieces back to back, continuing from
//     `previous`; only where the CPU has the SSE4.2 crc32 instruction (exported only then).
//     Every replication frame and journal entry is checksummed, and a table-driven crc costs
//     several microseconds per 4 KiB.
//   setReceiveLowWater(fd, bytes) -> 0 or -errno
//     SO_RCVLOWAT of a TCP socket: epoll reports it readable only once that many bytes are queued
//     (or the peer closed, or the kernel's receive memory is under pressure). While the rest of a
//     large write payload is awaited, the event loop then wakes once for it instead of once per
//     segment burst (measured: 2.7 reads and callbacks per 1 MiB write before).
//   tuneMalloc(mmapThreshold, trimThreshold) -> true where glibc's mallopt exists
//     Buffers of 128 KiB and more are mmap'ed and unmapped by default, and freed heap tops are
//     returned to the kernel: every large payload buffer then costs page faults on first touch
//     (measured here: 1 MiB allocated and filled 1.07 ms of CPU, against 0.18 ms with the heap kept
//     and 0.03 ms reused). Raising both thresholds keeps that memory in the process for reuse.
//
// Errors are returned as negative errno values, never thrown: the caller turns them into the same
// errors the fs module reports. Nothing here keeps state or references to the buffers.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <node_api.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define MAX_PIECES 64

static napi_value number(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

// Data and length of a Buffer or any other Uint8Array view.
static int bytes_of(napi_env env, napi_value value, char **data, size_t *length) {
  napi_typedarray_type type;
  void *base;
  if (napi_get_typedarray_info(env, value, &type, length, &base, NULL, NULL) != napi_ok || type != napi_uint8_array) return 0;
  *data = base;
  return 1;
}

static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t fd;
  int64_t offset, length, position;
  char *data;
  size_t size;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) return number(env, -EINVAL);
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || !bytes_of(env, argv[1], &data, &size) ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_get_value_int64(env, argv[4], &position) != napi_ok) return number(env, -EINVAL);
  if (offset < 0 || length < 0 || position < 0 || (uint64_t)offset + (uint64_t)length > size) return number(env, -EINVAL);
  struct iovec iov = { data + offset, (size_t)length };
  ssize_t n;
  do n = preadv2(fd, &iov, 1, position, RWF_NOWAIT); while (n < 0 && errno == EINTR);
  return number(env, n < 0 ? -errno : n);
}

static napi_value pwritev_sync(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t position;
  uint32_t count;
  bool is_array;
  struct iovec iov[MAX_PIECES];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) return number(env, -EINVAL);
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &count) != napi_ok || napi_get_value_int64(env, argv[2], &position) != napi_ok) {
    return number(env, -EINVAL);
  }
  if (count == 0 || count > MAX_PIECES || position < 0) return number(env, -EINVAL);
  for (uint32_t i = 0; i < count; i++) {
    napi_value piece;
    char *data;
    size_t size;
    if (napi_get_element(env, argv[1], i, &piece) != napi_ok || !bytes_of(env, piece, &data, &size)) return number(env, -EINVAL);
    iov[i].iov_base = data;
    iov[i].iov_len = size;
  }
  ssize_t n;
  do n = pwritev(fd, iov, (int)count, position); while (n < 0 && errno == EINTR);
  return number(env, n < 0 ? -errno : n);
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p, size_t n) {
  uint64_t c = crc;
  while (n > 0 && ((uintptr_t)p & 7) != 0) { c = _mm_crc32_u8((uint32_t)c, *p++); n--; }
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, *(const uint64_t *)p);
  while (n-- > 0) c = _mm_crc32_u8((uint32_t)c, *p++);
  return (uint32_t)c;
}

static napi_value crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t previous, count;
  bool is_array;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_uint32(env, argv[1], &previous) != napi_ok || napi_is_array(env, argv[0], &is_array) != napi_ok) return NULL;
  uint32_t crc = ~previous;
  char *data;
  size_t size;
  if (!is_array) {
    if (!bytes_of(env, argv[0], &data, &size)) return NULL;
    crc = crc32c_hw(crc, (const unsigned char *)data, size);
  } else {
    if (napi_get_array_length(env, argv[0], &count) != napi_ok) return NULL;
    for (uint32_t i = 0; i < count; i++) {
      napi_value piece;
      if (napi_get_element(env, argv[0], i, &piece) != napi_ok || !bytes_of(env, piece, &data, &size)) return NULL;
      crc = crc32c_hw(crc, (const unsigned char *)data, size);
    }
  }
  napi_value out;
  napi_create_uint32(env, ~crc, &out);
  return out;
}
#endif

static napi_value set_receive_low_water(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd, bytes;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &bytes) != napi_ok || bytes < 1) {
    return number(env, -EINVAL);
  }
  return number(env, setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) == 0 ? 0 : -errno);
}

static napi_value tune_malloc(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t mmap_threshold, trim_threshold;
  bool done = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 2 &&
      napi_get_value_int32(env, argv[0], &mmap_threshold) == napi_ok && napi_get_value_int32(env, argv[1], &trim_threshold) == napi_ok) {
#ifdef __GLIBC__
    done = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
#endif
  }
  napi_value out;
  napi_get_boolean(env, done, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "preadNowait", NULL, pread_nowait, NULL, NULL, NULL, napi_default, NULL },
    { "pwritev", NULL, pwritev_sync, NULL, NULL, NULL, napi_default, NULL },
    { "tuneMalloc", NULL, tune_malloc, NULL, NULL, NULL, napi_default, NULL },
    { "setReceiveLowWater", NULL, set_receive_low_water, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) {
    napi_property_descriptor crc = { "crc32c", NULL, crc32c, NULL, NULL, NULL, napi_default, NULL };
    napi_define_properties(env, exports, 1, &crc);
  }
#endif
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
