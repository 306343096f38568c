/* The testkit object: lifecycle, listener, heartbeats, accounts and
 * rosters, local clients, fault controls and observation. */
#include <stdio.h>
#include <string.h>

#include "proto/cmproto.h"
#include "proto/stream.h"
#include "testkit/testkit.h"
#include "util/alloc.h"
#include "util/sized.h"
#include "xcm/error.h"
#include "xml/writer.h"

#define DEFAULT_MAX_OUT (4u << 20)

/* The least size of an initialised xcm_testkit_options: the size field
 * and the first after it. */
#define MIN_OPTIONS_SIZE                                                       \
  (offsetof(xcm_testkit_options, domain) + sizeof(const char *))

static void set_defaults(xcm_testkit_options *opt) {
  static const char *const mechs[] = {"PLAIN", "ANONYMOUS", "SCRAM-SHA-1",
                                      "DIGEST-MD5"};
  unsigned i;

  memset(opt, 0, sizeof(*opt));
  opt->size = sizeof(*opt);
  opt->domain = "example.test";
  opt->secret = "cmsecret";
  opt->host = "127.0.0.1";
  opt->client_policy.tls = XCM_TLS_OPTIONAL;
  for (i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++)
    snprintf(opt->client_policy.mechanisms[i],
             sizeof(opt->client_policy.mechanisms[i]), "%s", mechs[i]);
  opt->client_policy.nmechanisms = i;
  opt->client_policy.compression_zlib = 1;
  opt->client_policy.registration = 1;
  opt->heartbeat_ms = 30000;
  opt->iq_any_connection = 1;
  opt->offline_max = 1000;
  opt->max_sessions = 100000;
  opt->max_out = DEFAULT_MAX_OUT;
  opt->log_level = XCM_LOG_INFO;
  opt->witness = 1;
}

int xcm_testkit_options_init(xcm_testkit_options *opt, size_t size) {
  xcm_testkit_options d;

  set_defaults(&d);
  return xcm__sized_init(opt, size, &d, sizeof d, MIN_OPTIONS_SIZE);
}

/* ---- re-entrancy --------------------------------------------------- */

static void do_close(xcm_testkit *kit);

void xcm__tk_enter(xcm_testkit *kit) {
  kit->busy++;
}

/* Drops asked for while something was on the stack happen here, once
 * nothing is: a drop ends sessions, and a session must not vanish under
 * the code routing its stanza. */
void xcm__tk_leave(xcm_testkit *kit) {
  xcm_tk_conn *c;
  int again = 1;

  if (kit->busy > 1) {
    kit->busy--;
    return;
  }
  while (again) {
    again = 0;
    for (c = kit->conns; c != NULL; c = c->next) {
      if (c->drop_pending != 0 && c->state != XCM_TK_DEAD) {
        xcm__tk_conn_do_drop(c);
        again = 1; /* the list may have changed under us */
        break;
      }
    }
  }
  kit->busy--;
  if (kit->close_pending && !kit->closing) {
    kit->close_pending = 0;
    do_close(kit);
  }
}

/* ---- randomness and ids -------------------------------------------- */

/* xorshift64*: reproducible from opt.seed, which is all a test needs of
 * stream ids and of the "random" connection Openfire picks. */
uint64_t xcm__tk_rand(xcm_testkit *kit) {
  uint64_t x = kit->rng;

  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  kit->rng = x;
  return x * 2685821657736338717u;
}

void xcm__tk_random_id(xcm_testkit *kit, char *out, size_t n) {
  static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  size_t i;

  for (i = 0; i < n; i++)
    out[i] = digits[xcm__tk_rand(kit) % 36];
  out[n] = '\0';
}

/* Openfire's packet ids: a random three-digit prefix and a counter that
 * runs across the whole server ("922-123", then "150-134"). */
void xcm__tk_iq_id(xcm_testkit *kit, char *out, size_t cap) {
  snprintf(out, cap, "%u-%u", 100 + (unsigned)(xcm__tk_rand(kit) % 900),
           kit->iq_counter++);
}

void xcm__tk_event(xcm_testkit *kit, xcm_testkit_event_type type,
                   const char *conn, const xcm_tk_session *s) {
  xcm_testkit_event ev;

  if (kit->opt.on_event == NULL || kit->closing)
    return;
  memset(&ev, 0, sizeof(ev));
  ev.type = type;
  ev.conn = conn;
  if (s != NULL) {
    ev.cm = s->group != NULL ? s->group->name : NULL;
    ev.sid = s->sid;
    ev.jid = s->full;
  }
  kit->opt.on_event(kit->opt.event_ud, kit, &ev);
}

/* ---- accounts ------------------------------------------------------ */

xcm_tk_user *xcm__tk_user(const xcm_testkit *kit, const char *name,
                          size_t len) {
  xcm_map_entry *e = xcm__map_get(&kit->users, name, len);

  return e != NULL ? (xcm_tk_user *)e : NULL;
}

