/* XEP-0352 client state indication at the CM (session/csi.h).
 *
 * The classifier and the queue alone: what waits and what goes at once,
 * a newer presence dropping the older from its place while the rest
 * keep their order, the bounds, the operator's rules and their errors.
 *
 * Then end to end, over loopback with scripted raw clients and the
 * in-process testkit upstream, checking the bytes on the wire: nothing
 * reaches an inactive client until something that matters comes, and
 * then everything that waited comes first, in order, the latest
 * presence per sender only; <active/> and an overflow flush; an iq
 * flushes; a client that ends gives back the messages that waited (the
 * testkit stores them offline); with XEP-0198 on, h counts what was
 * flushed when it was flushed, and never the CSI elements. Every wait is
 * for an event (bytes on the wire, a statistic), never for time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"
#include "rawclient.h"
#include "session/csi.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/error.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"
#include "xml/reader.h"

#define CSI_NS "urn:xmpp:csi:0"
#define INACTIVE "<inactive xmlns='" CSI_NS "'/>"
#define ACTIVE "<active xmlns='" CSI_NS "'/>"
#define SM_NS "urn:xmpp:sm:3"
#define CHATSTATES "http://jabber.org/protocol/chatstates"
#define BOB "bob@example.test/phone"

/* ---- the classifier ------------------------------------------------------ */

static const char *const which[2] = {"hold", "urgent"};

static xcm_csi_kind kind_of(xcm_xml_pool *pool, const xcm_csi_rules *rules,
                            const char *s, char *key, size_t *key_len,
                            int *message) {
  return xcm__csi_classify(pool, rules, s, strlen(s), key, 64, key_len,
                           message);
}

static void test_classify(void) {
  static const struct {
    const char *stanza;
    xcm_csi_kind kind;
    int message;
  } cases[] = {
      /* Presence: state, the latest per sender is enough. */
      {"<presence from='a@x/r'/>", XCM_CSI_SUPERSEDE, 0},
      {"<presence from='a@x/r' xmlns='jabber:client'><show>away</show>"
       "<status>out</status></presence>",
       XCM_CSI_SUPERSEDE, 0},
      {"<presence from='a@x/r' type='unavailable'/>", XCM_CSI_SUPERSEDE, 0},
      /* Without a from there is nothing to supersede by: it waits. */
      {"<presence/>", XCM_CSI_HOLD, 0},
      /* Someone waits for these. */
      {"<presence from='a@x' type='subscribe'/>", XCM_CSI_URGENT, 0},
      {"<presence from='a@x' type='subscribed'/>", XCM_CSI_URGENT, 0},
      {"<presence from='a@x' type='unsubscribe'/>", XCM_CSI_URGENT, 0},
      {"<presence from='a@x' type='error'/>", XCM_CSI_URGENT, 0},
      /* Chat states without a body wait; with one, it matters now. */
      {"<message from='a@x/r' type='chat'><composing xmlns='" CHATSTATES
       "'/></message>",
       XCM_CSI_HOLD, 1},
      {"<message from='a@x/r' type='chat'><active xmlns='" CHATSTATES
       "'/><thread>t</thread></message>",
       XCM_CSI_HOLD, 1},
      {"<message from='a@x/r' type='chat'><body>hi</body><active "
       "xmlns='" CHATSTATES "'/></message>",
       XCM_CSI_URGENT, 1},
      {"<message from='a@x/r'><body>hi</body></message>", XCM_CSI_URGENT, 1},
      /* An encrypted payload is a body the CM cannot see. */
      {"<message><active xmlns='" CHATSTATES
       "'/><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
       XCM_CSI_URGENT, 1},
      {"<message><encrypted xmlns='urn:xmpp:omemo:2'/></message>",
       XCM_CSI_URGENT, 1},
      {"<message><x xmlns='jabber:x:encrypted'>..</x></message>",
       XCM_CSI_URGENT, 1},
      {"<message><openpgp xmlns='urn:xmpp:openpgp:0'>..</openpgp></message>",
       XCM_CSI_URGENT, 1},
      /* A message of anything else is urgent unless a rule says. */
      {"<message><received xmlns='urn:xmpp:receipts' id='1'/></message>",
       XCM_CSI_URGENT, 1},
      {"<message type='error'><composing xmlns='" CHATSTATES "'/></message>",
       XCM_CSI_URGENT, 1},
      /* A body in another namespace is not a body. */
      {"<message><body xmlns='urn:other'/><gone xmlns='" CHATSTATES
       "'/></message>",
       XCM_CSI_HOLD, 1},
      /* iq: someone waits for the answer, and it cannot be given back. */
      {"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
       XCM_CSI_URGENT, 0},
      {"<iq type='result' id='1'/>", XCM_CSI_URGENT, 0},
      /* What cannot be read goes as it is, at once. */
      {"<message><composing xmlns='" CHATSTATES "'/>", XCM_CSI_URGENT, 0},
      {"<p:message xmlns:p='jabber:client'><p:body/></p:message>",
       XCM_CSI_URGENT, 1},
      {"<foo xmlns='urn:x'/>", XCM_CSI_URGENT, 0},
  };
  xcm_xml_pool *pool;
  xcm_csi_rules none;
  char key[64];
  size_t key_len, i;
  int message;

  REQUIRE(xcm__xml_pool_new(&pool, NULL, 1) == 0);
  REQUIRE(xcm__csi_rules_parse(&none, NULL, NULL, which, NULL, 0) == 0);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    xcm_csi_kind k =
        kind_of(pool, &none, cases[i].stanza, key, &key_len, &message);

    if (k != cases[i].kind || message != cases[i].message)
      xcm_test_note("case %zu: %s", i, cases[i].stanza);
    CHECK_INT(k, cases[i].kind);
    CHECK_INT(message, cases[i].message);
  }
  /* The key is the from, unescaped. */
  CHECK_INT(kind_of(pool, &none, "<presence from='a&amp;b@x/r'/>", key,
                    &key_len, &message),
            XCM_CSI_SUPERSEDE);
  CHECK_MEM(key, key_len, "a&b@x/r", 7);
  /* A from longer than the room for a key: it waits all the same. */
  CHECK_INT(
      kind_of(pool, &none,
              "<presence from='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x'/>",
              key, &key_len, &message),
      XCM_CSI_HOLD);
  /* Longer than XCM_CSI_MAX_READ: urgent unread, still a message. */
  {
    size_t n = XCM_CSI_MAX_READ + 100;
    char *big = malloc(n + 1);

    REQUIRE(big != NULL);
    memset(big, ' ', n);
    memcpy(big, "<message><composing xmlns='" CHATSTATES "'/>", 63);
    memcpy(big + n - 10, "</message>", 10);
    big[n] = '\0';
    CHECK_INT(kind_of(pool, &none, big, key, &key_len, &message),
              XCM_CSI_URGENT);
    CHECK_INT(message, 1);
    free(big);
  }
  xcm__xml_pool_free(pool);
}

