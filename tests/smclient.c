#include "smclient.h"

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util/buf.h"

/* ---- the world --------------------------------------------------------- */

static xcm_smc_knobs K;

static void cm_log(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  xcm_test_note("log: %s", msg);
}

static void log_sink(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  (void)msg;
}

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  if (K.log_all) {
    o->log = log_sink;
    o->log_level = XCM_LOG_DEBUG;
  }
  if (getenv("XCM_TEST_LOG") != NULL) {
    o->log = cm_log;
    o->log_level = XCM_LOG_DEBUG;
  }
  o->sm_enable = K.sm;
  if (K.max_unacked)
    o->sm_max_unacked = K.max_unacked;
  if (K.max_unacked_bytes)
    o->sm_max_unacked_bytes = K.max_unacked_bytes;
  if (K.every)
    o->sm_ack_every = K.every;
  if (K.every_bytes)
    o->sm_ack_every_bytes = K.every_bytes;
  if (K.quiet_ms)
    o->sm_ack_quiet_ms = K.quiet_ms;
  if (K.max_client_out)
    o->max_client_out = K.max_client_out;
  if (K.resume_ms)
    o->sm_resume_ms = K.resume_ms;
  if (K.ack_timeout_ms)
    o->sm_ack_timeout_ms = K.ack_timeout_ms;
  /* The senders flood on purpose: they are not what is tested. */
  o->rate = XCM_UNLIMITED;
  o->rate_bytes = XCM_UNLIMITED;
}

static void hooks(xcm_cm *cm, void *ud) {
  if (K.on_session != NULL)
    xcm_cm_set_session_events(cm, K.on_session, ud);
}

static const char *const accounts[] = {"alice", "bob",  "carol",
                                       "dave",  "erin", NULL};

xcm_smc_knobs xcm_smc_on(void) {
  xcm_smc_knobs k;

  memset(&k, 0, sizeof k);
  k.sm = 1;
  return k;
}

void xcm_smc_start(xcm_test_world *w, const xcm_smc_knobs *k) {
  xcm_test_world_setup s;

  memset(&s, 0, sizeof s);
  s.seed = 198;
  s.offline_max = 100000;
  s.accounts = accounts;
  s.roster = k->roster;
  s.tune = tune;
  s.hooks = hooks;
  s.on_event = k->on_event;
  s.ud = k->ud;
  K = *k;
  xcm_test_world_start(w, &s);
}

void xcm_smc_stats(xcm_test_world *w, xcm_stats *st) {
  xcm_cm_stats(w->cm, st, sizeof *st);
}

/* ---- logging in -------------------------------------------------------- */

static void b64(char *out, size_t cap, const void *raw, size_t n) {
  size_t olen = 0;

  REQUIRE(mbedtls_base64_encode((unsigned char *)out, cap, &olen, raw, n) == 0);
  out[olen] = '\0';
}

void xcm_smc_auth_plain(char *out, size_t cap, const char *user) {
  unsigned char raw[128];
  size_t n = 0, ul = strlen(user);
  char enc[176];

  REQUIRE(2 * ul + 2 <= sizeof raw);
  raw[n++] = 0;
  memcpy(raw + n, user, ul);
  n += ul;
  raw[n++] = 0;
  memcpy(raw + n, user, ul);
  n += ul;
  b64(enc, sizeof enc, raw, n);
  snprintf(out, cap,
           "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
           "mechanism='PLAIN'>%s</auth>",
           enc);
}

int xcm_smc_login(xcm_test_world *w, xcm_raw *r, const char *user,
                  const char *resource) {
  char auth[320];

  xcm_smc_auth_plain(auth, sizeof auth, user);
  if (!xcm_raw_open(r, &w->loop, "127.0.0.1", w->port, 1))
    return 0;
  return xcm_raw_login(r, XCM_RAW_HDR, auth, resource);
}

/* The text of the first <name ...>text</name> in s, decoded from base64
 * into out (cap bytes, NUL-terminated): its length, or -1. */