int xcm__tk_user_add(xcm_testkit *kit, const char *name, const char *password,
                     int anonymous, xcm_tk_user **out) {
  const xcm_allocator *a = kit->ctx.alloc;
  xcm_tk_user *u = xcm__calloc(a, sizeof(*u));
  int err;

  if (u == NULL)
    return XCM_ENOMEM;
  u->name = xcm__strndup(a, name, strlen(name));
  u->password =
      password != NULL ? xcm__strndup(a, password, strlen(password)) : NULL;
  u->anonymous = anonymous;
  err = u->name == NULL || (password != NULL && u->password == NULL)
            ? XCM_ENOMEM
            : xcm__random(u->salt, sizeof(u->salt));
  if (err == 0) {
    u->entry.key = u->name;
    err = xcm__map_put(&kit->users, &u->entry);
  }
  if (err != 0) {
    xcm__free(a, u->name);
    xcm__free(a, u->password);
    xcm__free(a, u);
    return err;
  }
  *out = u;
  return 0;
}

static void user_free(xcm_testkit *kit, xcm_tk_user *u) {
  const xcm_allocator *a = kit->ctx.alloc;
  xcm_tk_item *it, *inext;
  xcm_tk_offline *m, *mnext;

  for (it = u->roster; it != NULL; it = inext) {
    inext = it->next;
    xcm__free(a, it->jid);
    xcm__free(a, it->name);
    xcm__free(a, it);
  }
  for (m = u->offline; m != NULL; m = mnext) {
    mnext = m->next;
    xcm__free(a, m);
  }
  xcm__free(a, u->name);
  xcm__free(a, u->password);
  xcm__free(a, u);
}

/* Anonymous users live as long as their session. */
void xcm__tk_user_unref(xcm_testkit *kit, xcm_tk_user *u) {
  if (--u->refs == 0 && u->anonymous) {
    xcm__map_remove(&kit->users, &u->entry);
    user_free(kit, u);
  }
}

/* A name the server would take as a JID's local part. */
static int valid_node(const char *s) {
  size_t n = strlen(s);

  return n > 0 && n < 1024 && strpbrk(s, "\"&'/:<>@ \t\r\n") == NULL &&
         xcm__xml_chars_valid(s, n);
}

int xcm_testkit_add_account(xcm_testkit *kit, const char *user,
                            const char *password) {
  xcm_tk_user *u;
  char *p;

  if (user == NULL || password == NULL || !valid_node(user) ||
      !xcm__xml_chars_valid(password, strlen(password)))
    return XCM_EINVAL;
  u = xcm__tk_user(kit, user, strlen(user));
  if (u == NULL)
    return xcm__tk_user_add(kit, user, password, 0, &u);
  if (u->anonymous)
    return XCM_EBUSY;
  p = xcm__strndup(kit->ctx.alloc, password, strlen(password));
  if (p == NULL)
    return XCM_ENOMEM;
  xcm__free(kit->ctx.alloc, u->password);
  u->password = p;
  return 0;
}

int xcm_testkit_add_roster_item(xcm_testkit *kit, const char *owner,
                                const char *contact, const char *name,
                                const char *subscription) {
  const xcm_allocator *a = kit->ctx.alloc;
  xcm_tk_user *u;
  xcm_tk_item *it, **tail;
  char *n = NULL;

  if (owner == NULL || contact == NULL || subscription == NULL ||
      strchr(contact, '/') != NULL ||
      !xcm__xml_chars_valid(contact, strlen(contact)) ||
      (name != NULL && !xcm__xml_chars_valid(name, strlen(name))))
    return XCM_EINVAL;
  if (strcmp(subscription, "none") != 0 && strcmp(subscription, "to") != 0 &&
      strcmp(subscription, "from") != 0 && strcmp(subscription, "both") != 0)
    return XCM_EINVAL;
  u = xcm__tk_user(kit, owner, strlen(owner));
  if (u == NULL || u->anonymous)
    return XCM_ENOTFOUND;
  if (name != NULL && (n = xcm__strndup(a, name, strlen(name))) == NULL)
    return XCM_ENOMEM;
  for (tail = &u->roster; *tail != NULL; tail = &(*tail)->next) {
    it = *tail;
    if (strcmp(it->jid, contact) == 0) {
      xcm__free(a, it->name);
      it->name = n;
      snprintf(it->sub, sizeof(it->sub), "%s", subscription);
      return 0;
    }
  }
  it = xcm__calloc(a, sizeof(*it));
  if (it == NULL ||
      (it->jid = xcm__strndup(a, contact, strlen(contact))) == NULL) {
    xcm__free(a, it);
    xcm__free(a, n);
    return XCM_ENOMEM;
  }
  it->name = n;
  snprintf(it->sub, sizeof(it->sub), "%s", subscription);
  *tail = it;
  return 0;
}

/* ---- the configuration iq ------------------------------------------ */