static void test_rules(void) {
  xcm_xml_pool *pool;
  xcm_csi_rules r;
  char key[64], why[256];
  size_t key_len;
  int message;

  REQUIRE(xcm__xml_pool_new(&pool, NULL, 1) == 0);
  REQUIRE(xcm__csi_rules_parse(&r,
                               " urn:xmpp:receipts ,urn:xmpp:chat-markers:0",
                               "http://jabber.org/protocol/muc#user", which,
                               why, sizeof why) == 0);
  CHECK_INT(r.nhold, 2);
  CHECK_INT(r.nurgent, 1);
  CHECK_MEM(r.hold[0].ns, r.hold[0].len, "urn:xmpp:receipts", 17);
  /* A hold rule makes a receipt wait; an urgent one wins over it and
   * over a presence's waiting. */
  CHECK_INT(kind_of(pool, &r,
                    "<message><received xmlns='urn:xmpp:receipts'/></message>",
                    key, &key_len, &message),
            XCM_CSI_HOLD);
  CHECK_INT(kind_of(pool, &r,
                    "<message><received xmlns='urn:xmpp:receipts'/><x "
                    "xmlns='http://jabber.org/protocol/muc#user'/></message>",
                    key, &key_len, &message),
            XCM_CSI_URGENT);
  CHECK_INT(kind_of(pool, &r,
                    "<presence from='r@muc/n'><x "
                    "xmlns='http://jabber.org/protocol/muc#user'/></presence>",
                    key, &key_len, &message),
            XCM_CSI_URGENT);
  /* A body still wins over a hold rule. */
  CHECK_INT(kind_of(pool, &r,
                    "<message><body>b</body><markable "
                    "xmlns='urn:xmpp:chat-markers:0'/></message>",
                    key, &key_len, &message),
            XCM_CSI_URGENT);
  /* Empty lists are no rules. */
  CHECK(xcm__csi_rules_parse(&r, "", "  ", which, why, sizeof why) == 0);
  CHECK_INT(r.nhold + r.nurgent, 0);
  /* Errors name the list. */
  CHECK_INT(xcm__csi_rules_parse(&r, "urn:a,", NULL, which, why, sizeof why),
            XCM_EINVAL);
  CHECK_STR(why, "hold: an empty entry: namespaces separated by commas");
  CHECK_INT(xcm__csi_rules_parse(&r, NULL, "urn:a b", which, why, sizeof why),
            XCM_EINVAL);
  CHECK(strncmp(why, "urgent: white space", 19) == 0);
  CHECK_INT(xcm__csi_rules_parse(&r, "urn:a", "urn:a", which, why, sizeof why),
            XCM_EINVAL);
  CHECK_STR(why, "urgent: also in the other list (\"urn:a\")");
  CHECK_INT(
      xcm__csi_rules_parse(&r, "urn:a, urn:a", NULL, which, why, sizeof why),
      XCM_EINVAL);
  CHECK_STR(why, "hold: named twice (\"urn:a\")");
  CHECK_INT(xcm__csi_rules_parse(&r, CHATSTATES, NULL, which, why, sizeof why),
            XCM_EINVAL);
  CHECK_INT(xcm__csi_rules_parse(&r, "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", NULL,
                                 which, why, sizeof why),
            XCM_EINVAL);
  CHECK_STR(why, "hold: more than 16 namespaces");
  xcm__xml_pool_free(pool);
}

