#include "tlsclient.h"

#include <string.h>

static void tc_read(void *ud, const char *data, size_t len) {
  tls_client *t = ud;

  xcm__buf_append(&t->in, data, len);
  xcm__buf_append_char(&t->in, '\0');
  t->in.len--;
}

static void tc_end(void *ud, int err) {
  tls_client *t = ud;

  (void)err;
  t->ended = 1;
  xcm__stream_close(t->s);
}

static void tc_done(void *ud, int err) {
  ((tls_client *)ud)->done = err == 0 ? 1 : -1;
}

static void tc_closed(void *ud) {
  ((tls_client *)ud)->closed = 1;
}

const xcm_stream_cb tc_cb = {tc_read, tc_end, tc_done, NULL, tc_closed};

int tc_has(void *ud) {
  tc_wait *w = ud;

  return (w->t->in.data && strstr(w->t->in.data, w->needle)) || w->t->ended;
}