/* The captures' shape: no to/from on the iq, features in this order,
 * empty elements written "/>" (dom4j). */
int xcm__tk_build_config(xcm_testkit *kit, xcm_buf *b) {
  const xcm_policy *p = &kit->opt.client_policy;
  char id[32];
  size_t mark = b->len;
  unsigned i;
  int err;

  xcm__tk_iq_id(kit, id, sizeof(id));
  err = xcm__buf_append_str(b, "<iq type=\"set\"");
  if (err == 0)
    err = xcm__xml_attr(b, "id", id);
  if (err == 0)
    err = xcm__buf_append_str(b, "><configuration xmlns=\"" XCM_NS_CM_PROTOCOL
                                 "\">");
  if (err == 0 && p->tls == XCM_TLS_OPTIONAL)
    err = xcm__buf_append_str(b, "<starttls xmlns=\"" XCM_NS_TLS "\"/>");
  if (err == 0 && p->tls == XCM_TLS_REQUIRED)
    err = xcm__buf_append_str(b, "<starttls xmlns=\"" XCM_NS_TLS
                                 "\"><required/></starttls>");
  if (err == 0 && p->nmechanisms > 0)
    err = xcm__buf_append_str(b, "<mechanisms xmlns=\"" XCM_NS_SASL "\">");
  for (i = 0; err == 0 && i < p->nmechanisms; i++) {
    err = xcm__buf_append_str(b, "<mechanism>");
    if (err == 0)
      err = xcm__xml_escape_text(b, p->mechanisms[i], strlen(p->mechanisms[i]));
    if (err == 0)
      err = xcm__buf_append_str(b, "</mechanism>");
  }
  if (err == 0 && p->nmechanisms > 0)
    err = xcm__buf_append_str(b, "</mechanisms>");
  if (err == 0 && p->compression_zlib)
    err = xcm__buf_append_str(b, "<compression xmlns=\"" XCM_NS_COMPRESS_FEATURE
                                 "\"><method>zlib</method></compression>");
  if (err == 0 && p->legacy_auth)
    err =
        xcm__buf_append_str(b, "<auth xmlns=\"" XCM_NS_IQ_AUTH_FEATURE "\"/>");
  if (err == 0 && p->registration)
    err = xcm__buf_append_str(b, "<register xmlns=\"" XCM_NS_IQ_REGISTER_FEATURE
                                 "\"/>");
  if (err == 0)
    err = xcm__buf_append_str(b, "</configuration></iq>");
  if (err != 0) {
    b->len = mark;
    return err;
  }
  /* Kept NUL-terminated for xcm_testkit_last_configuration(). */
  xcm__buf_reset(&kit->config);
  err = xcm__buf_reserve(&kit->config, b->len - mark + 1);
  if (err == 0) {
    memcpy(kit->config.data, b->data + mark, b->len - mark);
    kit->config.len = b->len - mark;
    kit->config.data[kit->config.len] = '\0';
  }
  return err;
}

static int policy_valid(const xcm_policy *p) {
  unsigned i;

  if (p->nmechanisms > XCM_POLICY_MAX_MECHANISMS || p->tls > XCM_TLS_REQUIRED)
    return 0;
  for (i = 0; i < p->nmechanisms; i++)
    if (memchr(p->mechanisms[i], '\0', sizeof(p->mechanisms[i])) == NULL)
      return 0;
  return 1;
}

int xcm_testkit_set_policy(xcm_testkit *kit, const xcm_policy *p) {
  xcm_tk_conn *c;
  xcm_buf b;
  int err = 0;

  if (p == NULL || !policy_valid(p))
    return XCM_EINVAL;
  kit->opt.client_policy = *p;
  xcm__buf_init(&b, kit->ctx.alloc);
  xcm__tk_enter(kit);
  for (c = kit->conns; c != NULL && err == 0; c = c->next) {
    if (c->state != XCM_TK_UP || c->drop_pending)
      continue;
    xcm__buf_reset(&b);
    err = xcm__tk_build_config(kit, &b);
    if (err == 0)
      xcm__tk_conn_write(c, b.data, b.len);
  }
  xcm__tk_leave(kit);
  xcm__buf_free(&b);
  return err;
}

/* ---- listener and heartbeats --------------------------------------- */

static void on_tcp_closed(uv_handle_t *h) {
  xcm_testkit *kit = h->data;

  xcm__free(kit->ctx.alloc, h);
}

static void on_connection(uv_stream_t *server, int status) {
  xcm_testkit *kit = server->data;
  uv_tcp_t *tcp;

  if (status != 0 || kit->closing)
    return;
  tcp = xcm__alloc(kit->ctx.alloc, sizeof(*tcp));
  if (tcp == NULL)
    return; /* the connection waits in the backlog */
  uv_tcp_init(kit->ctx.loop, tcp);
  tcp->data = kit;
  if (uv_accept(server, (uv_stream_t *)tcp) != 0) {
    uv_close((uv_handle_t *)tcp, on_tcp_closed);
    return;
  }
  uv_tcp_nodelay(tcp, 1);
  xcm__tk_enter(kit);
  if (xcm__tk_conn_accept(kit, tcp) != 0)
    uv_close((uv_handle_t *)tcp, on_tcp_closed);
  xcm__tk_leave(kit);
}