/* ---- the queue ----------------------------------------------------------- */

typedef struct seen {
  char all[512];
  size_t len;
  unsigned n, messages;
} seen;

static void collect(void *ud, const char *bytes, size_t len, int message) {
  seen *s = ud;

  if (s->len + len < sizeof s->all) {
    memcpy(s->all + s->len, bytes, len);
    s->len += len;
  }
  s->n++;
  s->messages += (unsigned)message;
}

static int push(xcm_csi *q, const char *s, const char *key, uint32_t max_count,
                size_t max_bytes, int *sup) {
  return xcm__csi_push(NULL, q, s, strlen(s), s[1] == 'm', key,
                       key ? strlen(key) : 0, max_count, max_bytes, sup);
}

static void test_queue(void) {
  xcm_csi *q = xcm__csi_new(NULL);
  const char *b;
  size_t len;
  int sup, urgent;
  seen s;

  REQUIRE(q != NULL);
  CHECK_INT(xcm__csi_footprint(q), sizeof(xcm_csi));
  CHECK_INT(push(q, "<p a1/>", "a", 10, 1000, &sup), 0);
  CHECK_INT(sup, 0);
  CHECK_INT(push(q, "<m 1/>", NULL, 10, 1000, &sup), 0);
  CHECK_INT(push(q, "<p c1/>", "c", 10, 1000, &sup), 0);
  /* a2 drops a1 from its place and joins at the end: the rest keep
   * their order. */
  CHECK_INT(push(q, "<p a2/>", "a", 10, 1000, &sup), 0);
  CHECK_INT(sup, 1);
  CHECK_INT(q->count, 3);
  CHECK_INT(q->bytes, 20);
  /* Bounds: by count, then by bytes; nothing changes. A superseding one
   * fits where a new one does not. */
  CHECK_INT(push(q, "<m 2/>", NULL, 3, 1000, &sup), XCM_ELIMIT);
  CHECK_INT(push(q, "<m 2/>", NULL, 10, 25, &sup), XCM_ELIMIT);
  CHECK_INT(push(q, "<p c2/>", "c", 3, 20, &sup), 0);
  CHECK_INT(sup, 1);
  CHECK_INT(push(q, "<p c3 long/>", "c", 3, 20, &sup), XCM_ELIMIT);
  CHECK_INT(q->count, 3);
  memset(&s, 0, sizeof s);
  CHECK_INT(xcm__csi_drain(NULL, q, collect, &s), 3);
  CHECK_MEM(s.all, s.len, "<m 1/><p a2/><p c2/>", 20);
  CHECK_INT(s.messages, 1);
  CHECK(q->q == NULL);
  CHECK_INT(xcm__csi_footprint(q), sizeof(xcm_csi));
  /* Pop: oldest first, superseded ones passed by. */
  CHECK_INT(push(q, "<p a1/>", "a", 10, 1000, &sup), 0);
  CHECK_INT(push(q, "<p b1/>", "b", 10, 1000, &sup), 0);
  CHECK_INT(push(q, "<p a2/>", "a", 10, 1000, &sup), 0);
  CHECK_INT(xcm__csi_pop(q, &b, &len, &urgent), 1);
  CHECK_MEM(b, len, "<p b1/>", 7);
  CHECK_INT(urgent, 0);
  CHECK_INT(xcm__csi_pop(q, &b, &len, &urgent), 1);
  CHECK_MEM(b, len, "<p a2/>", 7);
  CHECK_INT(xcm__csi_pop(q, &b, &len, &urgent), 0);
  CHECK_INT(q->count, 0);
  CHECK_INT(q->bytes, 0);
  xcm__csi_free(NULL, q);
}

/* Many presences from few senders: the dead entries are compacted away,
 * so the queue's buffer stays near what is live, and order holds. */
