/* libFuzzer target for the client stream as a stranger reaches it: each
 * input is one client connection to a real libxcm instance, with the
 * in-process Openfire behind it, over a transport of the fuzzer's own.
 * The input is fed in pieces (the first byte picks their size), so the
 * allow-list, the limits, SASL and the restarts all run on what comes.
 * The instance lives across inputs, as a server would. Whatever the
 * client sends, what the CM sends upstream must stay within the protocol:
 * a violation the testkit's witness counts aborts (libFuzzer keeps the
 * input; the violation may belong to the input before, whose bytes the
 * testkit read late). An input whose stream begins like a PROXY header
 * ('P' or CR) goes to a second listener that requires one
 * (proxy_protocol), so the header and what follows it are fuzzed through
 * the whole instance too. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "xcm/testkit.h"
#include "xcm/xcm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static xcm_testkit *kit;
static xcm_cm *cm;

typedef struct peer {
  size_t received;
  int closed;
} peer;

static int on_write(void *ud, const char *d, size_t len) {
  (void)d;
  ((peer *)ud)->received += len;
  return 0;
}

static void on_close(void *ud) {
  ((peer *)ud)->closed = 1;
}

static void setup(void) {
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  char err[256];
  int i;

  uv_loop_init(&loop);
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = 1;
  ko.open_accounts = 1;
  if (xcm_testkit_new(&kit, &loop, &ko, err, sizeof err) != 0)
    abort();
  xcm_testkit_add_account(kit, "alice", "alice");
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(kit);
  o.name = "fuzz";
  o.secret = "cmsecret";
  o.connections = 1;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  o.max_stanza_preauth = 4096;
  o.max_stanza = 16384;
  o.max_depth = 16;
  if (xcm_cm_new(&cm, &loop, &o, err, sizeof err) != 0)
    abort();
  xcm_listen_options_init(&lo, sizeof lo);
  if (xcm_cm_listen(cm, &lo, err, sizeof err) != 0)
    abort();
  lo.proxy_protocol = 1;
  lo.proxy_trusted = "127.0.0.1";
  if (xcm_cm_listen(cm, &lo, err, sizeof err) != 0 || xcm_cm_start(cm) != 0)
    abort();
  for (i = 0; i < 10000 && xcm_cm_policy(cm) == NULL; i++)
    uv_run(&loop, UV_RUN_ONCE);
  if (xcm_cm_policy(cm) == NULL)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xcm_transport t;
  xcm_conn *conn;
  peer p = {0, 0};
  size_t piece, off = 1;
  int i, proxied;

  if (cm == NULL)
    setup();
  if (size < 1)
    return 0;
  piece = (size_t)data[0] + 1;
  t.size = sizeof t;
  t.write = on_write;
  t.close = on_close;
  t.ud = &p;
  proxied = size > 1 && (data[1] == 'P' || data[1] == 0x0D);
  /* The proxied listener takes headers from its balancer alone. */
  if (xcm_cm_attach(cm, proxied, &t, proxied ? "127.0.0.1" : "fuzzer", &conn) !=
      0)
    return 0;
  while (off < size && !p.closed) {
    size_t n = size - off < piece ? size - off : piece;
    xcm_conn_input(conn, (const char *)data + off, n);
    off += n;
    /* Let the upstream answer (SASL, bind) between pieces. */
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (!p.closed)
    xcm_conn_input_end(conn);
  for (i = 0; i < 1000 && !p.closed; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  /* The stream is freed on the next loop turn after its close. */
  uv_run(&loop, UV_RUN_NOWAIT);
  if (xcm_testkit_first_violation(kit) != NULL) {
    fprintf(stderr, "fuzz-client: the CM broke the protocol upstream: %s\n",
            xcm_testkit_first_violation(kit));
    abort();
  }
  return 0;
}