/* One timer for every connection, as Openfire's: the first space comes
 * any time within the interval of a connection's handshake. */
static void on_heartbeat(uv_timer_t *t) {
  xcm_testkit *kit = t->data;
  xcm_tk_conn *c;

  if (kit->stalled)
    return;
  xcm__tk_enter(kit);
  for (c = kit->conns; c != NULL; c = c->next) {
    if (c->state == XCM_TK_UP && c->registered && !c->drop_pending &&
        xcm__tk_conn_write(c, " ", 1) == 0)
      kit->stats.heartbeats++;
  }
  xcm__tk_leave(kit);
}

static int listen_on(xcm_testkit *kit, char *errbuf, size_t errlen) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  int err;

  if (strchr(kit->host, ':') != NULL)
    err = uv_ip6_addr(kit->host, kit->opt.port, (struct sockaddr_in6 *)&ss);
  else
    err = uv_ip4_addr(kit->host, kit->opt.port, (struct sockaddr_in *)&ss);
  if (err == 0)
    err = uv_tcp_bind(&kit->listener, (const struct sockaddr *)&ss, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&kit->listener, 128, on_connection);
  if (err == 0)
    err = uv_tcp_getsockname(&kit->listener, (struct sockaddr *)&ss, &len);
  if (err != 0) {
    if (errbuf != NULL)
      snprintf(errbuf, errlen, "testkit: cannot listen on %s:%d: %s", kit->host,
               kit->opt.port, uv_strerror(err));
    return err;
  }
  if (ss.ss_family == AF_INET6)
    kit->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  else
    kit->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return 0;
}

/* ---- lifecycle ----------------------------------------------------- */

/* Every field holds its value (set_defaults has the defaults): NULL
 * strings and zero counts are refused, not taken for the default. */
static int options_valid(const xcm_testkit_options *opt) {
  return policy_valid(&opt->client_policy) && opt->domain != NULL &&
         valid_node(opt->domain) && opt->secret != NULL &&
         xcm__xml_chars_valid(opt->secret, strlen(opt->secret)) &&
         opt->host != NULL && opt->offline_max > 0 && opt->max_sessions > 0 &&
         opt->max_out > 0 && opt->log_level >= XCM_LOG_ERROR &&
         opt->log_level <= XCM_LOG_DEBUG &&
         (unsigned)opt->link_tls <= XCM_TESTKIT_LINK_TLS_REQUIRE &&
         (unsigned)opt->conflict <= XCM_TESTKIT_CONFLICT_TAKEOVER &&
         opt->port >= 0 && opt->port < 65536 &&
         /* An allocator table must say its size (doc/abi.md). */
         (opt->alloc == NULL ||
          opt->alloc->size >=
              offsetof(xcm_allocator, ud) + sizeof opt->alloc->ud);
}

static char *dup_opt(const xcm_allocator *a, const char *s, int *err) {
  char *d;

  if (s == NULL)
    return NULL;
  d = xcm__strndup(a, s, strlen(s));
  if (d == NULL)
    *err = XCM_ENOMEM;
  return d;
}

static int copy_options(xcm_testkit *kit, const xcm_testkit_options *opt) {
  const xcm_allocator *a = opt->alloc;
  int err = 0;

  kit->opt = *opt;
  kit->domain = dup_opt(a, opt->domain, &err);
  kit->secret = dup_opt(a, opt->secret, &err);
  kit->host = dup_opt(a, opt->host, &err);
  kit->cert_file = dup_opt(a, opt->cert_file, &err);
  kit->key_file = dup_opt(a, opt->key_file, &err);
  kit->opt.domain = kit->domain;
  kit->opt.secret = kit->secret;
  kit->opt.host = kit->host;
  kit->opt.cert_file = kit->cert_file;
  kit->opt.key_file = kit->key_file;
  return err;
}

static void free_strings(xcm_testkit *kit, const xcm_allocator *a) {
  xcm__free(a, kit->domain);
  xcm__free(a, kit->secret);
  xcm__free(a, kit->host);
  xcm__free(a, kit->cert_file);
  xcm__free(a, kit->key_file);
}

int xcm__tk_link_tls_offered(const xcm_testkit *kit) {
  switch (kit->opt.link_tls) {
  case XCM_TESTKIT_LINK_TLS_AUTO:
    return kit->cert_file != NULL;
  case XCM_TESTKIT_LINK_TLS_OFF:
    return 0;
  default:
    return 1;
  }
}