static void test_queue_churn(void) {
  xcm_csi *q = xcm__csi_new(NULL);
  char st[32], key[8];
  seen s;
  int sup, i;

  REQUIRE(q != NULL);
  for (i = 0; i < 10000; i++) {
    snprintf(key, sizeof key, "k%d", i % 3);
    snprintf(st, sizeof st, "<p %s n%05d/>", key, i);
    REQUIRE(push(q, st, key, 100, 65536, &sup) == 0);
  }
  CHECK_INT(q->count, 3);
  CHECK(q->cap <= 1024);
  memset(&s, 0, sizeof s);
  CHECK_INT(xcm__csi_drain(NULL, q, collect, &s), 3);
  CHECK_MEM(s.all, s.len, "<p k1 n09997/><p k2 n09998/><p k0 n09999/>", 42);
  xcm__csi_free(NULL, q);
}

/* ---- the protocol alone, with a client that ends mid-flush ------------- */

typedef struct fake {
  xcm_csi **p;
  xcm_counters *st;
  const xcm_csi_out *out;
  unsigned writes, end_at; /* the end_at-th write ends the client */
  seen written, back;
} fake;

static int fake_write(void *ud, const char *bytes, size_t len) {
  fake *f = ud;

  collect(&f->written, bytes, len, 0);
  if (++f->writes != f->end_at)
    return 0;
  /* As the client's notify() does, from inside its write path. */
  xcm__csi_end(f->p, NULL, f->st, f->out);
  return XCM_ECLOSED;
}

static void fake_give_back(void *ud, const char *bytes, size_t len) {
  fake *f = ud;

  collect(&f->back, bytes, len, 1);
}

static void test_end_inside_flush(void) {
  xcm_xml_pool *pool;
  xcm_csi *csi = NULL;
  xcm_csi_cfg cfg;
  xcm_counters st;
  fake f;
  xcm_csi_out out = {fake_write, fake_give_back, &f};
  static const char *const held[] = {
      "<presence from='a@x/r'/>",
      "<message><gone xmlns='" CHATSTATES "'/></message>",
      "<message><paused xmlns='" CHATSTATES "'/></message>",
  };
  static const char urgent[] = "<message><body>b</body></message>";
  size_t i;

  REQUIRE(xcm__xml_pool_new(&pool, NULL, 1) == 0);
  memset(&cfg, 0, sizeof cfg);
  cfg.enable = 1;
  cfg.max_held = 10;
  cfg.max_held_bytes = 4096;
  memset(&st, 0, sizeof st);
  memset(&f, 0, sizeof f);
  f.p = &csi;
  f.st = &st;
  f.out = &out;
  f.end_at = 2;
  REQUIRE(xcm__csi_inactive(&csi, NULL, &st) == 0);
  CHECK_INT(st.csi_now, 1);
  for (i = 0; i < 3; i++)
    CHECK_INT(xcm__csi_route(&csi, NULL, &cfg, &st, pool, held[i],
                             strlen(held[i]), 1, &out),
              1);
  CHECK_INT(st.csi_held, 3);
  CHECK_INT(f.writes, 0);
  /* The urgent one joins the end; the second write ends the client:
   * what was not written yet, it included, goes back; nothing twice. */
  CHECK_INT(xcm__csi_route(&csi, NULL, &cfg, &st, pool, urgent, strlen(urgent),
                           1, &out),
            1);
  CHECK_INT(f.writes, 2);
  CHECK_INT(f.back.n, 2);
  CHECK(strstr(f.back.all, "paused") != NULL);
  CHECK(strstr(f.back.all, "<body>b</body>") != NULL);
  CHECK(csi == NULL);
  CHECK_INT(st.csi_now, 0);
  CHECK_INT(st.csi_flushed, 2);
  CHECK_INT(st.csi_returned, 1); /* the urgent one was never held */
  CHECK_INT(st.csi_dropped, 0);
  /* White space passes what waits; other text flushes it first. */
  memset(&f, 0, sizeof f);
  f.p = &csi;
  f.st = &st;
  f.out = &out;
  REQUIRE(xcm__csi_inactive(&csi, NULL, &st) == 0);
  CHECK_INT(xcm__csi_route(&csi, NULL, &cfg, &st, pool, held[0],
                           strlen(held[0]), 1, &out),
            1);
  CHECK_INT(xcm__csi_route(&csi, NULL, &cfg, &st, pool, " \n", 2, 0, &out), 0);
  CHECK_INT(f.writes, 0);
  CHECK_INT(xcm__csi_route(&csi, NULL, &cfg, &st, pool, "<x/>", 4, 0, &out), 0);
  CHECK_INT(f.writes, 1);
  CHECK(csi != NULL && csi->q == NULL);
  /* Ending with a presence held: dropped, and counted so. */
  CHECK_INT(xcm__csi_route(&csi, NULL, &cfg, &st, pool, held[0],
                           strlen(held[0]), 1, &out),
            1);
  xcm__csi_end(&csi, NULL, &st, &out);
  CHECK(csi == NULL);
  CHECK_INT(st.csi_dropped, 1);
  CHECK_INT(f.back.n, 0);
  CHECK_INT(st.csi_now, 0);
  xcm__xml_pool_free(pool);
}