static int sasl_text(const char *s, const char *name, char *out, size_t cap) {
  char open[32], close[32];
  const char *p, *e;
  size_t n = 0;

  snprintf(open, sizeof open, "<%s", name);
  snprintf(close, sizeof close, "</%s>", name);
  p = strstr(s, open);
  if (p == NULL || (p = strchr(p, '>')) == NULL ||
      (e = strstr(p, close)) == NULL)
    return -1;
  p++;
  if (mbedtls_base64_decode((unsigned char *)out, cap - 1, &n,
                            (const unsigned char *)p, (size_t)(e - p)) != 0)
    return -1;
  out[n] = '\0';
  return (int)n;
}

static int hmac(const unsigned char *key, size_t klen, const void *data,
                size_t len, unsigned char out[20]) {
  return mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), key, klen,
                         data, len, out);
}

/* RFC 5802 from the client's side, SHA-1, no channel binding. */
int xcm_smc_scram(xcm_test_world *w, xcm_raw *r, const char *user) {
  const mbedtls_md_info_t *sha1 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA1);
  char bare[128], first[160], enc[512], server_first[256], final[256];
  char auth_msg[768], elem[768], server_final[128], salt_b64[128];
  unsigned char salt[64], salted[20], client_key[20], stored[20], sig[20];
  unsigned char server_key[20], proof[20];
  const char *nonce, *s, *iters;
  size_t salt_len = 0;
  mbedtls_md_context_t md;
  int i, n, iterations, err;

  snprintf(bare, sizeof bare, "n=%s,r=fyko+d2lbbFgONRv9qkxdawL", user);
  snprintf(first, sizeof first, "n,,%s", bare);
  b64(enc, sizeof enc, first, strlen(first));
  snprintf(elem, sizeof elem,
           "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
           "mechanism='SCRAM-SHA-1'>%s</auth>",
           enc);
  if (!xcm_raw_open(r, &w->loop, "127.0.0.1", w->port, 1))
    return 0;
  xcm_raw_sends(r, XCM_RAW_HDR);
  if (!xcm_raw_wait(r, "</stream:features>", 3000))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, elem);
  if (!xcm_raw_wait(r, "</challenge>", 3000) ||
      sasl_text(r->in.data, "challenge", server_first, sizeof server_first) < 0)
    return 0;
  /* r=<client nonce><server's>,s=<salt>,i=<iterations> */
  nonce = server_first;
  s = strstr(server_first, ",s=");
  iters = strstr(server_first, ",i=");
  if (strncmp(nonce, "r=fyko+d2lbbFgONRv9qkxdawL", 26) != 0 || s == NULL ||
      iters == NULL || iters < s || (size_t)(iters - s - 3) >= sizeof salt_b64)
    return 0;
  memcpy(salt_b64, s + 3, (size_t)(iters - s - 3));
  salt_b64[iters - s - 3] = '\0';
  iterations = atoi(iters + 3);
  if (iterations <= 0 || mbedtls_base64_decode(salt, sizeof salt, &salt_len,
                                               (const unsigned char *)salt_b64,
                                               strlen(salt_b64)) != 0)
    return 0;
  mbedtls_md_init(&md);
  err = mbedtls_md_setup(&md, sha1, 1);
  if (err == 0)
    err = mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)user,
                                    strlen(user), salt, salt_len,
                                    (unsigned)iterations, 20, salted);
  mbedtls_md_free(&md);
  if (err != 0)
    return 0;
  /* c=biws is "n,," in base64. */
  n = snprintf(final, sizeof final, "c=biws,%.*s", (int)(s - server_first),
               server_first);
  snprintf(auth_msg, sizeof auth_msg, "%s,%s,%s", bare, server_first, final);
  if (hmac(salted, 20, "Client Key", 10, client_key) != 0 ||
      mbedtls_md(sha1, client_key, 20, stored) != 0 ||
      hmac(stored, 20, auth_msg, strlen(auth_msg), sig) != 0)
    return 0;
  for (i = 0; i < 20; i++)
    proof[i] = client_key[i] ^ sig[i];
  b64(enc, sizeof enc, proof, 20);
  snprintf(final + n, sizeof final - (size_t)n, ",p=%s", enc);
  b64(enc, sizeof enc, final, strlen(final));
  xcm__buf_reset(&r->in);
  snprintf(elem, sizeof elem,
           "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>",
           enc);
  xcm_raw_sends(r, elem);
  if (!xcm_raw_wait(r, "</success>", 3000) ||
      sasl_text(r->in.data, "success", server_final, sizeof server_final) < 0)
    return 0;
  /* The server proves it knows the password too. */
  if (hmac(salted, 20, "Server Key", 10, server_key) != 0 ||
      hmac(server_key, 20, auth_msg, strlen(auth_msg), sig) != 0)
    return 0;
  b64(enc, sizeof enc, sig, 20);
  if (strncmp(server_final, "v=", 2) != 0 || strcmp(server_final + 2, enc) != 0)
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, XCM_RAW_HDR);
  return xcm_raw_wait(r, "urn:ietf:params:xml:ns:xmpp-bind", 3000);
}