static int load_tls(xcm_testkit *kit, char *errbuf, size_t errlen) {
  xcm_tls_options to;

  if (kit->cert_file == NULL || !xcm__tk_link_tls_offered(kit))
    return 0;
  memset(&to, 0, sizeof(to));
  to.cert_file = kit->cert_file;
  to.key_file = kit->key_file;
  return xcm__tls_config_new(&kit->tls, &kit->ctx, 1, &to, errbuf, errlen);
}

static void ctx_closed(xcm_ctx *ctx) {
  xcm_testkit *kit = (xcm_testkit *)ctx;

  if (kit->self_free)
    xcm_testkit_free(kit);
  else if (kit->close_cb != NULL)
    kit->close_cb(kit->close_ud, kit);
}

static void free_group(xcm_map_entry *e, void *ud) {
  xcm_testkit *kit = ud;
  xcm_tk_group *g = (xcm_tk_group *)e;

  xcm__map_remove(&kit->groups, e);
  xcm__map_free(&g->sessions);
  xcm__free(kit->ctx.alloc, g->name);
  xcm__free(kit->ctx.alloc, g);
}

static void free_user(xcm_map_entry *e, void *ud) {
  xcm_testkit *kit = ud;

  xcm__map_remove(&kit->users, e);
  user_free(kit, (xcm_tk_user *)e);
}

/* Every handle and stream is closed: give back the rest, then the
 * context (whose own handle closes asynchronously too). */
static void maybe_finish(xcm_testkit *kit) {
  if (!kit->closing || kit->finishing || kit->handles_open > 0 ||
      kit->streams_open > 0)
    return;
  kit->finishing = 1;
  xcm__map_each(&kit->groups, free_group, kit);
  xcm__map_each(&kit->users, free_user, kit);
  xcm__map_free(&kit->groups);
  xcm__map_free(&kit->users);
  xcm__map_free(&kit->jids);
  xcm__tk_witness_forget(kit);
  xcm__buf_free(&kit->config);
  if (kit->tls != NULL) {
    xcm__tls_config_unref(kit->tls);
    kit->tls = NULL;
  }
  xcm__ctx_close(&kit->ctx, ctx_closed);
}

void xcm__tk_stream_closed(xcm_testkit *kit) {
  kit->streams_open--;
  maybe_finish(kit);
}

static void handle_closed(uv_handle_t *h) {
  xcm_testkit *kit = h->data;

  kit->handles_open--;
  maybe_finish(kit);
}

static void do_close(xcm_testkit *kit) {
  xcm_tk_conn *c;

  kit->closing = 1;
  kit->busy++;
  /* Sessions go first and quietly: nobody is left to tell. */
  while (kit->sessions != NULL)
    xcm__tk_session_unlink(kit->sessions);
  for (c = kit->conns; c != NULL; c = c->next) {
    if (c->state != XCM_TK_DEAD) {
      c->drop_pending = XCM_TK_ABORT;
      xcm__tk_conn_do_drop(c);
    }
  }
  kit->busy--;
  if (kit->listening) {
    kit->listening = 0;
    uv_close((uv_handle_t *)&kit->listener, handle_closed);
    uv_close((uv_handle_t *)&kit->heartbeat, handle_closed);
  }
  maybe_finish(kit);
}

int xcm_testkit_new(xcm_testkit **out, uv_loop_t *loop,
                    const xcm_testkit_options *in, char *errbuf,
                    size_t errlen) {
  xcm_testkit_options o, *opt = &o;
  const xcm_allocator *a;
  xcm_testkit *kit;
  int err;

  if (out == NULL || loop == NULL)
    return XCM_EINVAL;
  set_defaults(&o);
  if (in != NULL) {
    err = xcm__sized_read(
        &o, sizeof o, in, MIN_OPTIONS_SIZE, "xcm_testkit_options",
        "xcm_testkit_options_init(&opt, sizeof opt)", errbuf, errlen);
    if (err != 0)
      return err;
  }
  if (!options_valid(opt)) {
    if (errbuf != NULL)
      snprintf(errbuf, errlen, "testkit: invalid options");
    return XCM_EINVAL;
  }
  a = opt->alloc;
  kit = xcm__calloc(a, sizeof(*kit));
  if (kit == NULL)
    return XCM_ENOMEM;
  err = copy_options(kit, opt);
  if (err == 0)
    err = xcm__ctx_init(&kit->ctx, loop, a);
  if (err != 0) {
    free_strings(kit, a);
    xcm__free(a, kit);
    return err;
  }
  kit->ctx.log = opt->log;
  kit->ctx.log_ud = opt->log_ud;
  kit->ctx.log_level = opt->log_level;
  xcm__map_init(&kit->groups, a);
  xcm__map_init(&kit->users, a);
  xcm__map_init(&kit->jids, a);
  xcm__map_init(&kit->witness_sids, a);
  xcm__buf_init(&kit->config, a);
  kit->table_bits = 4; /* Java's default map capacity, 16 */
  kit->rng = opt->seed;
  if (kit->rng == 0 && xcm__random(&kit->rng, sizeof(kit->rng)) != 0)
    kit->rng = (uint64_t)(uintptr_t)kit ^ uv_hrtime();
  kit->rng |= 1; /* xorshift must not start at 0 */
  kit->iq_counter = 100 + (unsigned)(xcm__tk_rand(kit) % 100);
  uv_tcp_init(loop, &kit->listener);
  uv_timer_init(loop, &kit->heartbeat);
  kit->listener.data = kit->heartbeat.data = kit;
  kit->handles_open = 2;
  kit->listening = 1;
  err = load_tls(kit, errbuf, errlen);
  if (err == 0)
    err = listen_on(kit, errbuf, errlen);
  if (err != 0) {
    /* Handles are open and close asynchronously; the caller never sees
     * kit, so the last close callback frees it. */
    kit->self_free = 1;
    do_close(kit);
    return err;
  }
  if (kit->opt.heartbeat_ms > 0)
    uv_timer_start(&kit->heartbeat, on_heartbeat, kit->opt.heartbeat_ms,
                   kit->opt.heartbeat_ms);
  *out = kit;
  return 0;
}