/* ---- the world ----------------------------------------------------------- */

typedef struct knobs {
  int csi, sm;
  unsigned max_held;
  size_t max_held_bytes;
} knobs;

static knobs K;

static void cm_log(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  xcm_test_note("log: %s", msg);
}

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  if (getenv("XCM_TEST_LOG") != NULL) {
    o->log = cm_log;
    o->log_level = XCM_LOG_DEBUG;
  }
  o->csi_enable = K.csi;
  if (K.max_held)
    o->csi_max_held = K.max_held;
  if (K.max_held_bytes)
    o->csi_max_held_bytes = K.max_held_bytes;
  o->sm_enable = K.sm;
  /* Requests for acks would add bytes the tests do not look for. */
  o->sm_ack_every = XCM_UNLIMITED;
  o->sm_ack_every_bytes = XCM_UNLIMITED;
  o->sm_ack_quiet_ms = XCM_UNLIMITED;
}

static const char *const accounts[] = {"alice", "bob", "carol", NULL};

static void start(xcm_test_world *w, const knobs *k) {
  xcm_test_world_setup s;

  memset(&s, 0, sizeof s);
  s.seed = 352;
  s.accounts = accounts;
  s.tune = tune;
  K = *k;
  xcm_test_world_start(w, &s);
}

static knobs csi_on(void) {
  knobs k;

  memset(&k, 0, sizeof k);
  k.csi = 1;
  return k;
}

static void stats(xcm_test_world *w, xcm_stats *st) {
  xcm_cm_stats(w->cm, st, sizeof *st);
}