/* ---- a client that acknowledges what it read whole ---------------------- */

/* The earliest of the patterns in s, or NULL. */
static const char *first_of(const char *s, int *which) {
  static const char *const pat[] = {"</message>", "<presence", "<iq ",
                                    XCM_SMC_R};
  const char *best = NULL;
  int i;

  for (i = 0; i < 4; i++) {
    const char *p = strstr(s, pat[i]);

    if (p != NULL && (best == NULL || p < best)) {
      best = p;
      *which = i;
    }
  }
  return best;
}

static void acker_read(xcm_raw *r, int eof) {
  xcm_smc_acker *a = r->ud;
  const char *p;
  int which = 0;
  char ans[96];

  if (eof || r->in.len == 0)
    return;
  if (a->scan > r->in.len) /* the test cleared what was read */
    a->scan = 0;
  while ((p = first_of(r->in.data + a->scan, &which)) != NULL) {
    a->scan = (size_t)(p - r->in.data) + 4;
    if (which < 3) {
      a->handled++;
      continue;
    }
    a->requests++;
    if (!a->acking)
      continue;
    snprintf(ans, sizeof ans, "<a xmlns='" XCM_SMC_NS "' h='%u'/>",
             (unsigned)a->handled);
    xcm_raw_sends(r, ans);
    a->last_h = a->handled;
    a->acks++;
  }
  /* A pattern cut by the read's end is found again next time. */
  if (r->in.len > a->scan + 16)
    a->scan = r->in.len - 16;
}

void xcm_smc_acker_attach(xcm_smc_acker *a, xcm_raw *r, uint32_t handled,
                          int acking) {
  memset(a, 0, sizeof *a);
  a->r = r;
  a->handled = handled;
  a->last_h = handled;
  a->acking = acking;
  a->scan = r->in.len;
  r->ud = a;
  r->on_data = acker_read;
}

int xcm_smc_login_acking(xcm_test_world *w, xcm_raw *r, xcm_smc_acker *a,
                         const char *user, const char *resource) {
  memset(a, 0, sizeof *a);
  if (!xcm_smc_login(w, r, user, resource))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, XCM_SMC_ENABLE);
  if (!xcm_raw_wait(r, XCM_SMC_ENABLED, 3000))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_smc_acker_attach(a, r, 0, 1);
  return 1;
}

int xcm_smc_login_resumable(xcm_test_world *w, xcm_raw *r, xcm_smc_acker *a,
                            const char *user, const char *resource, char *id,
                            size_t idcap) {
  static const char head[] = "<enabled xmlns=\"" XCM_SMC_NS "\" id=\"";
  const char *p, *e;

  memset(a, 0, sizeof *a);
  if (!xcm_smc_login(w, r, user, resource))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, "<enable xmlns='" XCM_SMC_NS "' resume='true'/>");
  if (!xcm_raw_wait(r, "resume=\"true\"", 3000))
    return 0;
  p = strstr(r->in.data, head);
  if (p == NULL)
    return 0;
  p += sizeof head - 1;
  e = strchr(p, '"');
  if (e == NULL || (size_t)(e - p) >= idcap)
    return 0;
  memcpy(id, p, (size_t)(e - p));
  id[e - p] = '\0';
  xcm__buf_reset(&r->in);
  xcm_smc_acker_attach(a, r, 0, 1);
  return 1;
}