int xcm_testkit_close(xcm_testkit *kit, xcm_testkit_close_fn cb, void *ud) {
  if (kit->closing || kit->close_pending)
    return XCM_ECLOSED;
  kit->close_cb = cb;
  kit->close_ud = ud;
  if (kit->busy > 0)
    kit->close_pending = 1;
  else
    do_close(kit);
  return 0;
}

void xcm_testkit_free(xcm_testkit *kit) {
  const xcm_allocator *a;

  if (kit == NULL)
    return;
  a = kit->opt.alloc;
  xcm__free(a, kit->first_violation);
  free_strings(kit, a);
  xcm__free(a, kit);
}

int xcm_testkit_port(const xcm_testkit *kit) {
  return kit->port;
}

const char *xcm_testkit_domain(const xcm_testkit *kit) {
  return kit->domain;
}

/* ---- local clients ------------------------------------------------- */

typedef struct jid_parts {
  const char *node, *domain, *res;
  size_t node_len, domain_len, res_len;
} jid_parts;

static int split_full(const char *jid, jid_parts *p) {
  const char *at = strchr(jid, '@'), *slash;

  if (at == NULL)
    return XCM_EINVAL;
  slash = strchr(at, '/');
  if (slash == NULL || slash[1] == '\0' || at == jid)
    return XCM_EINVAL;
  p->node = jid;
  p->node_len = (size_t)(at - jid);
  p->domain = at + 1;
  p->domain_len = (size_t)(slash - at - 1);
  p->res = slash + 1;
  p->res_len = strlen(slash + 1);
  return 0;
}

static xcm_tk_session *local_session(const xcm_testkit *kit,
                                     const char *full_jid) {
  xcm_map_entry *e;
  xcm_tk_session *s;

  if (full_jid == NULL)
    return NULL;
  e = xcm__map_get(&kit->jids, full_jid, strlen(full_jid));
  if (e == NULL)
    return NULL;
  s = (xcm_tk_session *)((char *)e - offsetof(xcm_tk_session, by_jid));
  return s->group == NULL ? s : NULL;
}

int xcm_testkit_local_login(xcm_testkit *kit, const char *full_jid,
                            xcm_testkit_stanza_fn cb, void *ud) {
  xcm_tk_session *s;
  xcm_tk_user *u;
  jid_parts p;
  char sid[XCM_TK_ID_LEN + 1];
  int err;

  if (full_jid == NULL || split_full(full_jid, &p) != 0 ||
      !xcm__xml_chars_valid(full_jid, strlen(full_jid)))
    return XCM_EINVAL;
  if (p.domain_len != strlen(kit->domain) ||
      memcmp(p.domain, kit->domain, p.domain_len) != 0)
    return XCM_EINVAL;
  u = xcm__tk_user(kit, p.node, p.node_len);
  if (u == NULL || u->anonymous)
    return XCM_ENOTFOUND;
  if (kit->closing)
    return XCM_ECLOSED;
  xcm__tk_random_id(kit, sid, XCM_TK_ID_LEN);
  xcm__tk_enter(kit);
  err = xcm__tk_session_new(kit, NULL, sid, &s);
  if (err == 0) {
    s->authed = 1;
    s->user = u;
    u->refs++;
    s->cb = cb;
    s->cb_ud = ud;
    err = xcm__tk_bind(s, p.res, p.res_len);
    if (err != 0)
      xcm__tk_session_unlink(s);
  }
  xcm__tk_leave(kit);
  return err;
}

static int local_stanza_start(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 32;
}

static int local_stanza(void *ud, const xcm_xml_stanza *st) {
  xcm_tk_session *s = ud;

  if (s->dead)
    return XCM_ECLOSED;
  if (xcm__tk_session_input(s, st->root, st->bytes, st->len) != 0)
    return XCM_EPROTO;
  return 0;
}