/* SASL PLAIN for user, whose password is its name. */
static void auth_for(char *out, size_t cap, const char *user) {
  static const char b64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  unsigned char raw[128];
  size_t n = 0, i, o;
  char enc[176];

  raw[n++] = 0;
  memcpy(raw + n, user, strlen(user));
  n += strlen(user);
  raw[n++] = 0;
  memcpy(raw + n, user, strlen(user));
  n += strlen(user);
  for (i = 0, o = 0; i < n; i += 3) {
    unsigned v = (unsigned)raw[i] << 16;

    if (i + 1 < n)
      v |= (unsigned)raw[i + 1] << 8;
    if (i + 2 < n)
      v |= raw[i + 2];
    enc[o++] = b64[(v >> 18) & 63];
    enc[o++] = b64[(v >> 12) & 63];
    enc[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
    enc[o++] = i + 2 < n ? b64[v & 63] : '=';
  }
  enc[o] = '\0';
  snprintf(out, cap,
           "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
           "mechanism='PLAIN'>%s</auth>",
           enc);
}

static int login(xcm_test_world *w, xcm_raw *r, const char *user,
                 const char *resource) {
  char auth[320];

  auth_for(auth, sizeof auth, user);
  if (!xcm_raw_open(r, &w->loop, "127.0.0.1", w->port, 1))
    return 0;
  return xcm_raw_login(r, XCM_RAW_HDR, auth, resource);
}

typedef struct stat_wait {
  xcm_test_world *w;
  size_t off; /* of a uint64_t field of xcm_stats */
  uint64_t want;
} stat_wait;

static int stat_reached(void *ud) {
  stat_wait *s = ud;
  xcm_stats st;
  uint64_t v;

  stats(s->w, &st);
  memcpy(&v, (const char *)&st + s->off, sizeof v);
  return v == s->want;
}

/* Run the loop until a statistic says want: the CM has acted. */
#define WAIT_STAT(w, field, value)                                             \
  do {                                                                         \
    stat_wait sw_ = {(w), offsetof(xcm_stats, field), (value)};                \
    CHECK(xcm_test_run_until(&(w)->loop, stat_reached, &sw_, 5000));           \
  } while (0)

/* A presence for bob, told apart by its status. */
static void presence(xcm_raw *from, const char *status) {
  char b[160];

  snprintf(b, sizeof b, "<presence to='" BOB "'><status>%s</status></presence>",
           status);
  xcm_raw_sends(from, b);
}

static void chat_state(xcm_raw *from, const char *thread) {
  char b[200];

  snprintf(b, sizeof b,
           "<message to='" BOB "' type='chat'><composing xmlns='" CHATSTATES
           "'/><thread>%s</thread></message>",
           thread);
  xcm_raw_sends(from, b);
}

static void chat(xcm_raw *from, const char *body) {
  char b[200];

  snprintf(b, sizeof b,
           "<message to='" BOB "' type='chat'><body>%s</body></message>", body);
  xcm_raw_sends(from, b);
}

/* Whether the markers appear in r's input exactly once each, in this
 * order, and nothing else of the kind: every marker the test used is in
 * all, those in want must appear in order, the others not at all. */
static int wire_is(const xcm_raw *r, const char *const *all, size_t nall,
                   const char *const *want, size_t nwant) {
  const char *in = r->in.data != NULL ? r->in.data : "", *at = in, *p;
  size_t i, j;
  int ok = 1;

  for (i = 0; i < nwant; i++) {
    p = strstr(at, want[i]);
    if (p == NULL) {
      xcm_test_note("%s missing or out of order", want[i]);
      ok = 0;
      continue;
    }
    at = p + strlen(want[i]);
  }
  for (i = 0; i < nall; i++) {
    int wanted = 0;

    for (j = 0; j < nwant; j++)
      wanted |= strcmp(all[i], want[j]) == 0;
    p = strstr(in, all[i]);
    if (!wanted && p != NULL) {
      xcm_test_note("%s on the wire", all[i]);
      ok = 0;
    } else if (wanted && p != NULL && strstr(p + 1, all[i]) != NULL) {
      xcm_test_note("%s twice", all[i]);
      ok = 0;
    }
  }
  if (!ok)
    xcm_test_note("wire: %s", in);
  return ok;
}

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- end to end ---------------------------------------------------------- */

static void test_offered_only_when_enabled(void) {
  xcm_test_world w;
  xcm_raw r;
  knobs k;

  memset(&k, 0, sizeof k);
  start(&w, &k);
  REQUIRE(login(&w, &r, "bob", "phone"));
  CHECK(strstr(r.in.data, CSI_NS) == NULL);
  xcm__buf_reset(&r.in);
  /* Not offered: the element is refused like any unknown one. */
  xcm_raw_sends(&r, INACTIVE);
  CHECK(xcm_raw_wait(&r, "<unsupported-stanza-type", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
  xcm_raw_free(&r);
  xcm_test_world_stop(&w, 1000);

  k = csi_on();
  start(&w, &k);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  xcm_raw_sends(&r, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
  /* Not before authentication. */
  CHECK(strstr(r.in.data, CSI_NS) == NULL);
  xcm_raw_free(&r);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_sasl(&r, XCM_RAW_HDR, XCM_RAW_AUTH_BOB));
  CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
  CHECK(strstr(r.in.data, "<csi xmlns=\"" CSI_NS "\"/>") != NULL);
  /* Offered, but taken only once a resource is bound. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, INACTIVE);
  CHECK(xcm_raw_wait(&r, "<unsupported-stanza-type", 3000));
  CHECK(xcm_raw_wait(&r, "only after resource binding", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
  xcm_raw_free(&r);
  xcm_test_world_stop(&w, 1000);
}

/* The case: three presences from alice and one from carol, and a
 * chat state, wait; a message with a body brings them, the latest
 * presence per sender only, in their order, then itself. Then <active/>
 * flushes, and an iq does. */
static void test_hold_and_flush(void) {
  static const char *const all[] = {"a1",    "a2", "a3", "c1", "cs1",
                                    "body1", "a4", "a5", "q1"};
  static const char *const first[] = {"c1", "a3", "cs1", "body1"};
  static const char *const second[] = {"c1", "a3", "cs1", "body1", "a4"};
  static const char *const third[] = {"c1", "a3", "cs1", "body1",
                                      "a4", "a5", "q1"};
  xcm_test_world w;
  xcm_raw alice, carol, bob;
  xcm_stats st;
  knobs k = csi_on();

  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login(&w, &carol, "carol", "desk"));
  REQUIRE(login(&w, &bob, "bob", "phone"));
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  xcm__buf_reset(&bob.in);
  /* One at a time: the two senders' order is the test's. */
  presence(&alice, "a1");
  presence(&alice, "a2");
  WAIT_STAT(&w, csi_held, 2);
  presence(&carol, "c1");
  WAIT_STAT(&w, csi_held, 3);
  presence(&alice, "a3");
  chat_state(&alice, "cs1");
  WAIT_STAT(&w, csi_held, 5);
  stats(&w, &st);
  CHECK_INT(st.csi_superseded, 2);
  CHECK_INT(st.csi_flushed, 0);
  chat(&alice, "body1");
  CHECK(xcm_raw_wait(&bob, "body1", 3000));
  CHECK(wire_is(&bob, all, NELEMS(all), first, NELEMS(first)));
  stats(&w, &st);
  CHECK_INT(st.csi_flushed, 3);
  CHECK_INT(st.csi_inactive_now, 1);
  /* Still inactive: a4 waits, and <active/> brings it. */
  presence(&alice, "a4");
  WAIT_STAT(&w, csi_held, 6);
  xcm_raw_sends(&bob, ACTIVE);
  CHECK(xcm_raw_wait(&bob, "a4", 3000));
  WAIT_STAT(&w, csi_inactive_now, 0);
  CHECK(wire_is(&bob, all, NELEMS(all), second, NELEMS(second)));
  /* Inactive again: an iq to bob brings a5 first. */
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  presence(&alice, "a5");
  WAIT_STAT(&w, csi_held, 7);
  xcm_raw_sends(&alice, "<iq type='get' id='q1' to='" BOB
                        "'><query xmlns='jabber:iq:version'/></iq>");
  CHECK(xcm_raw_wait(&bob, "q1", 3000));
  CHECK(wire_is(&bob, all, NELEMS(all), third, NELEMS(third)));
  stats(&w, &st);
  CHECK_INT(st.csi_held, 7);
  CHECK_INT(st.csi_superseded, 2);
  CHECK_INT(st.csi_flushed, 5);
  CHECK_INT(st.csi_overflows, 0);
  /* An active client's stanzas go straight through. */
  xcm_raw_sends(&bob, ACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 0);
  presence(&alice, "a6");
  CHECK(xcm_raw_wait(&bob, "a6", 3000));
  stats(&w, &st);
  CHECK_INT(st.csi_held, 7);
  xcm_raw_free(&bob);
  xcm_raw_free(&carol);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* The bound: the fourth chat state finds three waiting, and all four go,
 * in order. */
static void test_overflow(void) {
  static const char *const all[] = {"t1", "t2", "t3", "t4", "t5"};
  static const char *const want[] = {"t1", "t2", "t3", "t4"};
  xcm_test_world w;
  xcm_raw alice, bob;
  xcm_stats st;
  knobs k = csi_on();

  k.max_held = 3;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login(&w, &bob, "bob", "phone"));
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  xcm__buf_reset(&bob.in);
  chat_state(&alice, "t1");
  chat_state(&alice, "t2");
  chat_state(&alice, "t3");
  WAIT_STAT(&w, csi_held, 3);
  CHECK_INT(bob.in.len, 0);
  chat_state(&alice, "t4");
  CHECK(xcm_raw_wait(&bob, "t4", 3000));
  CHECK(wire_is(&bob, all, NELEMS(all), want, NELEMS(want)));
  stats(&w, &st);
  CHECK_INT(st.csi_overflows, 1);
  CHECK_INT(st.csi_flushed, 3);
  CHECK_INT(st.csi_held, 3);
  /* Still inactive, with room again. */
  chat_state(&alice, "t5");
  WAIT_STAT(&w, csi_held, 4);
  CHECK(wire_is(&bob, all, NELEMS(all), want, NELEMS(want)));
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* The byte bound: a presence larger than what may wait goes at once,
 * after what waited. */
static void test_overflow_bytes(void) {
  static const char *const all[] = {"b1", "b2"};
  static const char *const want[] = {"b1", "b2"};
  char big[1400];
  xcm_test_world w;
  xcm_raw alice, bob;
  xcm_stats st;
  knobs k = csi_on();
  int n;

  k.max_held_bytes = 1024;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login(&w, &bob, "bob", "phone"));
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  xcm__buf_reset(&bob.in);
  chat_state(&alice, "b1");
  WAIT_STAT(&w, csi_held, 1);
  n = snprintf(big, sizeof big,
               "<presence to='" BOB "'><status>b2 %01100d</status></presence>",
               0);
  REQUIRE(n > 1024 && (size_t)n < sizeof big);
  xcm_raw_sends(&alice, big);
  CHECK(xcm_raw_wait(&bob, "b2 ", 3000));
  CHECK(xcm_raw_wait(&bob, "</presence>", 3000));
  CHECK(wire_is(&bob, all, NELEMS(all), want, NELEMS(want)));
  stats(&w, &st);
  CHECK_INT(st.csi_overflows, 1);
  CHECK_INT(st.csi_flushed, 1);
  CHECK_INT(st.csi_held, 1);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

typedef struct stored_wait {
  xcm_test_world *w;
  const char *user;
  unsigned want;
} stored_wait;

static int stored_at_least(void *ud) {
  stored_wait *s = ud;

  return xcm_testkit_offline_count(s->w->kit, s->user) >= s->want;
}

/* A client that ends while stanzas wait: the messages go back to the
 * server (the testkit stores them offline, in order), the presences are
 * dropped. Bob gets the messages at his next login. */
static void test_end_returns_messages(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  xcm_stats st;
  knobs k = csi_on();
  stored_wait sw;
  size_t len;
  const char *m;

  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login(&w, &bob, "bob", "phone"));
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  chat_state(&alice, "e1");
  presence(&alice, "e2");
  chat_state(&alice, "e3");
  WAIT_STAT(&w, csi_held, 3);
  /* Cut: no </stream:stream>. */
  xcm_raw_reset(&bob);
  sw.w = &w;
  sw.user = "bob";
  sw.want = 2;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 3000));
  WAIT_STAT(&w, csi_inactive_now, 0);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 2);
  m = xcm_testkit_offline_message(w.kit, "bob", 0, &len);
  CHECK(m != NULL && strstr(m, "e1") != NULL);
  m = xcm_testkit_offline_message(w.kit, "bob", 1, &len);
  CHECK(m != NULL && strstr(m, "e3") != NULL);
  stats(&w, &st);
  CHECK_INT(st.csi_returned, 2);
  CHECK_INT(st.csi_dropped, 1);
  CHECK_INT(st.csi_flushed, 0);
  CHECK_INT(st.failed_returned, 2);
  xcm_raw_free(&bob);
  /* An orderly close gives back the same way. */
  REQUIRE(login(&w, &bob, "bob", "phone"));
  CHECK(xcm_raw_wait(&bob, "e3", 3000));
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  chat_state(&alice, "e4");
  WAIT_STAT(&w, csi_held, 4);
  xcm_raw_sends(&bob, "</stream:stream>");
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  sw.want = 1;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 3000));
  m = xcm_testkit_offline_message(w.kit, "bob", 0, &len);
  CHECK(m != NULL && strstr(m, "e4") != NULL);
  stats(&w, &st);
  CHECK_INT(st.csi_returned, 3);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* Bob logs in (after the offline message marked `offline`, when there
 * is one: it comes before acknowledgements count) and enables them. */
