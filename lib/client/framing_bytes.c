/* The bytes framing: an RFC 6120 stream over TCP, TLS, zlib or a
 * caller's own byte transport. It writes exactly what the client wrote
 * before the seam existed: the suites compare these bytes. */
#include "client/framing.h"

#include "proto/cmproto.h"

static int bytes_open(xcm_buf *b, const xcm_frame_open *a) {
  return xcm__client_stream_open(b, a->from, a->id, a->lang, a->version_1);
}

static int bytes_server_error(xcm_buf *b, const char *bytes, size_t len) {
  return xcm__buf_append(b, bytes, len);
}

const xcm_framing xcm__framing_bytes = {
    "bytes",
    XCM_FRAMING_STARTTLS | XCM_FRAMING_ZLIB,
    bytes_open,
    xcm__client_features,
    xcm__stream_error,
    bytes_server_error,
    xcm__stream_close_tag,
    NULL /* routed elements go out as they came */};