int xcm_testkit_local_send(xcm_testkit *kit, const char *full_jid,
                           const char *stanza, size_t len) {
  static const xcm_xml_nsdecl decls[] = {{"", XCM_NS_CLIENT},
                                         {"stream", XCM_NS_STREAMS}};
  static const xcm_xml_context context = {"stream:stream", decls, 2};
  xcm_xml_callbacks cb;
  xcm_xml_reader *r;
  xcm_tk_session *s = local_session(kit, full_jid);
  size_t used;
  int err;

  if (s == NULL)
    return XCM_ENOTFOUND;
  memset(&cb, 0, sizeof(cb));
  cb.stanza_start = local_stanza_start;
  cb.stanza = local_stanza;
  /* A reader per call: a local client may send again from inside the
   * callback that delivers to it, and a reader must not be fed from
   * inside its own callbacks. */
  err = xcm__xml_reader_new(&r, kit->ctx.xml, &cb, s, NULL);
  if (err != 0)
    return err;
  err = xcm__xml_reader_assume_header(r, &context);
  xcm__tk_enter(kit);
  xcm__tk_session_hold(s);
  if (err == 0)
    err = xcm__xml_reader_feed(r, stanza, len, &used);
  xcm__tk_session_release(s);
  xcm__tk_leave(kit);
  xcm__xml_reader_free(r);
  return err;
}

int xcm_testkit_local_logout(xcm_testkit *kit, const char *full_jid) {
  xcm_tk_session *s = local_session(kit, full_jid);

  if (s == NULL)
    return XCM_ENOTFOUND;
  xcm__tk_enter(kit);
  xcm__tk_session_end(s, 0);
  xcm__tk_leave(kit);
  return 0;
}

/* ---- fault controls ------------------------------------------------ */

/* The i-th handshaken connection, in handshake order. */
static xcm_tk_conn *nth_up(const xcm_testkit *kit, unsigned i) {
  xcm_tk_conn *c, *best;
  uint64_t after = 0;
  unsigned k;

  for (k = 0;; k++) {
    best = NULL;
    for (c = kit->conns; c != NULL; c = c->next)
      if (c->state == XCM_TK_UP && !c->drop_pending && c->up_seq > after &&
          (best == NULL || c->up_seq < best->up_seq))
        best = c;
    if (best == NULL || k == i)
      return best;
    after = best->up_seq;
  }
}

int xcm_testkit_drop_connection(xcm_testkit *kit, unsigned i) {
  xcm_tk_conn *c = nth_up(kit, i);

  if (c == NULL)
    return XCM_ENOTFOUND;
  xcm__tk_enter(kit);
  xcm__tk_conn_drop(c, XCM_TK_ABORT);
  xcm__tk_leave(kit);
  return 0;
}

int xcm_testkit_drop_connection_jid(xcm_testkit *kit, const char *addr) {
  xcm_tk_conn *c;
  int found = 0;

  if (addr == NULL)
    return XCM_EINVAL;
  xcm__tk_enter(kit);
  for (c = kit->conns; c != NULL; c = c->next) {
    if (c->state != XCM_TK_DEAD && !c->drop_pending && c->addr != NULL &&
        strcmp(c->addr, addr) == 0) {
      xcm__tk_conn_drop(c, XCM_TK_ABORT);
      found = 1;
    }
  }
  xcm__tk_leave(kit);
  return found ? 0 : XCM_ENOTFOUND;
}

void xcm_testkit_drop_all(xcm_testkit *kit) {
  xcm_tk_conn *c;

  xcm__tk_enter(kit);
  for (c = kit->conns; c != NULL; c = c->next)
    if (c->state != XCM_TK_DEAD)
      xcm__tk_conn_drop(c, XCM_TK_ABORT);
  xcm__tk_leave(kit);
}

void xcm_testkit_refuse_creates(xcm_testkit *kit, int on) {
  kit->refuse_creates = !!on;
}

static int kick(xcm_testkit *kit, xcm_tk_session *s, xcm_cond cond) {
  if (s == NULL)
    return XCM_ENOTFOUND;
  if (cond <= XCM_COND_NONE || cond >= XCM_COND_COUNT_)
    return XCM_EINVAL;
  xcm__tk_enter(kit);
  xcm__tk_session_kick(s, cond);
  xcm__tk_leave(kit);
  return 0;
}

typedef struct sid_search {
  const char *sid;
  xcm_tk_session *found;
} sid_search;

static void search_group(xcm_map_entry *e, void *ud) {
  xcm_tk_group *g = (xcm_tk_group *)e;
  sid_search *ss = ud;
  xcm_map_entry *se;

  if (ss->found != NULL)
    return;
  se = xcm__map_get(&g->sessions, ss->sid, strlen(ss->sid));
  if (se != NULL)
    ss->found = (xcm_tk_session *)se;
}

