/* A libstrophe client for the end-to-end tests: logs in through libxcm,
 * fetches its roster, sends itself messages through the server (plain,
 * non-ASCII, escaped) and checks they come back in order. Prints TAP.
 *
 * usage: strophe-client HOST PORT JID PASSWORD starttls|direct [CAFILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>

#define N_MESSAGES 50

static int tap_n, tap_failed;
static int connected, disconnected, roster_items, received, in_order = 1;
static int bound;

static void check(int ok, const char *name) {
  tap_n++;
  if (!ok)
    tap_failed++;
  printf("%s %d - %s\n", ok ? "ok" : "not ok", tap_n, name);
  fflush(stdout);
}

static const char *body_text(xmpp_stanza_t *body, char *buf, size_t len) {
  char *t = body ? xmpp_stanza_get_text(body) : NULL;

  snprintf(buf, len, "%s", t ? t : "");
  if (t != NULL)
    xmpp_free(xmpp_stanza_get_context(body), t);
  return buf;
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
  char text[256], want[64];

  (void)conn;
  (void)ud;
  body_text(xmpp_stanza_get_child_by_name(st, "body"), text, sizeof text);
  if (strncmp(text, "n ", 2) == 0) {
    snprintf(want, sizeof want, "n %d", received);
    if (strcmp(text, want) != 0)
      in_order = 0;
    received++;
  } else if (strcmp(text, "\xc3\xbc <&> \"'") == 0) {
    received += 1000;
  }
  return 1;
}

static int on_roster(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
  xmpp_stanza_t *q = xmpp_stanza_get_child_by_name(st, "query"), *item;

  (void)conn;
  (void)ud;
  roster_items = 0;
  for (item = q ? xmpp_stanza_get_children(q) : NULL; item != NULL;
       item = xmpp_stanza_get_next(item))
    roster_items++;
  roster_items = roster_items ? roster_items : -1;
  return 0;
}

static void send_text(xmpp_conn_t *conn, const char *to, const char *text) {
  xmpp_ctx_t *ctx = xmpp_conn_get_context(conn);
  xmpp_stanza_t *m = xmpp_message_new(ctx, "chat", to, NULL);

  xmpp_message_set_body(m, text);
  xmpp_send(conn, m);
  xmpp_stanza_release(m);
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int err,
                    xmpp_stream_error_t *se, void *ud) {
  xmpp_ctx_t *ctx = ud;
  xmpp_stanza_t *iq, *q;
  char text[32];
  int i;

  (void)err;
  (void)se;
  if (ev != XMPP_CONN_CONNECT) {
    disconnected = 1;
    xmpp_stop(ctx);
    return;
  }
  connected = 1;
  bound = xmpp_conn_get_bound_jid(conn) != NULL;
  xmpp_handler_add(conn, on_message, NULL, "message", NULL, NULL);
  iq = xmpp_iq_new(ctx, "get", "roster1");
  q = xmpp_stanza_new(ctx);
  xmpp_stanza_set_name(q, "query");
  xmpp_stanza_set_ns(q, "jabber:iq:roster");
  xmpp_stanza_add_child(iq, q);
  xmpp_stanza_release(q);
  xmpp_id_handler_add(conn, on_roster, "roster1", NULL);
  xmpp_send(conn, iq);
  xmpp_stanza_release(iq);
  xmpp_send_raw_string(conn, "<presence/>");
  for (i = 0; i < N_MESSAGES; i++) {
    snprintf(text, sizeof text, "n %d", i);
    send_text(conn, xmpp_conn_get_bound_jid(conn), text);
  }
  send_text(conn, xmpp_conn_get_bound_jid(conn), "\xc3\xbc <&> \"'");
}

int main(int argc, char **argv) {
  xmpp_ctx_t *ctx;
  xmpp_conn_t *conn;
  long flags = XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_DISABLE_SM;
  int i;

  if (argc < 6) {
    fprintf(stderr,
            "usage: %s HOST PORT JID PASSWORD starttls|direct "
            "[CAFILE]\n",
            argv[0]);
    return 2;
  }
  printf("1..5\n");
  xmpp_initialize();
  ctx = xmpp_ctx_new(NULL, NULL);
  conn = xmpp_conn_new(ctx);
  if (strcmp(argv[5], "direct") == 0)
    flags = XMPP_CONN_FLAG_LEGACY_SSL | XMPP_CONN_FLAG_DISABLE_SM;
  if (argc > 6)
    xmpp_conn_set_cafile(conn, argv[6]);
  else
    flags |= XMPP_CONN_FLAG_TRUST_TLS;
  xmpp_conn_set_flags(conn, flags);
  xmpp_conn_set_jid(conn, argv[3]);
  xmpp_conn_set_pass(conn, argv[4]);
  if (xmpp_connect_client(conn, argv[1], (unsigned short)atoi(argv[2]), on_conn,
                          ctx) != XMPP_EOK) {
    check(0, "connect");
    return 1;
  }
  for (i = 0; i < 1000 && !disconnected &&
              (received < N_MESSAGES + 1000 || roster_items == 0);
       i++)
    xmpp_run_once(ctx, 10);
  check(connected && bound, "logs in and binds a resource");
  check(xmpp_conn_is_secured(conn), "the stream is encrypted");
  check(roster_items > 0, "fetches a non-empty roster");
  check(received == N_MESSAGES + 1000, "its messages come back through the "
                                       "server");
  check(in_order, "in order, special characters intact");
  xmpp_disconnect(conn);
  for (i = 0; i < 200 && !disconnected; i++)
    xmpp_run_once(ctx, 10);
  xmpp_conn_release(conn);
  xmpp_ctx_free(ctx);
  xmpp_shutdown();
  return tap_failed ? 1 : 0;
}