int xcm_smc_handled_at_least(void *ud) {
  xcm_smc_handled_wait *h = ud;

  return h->a->handled >= h->want;
}

int xcm_smc_acks_arrived(void *ud) {
  xcm_smc_acks_wait *aw = ud;
  xcm_stats st;

  xcm_smc_stats(aw->w, &st);
  return st.sm_acks_received >= aw->want;
}

int xcm_smc_routed(void *ud) {
  xcm_smc_routed_wait *r = ud;
  xcm_testkit_stats ks;

  xcm_testkit_get_stats(r->w->kit, &ks, sizeof ks);
  return ks.routes_in >= r->want;
}

void xcm_smc_send_to(xcm_raw *from, const char *to, unsigned n, size_t pad) {
  char head[160];
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  snprintf(head, sizeof head,
           "<message to='%s' type='chat' id='m%05u'><body>n=%05u ", to, n, n);
  REQUIRE(xcm__buf_append_str(&b, head) == 0);
  REQUIRE(xcm__buf_reserve(&b, pad) == 0);
  memset(b.data + b.len, 'p', pad);
  b.len += pad;
  REQUIRE(xcm__buf_append_str(&b, "</body></message>") == 0);
  xcm_raw_send(from, b.data, b.len);
  xcm__buf_free(&b);
}

/* ---- the offline store ------------------------------------------------- */

int xcm_smc_stored_at_least(void *ud) {
  xcm_smc_stored_wait *s = ud;

  return xcm_testkit_offline_count(s->w->kit, s->user) >= s->want;
}

int xcm_smc_stored_exactly(xcm_test_world *w, const char *user, unsigned from,
                           unsigned to) {
  unsigned n = xcm_testkit_offline_count(w->kit, user), i, c;
  unsigned want = to + 1 >= from ? to + 1 - from : 0;
  unsigned char *seen = calloc(to + 2, 1);
  int ok = seen != NULL && n == want;

  for (i = 0; ok && i < n; i++) {
    size_t len;
    const char *m = xcm_testkit_offline_message(w->kit, user, i, &len);
    const char *b = m != NULL ? strstr(m, "<body>n=") : NULL;

    if (b == NULL || sscanf(b, "<body>n=%u", &c) != 1 || c < from || c > to ||
        seen[c]++)
      ok = 0;
  }
  if (!ok) {
    xcm_test_note("%s: %u stored, expected %u to %u", user, n, from, to);
    if (seen != NULL)
      memset(seen, 0, to + 2);
    for (i = 0; seen != NULL && i < n; i++) {
      size_t len;
      const char *m = xcm_testkit_offline_message(w->kit, user, i, &len);
      const char *b = m != NULL ? strstr(m, "<body>n=") : NULL;

      if (b != NULL && sscanf(b, "<body>n=%u", &c) == 1 && c <= to)
        seen[c]++;
    }
    for (c = from; seen != NULL && c <= to; c++)
      if (seen[c] != 1)
        xcm_test_note("  n=%u stored %u times", c, seen[c]);
  }
  free(seen);
  return ok;
}

unsigned xcm_smc_numbers(const char *s, unsigned max, unsigned *out,
                         unsigned cap) {
  const char *end, *b, *from = s;
  unsigned n = 0, k = 0, c;

  while ((max == 0 || k < max) && n < cap &&
         (end = strstr(from, "</message>")) != NULL) {
    /* The last body before this end tag is this message's. */
    const char *last = NULL;

    for (b = from; (b = strstr(b, "<body>n=")) != NULL && b < end; b++)
      last = b;
    if (last != NULL && sscanf(last, "<body>n=%u", &c) == 1)
      out[n++] = c;
    from = end + 10;
    k++;
  }
  return n;
}