int xcm_testkit_close_session(xcm_testkit *kit, const char *sid,
                              xcm_cond cond) {
  sid_search ss = {sid, NULL};
  xcm_tk_session *s;

  if (sid == NULL)
    return XCM_EINVAL;
  xcm__map_each(&kit->groups, search_group, &ss);
  if (ss.found == NULL) {
    /* Local clients have ids too. */
    for (s = kit->sessions; s != NULL; s = s->knext)
      if (s->group == NULL && strcmp(s->sid, sid) == 0)
        ss.found = s;
  }
  return kick(kit, ss.found, cond);
}

int xcm_testkit_close_jid(xcm_testkit *kit, const char *full_jid,
                          xcm_cond cond) {
  xcm_map_entry *e;

  if (full_jid == NULL)
    return XCM_EINVAL;
  e = xcm__map_get(&kit->jids, full_jid, strlen(full_jid));
  return kick(kit,
              e != NULL ? (xcm_tk_session *)((char *)e -
                                             offsetof(xcm_tk_session, by_jid))
                        : NULL,
              cond);
}

void xcm_testkit_system_shutdown(xcm_testkit *kit) {
  static const char bye[] =
      "<stream:error xmlns:stream=\"" XCM_NS_STREAMS "\"><system-shutdown "
      "xmlns=\"" XCM_NS_STREAM_ERRORS "\"/></stream:error></stream:stream>";
  xcm_tk_conn *c;

  xcm__tk_enter(kit);
  for (c = kit->conns; c != NULL; c = c->next) {
    if (c->state == XCM_TK_DEAD || c->drop_pending)
      continue;
    if (c->state != XCM_TK_HEADER)
      xcm__tk_conn_write(c, bye, sizeof(bye) - 1);
    xcm__tk_conn_drop(c, XCM_TK_FLUSH);
  }
  xcm__tk_leave(kit);
}

void xcm_testkit_stall(xcm_testkit *kit, int on) {
  xcm_tk_conn *c;

  kit->stalled = !!on;
  for (c = kit->conns; c != NULL; c = c->next) {
    if (c->state == XCM_TK_DEAD)
      continue;
    if (on)
      xcm__stream_pause(c->stream);
    else
      xcm__stream_resume(c->stream);
  }
}

/* ---- observation --------------------------------------------------- */

unsigned xcm_testkit_connections(const xcm_testkit *kit) {
  const xcm_tk_conn *c;
  unsigned n = 0;

  for (c = kit->conns; c != NULL; c = c->next)
    if (c->state == XCM_TK_UP && !c->drop_pending)
      n++;
  return n;
}

const char *xcm_testkit_connection_jid(const xcm_testkit *kit, unsigned i) {
  const xcm_tk_conn *c = nth_up(kit, i);

  return c != NULL ? c->addr : NULL;
}

unsigned xcm_testkit_sessions(const xcm_testkit *kit) {
  return kit->nsessions;
}

int xcm_testkit_jid_state(const xcm_testkit *kit, const char *full_jid) {
  xcm_map_entry *e;
  const xcm_tk_session *s;

  if (full_jid == NULL)
    return 0;
  e = xcm__map_get(&kit->jids, full_jid, strlen(full_jid));
  if (e == NULL)
    return 0;
  s = (const xcm_tk_session *)((char *)e - offsetof(xcm_tk_session, by_jid));
  return s->available ? 2 : 1;
}

int xcm_testkit_get_stats(const xcm_testkit *kit, xcm_testkit_stats *out,
                          size_t size) {
  if (out == NULL)
    return XCM_EINVAL;
  xcm__sized_write(out, size, &kit->stats, sizeof kit->stats);
  return 0;
}

const char *xcm_testkit_first_violation(const xcm_testkit *kit) {
  if (kit->stats.violations == 0)
    return NULL;
  /* Out of memory for the text: the count still says it happened. */
  return kit->first_violation != NULL ? kit->first_violation
                                      : "(violation text lost: out of memory)";
}

unsigned xcm_testkit_offline_count(const xcm_testkit *kit, const char *user) {
  xcm_tk_user *u = user != NULL ? xcm__tk_user(kit, user, strlen(user)) : NULL;

  return u != NULL ? u->noffline : 0;
}

const char *xcm_testkit_offline_message(const xcm_testkit *kit,
                                        const char *user, unsigned i,
                                        size_t *len) {
  xcm_tk_user *u = user != NULL ? xcm__tk_user(kit, user, strlen(user)) : NULL;
  xcm_tk_offline *m;

  if (u == NULL)
    return NULL;
  for (m = u->offline; m != NULL && i > 0; m = m->next)
    i--;
  if (m == NULL)
    return NULL;
  if (len != NULL)
    *len = m->len;
  return m->bytes;
}

const char *xcm_testkit_last_configuration(const xcm_testkit *kit,
                                           size_t *len) {
  if (kit->config.len == 0)
    return NULL;
  if (len != NULL)
    *len = kit->config.len;
  return kit->config.data;
}