static int login_sm(xcm_test_world *w, xcm_raw *r, const char *offline) {
  if (!login(w, r, "bob", "phone"))
    return 0;
  if (offline != NULL && !xcm_raw_wait(r, offline, 3000))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, "<enable xmlns='" SM_NS "'/>");
  return xcm_raw_wait(r, "<enabled xmlns=\"" SM_NS "\"/>", 3000);
}

/* With XEP-0198 on: the CSI elements are not stanzas (h stays 0), a
 * stanza that waits is not sent (an ack for it is one too many), and
 * what is flushed is counted as it is written. */
static void test_with_acks(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  xcm_stats st;
  knobs k = csi_on();
  stored_wait sw;

  k.sm = 1;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_sm(&w, &bob, NULL));
  xcm_raw_sends(&bob, INACTIVE ACTIVE INACTIVE "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"0\"/>", 3000));
  WAIT_STAT(&w, csi_inactive_now, 1);
  presence(&alice, "s1");
  chat_state(&alice, "s2");
  WAIT_STAT(&w, csi_held, 2);
  /* Nothing was sent: h='1' acknowledges one stanza too many. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='1'/>");
  CHECK(xcm_raw_wait(&bob, "h=\"1\" send-count=\"0\"", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  /* The chat state went back (<failed/>), once: not through the unacked
   * queue as well. */
  sw.w = &w;
  sw.user = "bob";
  sw.want = 1;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 3000));
  WAIT_STAT(&w, sm_sessions_now, 0);
  stats(&w, &st);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(st.csi_returned, 1);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 1);
  xcm_raw_free(&bob);
  /* Again, and a message flushes: three stanzas sent, counted then (the
   * offline chat state comes with the login's presence, before). */
  REQUIRE(login_sm(&w, &bob, "s2"));
  xcm_raw_sends(&bob, INACTIVE);
  WAIT_STAT(&w, csi_inactive_now, 1);
  presence(&alice, "s3");
  chat_state(&alice, "s4");
  WAIT_STAT(&w, csi_held, 4);
  xcm__buf_reset(&bob.in);
  chat(&alice, "s5");
  CHECK(xcm_raw_wait(&bob, "s5", 3000));
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='4'/>");
  CHECK(xcm_raw_wait(&bob, "h=\"4\" send-count=\"3\"", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  /* What was flushed and not acknowledged goes back through the unacked
   * queue: the two messages. */
  WAIT_STAT(&w, sm_sessions_now, 0);
  stats(&w, &st);
  CHECK_INT(st.csi_flushed, 2);
  CHECK_INT(st.csi_returned, 1);
  CHECK_INT(st.sm_returned, 2);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

static const xcm_test tests[] = {
    {"classify", test_classify},
    {"rules", test_rules},
    {"queue", test_queue},
    {"queue_churn", test_queue_churn},
    {"end_inside_flush", test_end_inside_flush},
    {"offered_only_when_enabled", test_offered_only_when_enabled},
    {"hold_and_flush", test_hold_and_flush},
    {"overflow", test_overflow},
    {"overflow_bytes", test_overflow_bytes},
    {"end_returns_messages", test_end_returns_messages},
    {"with_acks", test_with_acks},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
