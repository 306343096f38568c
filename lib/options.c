/* Every default of the instance's options and every check of them, in
 * one place (options.h). */
#include "options.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "session/csi.h"
#include "transport/proxy.h"
#include "transport/tls.h"
#include "upstream/servers.h"
#include "util/sized.h"

/* The inner layers' "switched off" is the API's XCM_UNLIMITED. */
_Static_assert(XCM__OFF == XCM_UNLIMITED, "XCM__OFF must be XCM_UNLIMITED");

static const xcm_options defaults = {
    .size = sizeof(xcm_options),
    .server_host = "127.0.0.1",
    .server_port = 5262,
    .resource_prefix = "w",
    .connections = 5,
    .upstream_tls = XCM_UPSTREAM_TLS_OPTIONAL,
    .keepalive_ms = 30000,
    .dead_after_ms = 300000,
    .max_stanza_preauth = 8192,
    .max_stanza = 262144,
    .max_depth = 32,
    .header_timeout_ms = 10000,
    .auth_timeout_ms = 30000,
    .idle_timeout_ms = 600000,
    .max_client_out = 1u << 20,
    .rate = 200,
    .burst = 1000,
    .rate_bytes = 256u * 1024,
    .burst_bytes = 1u << 20,
    .max_clients = 10000,
    .max_per_address = 100,
    .upstream_wait_ms = 0,
    .log_level = XCM_LOG_INFO,
    .sm_enable = 0,
    .sm_max_unacked = 1000,
    .sm_max_unacked_bytes = 1u << 20,
    .sm_ack_every = 50,
    .sm_ack_every_bytes = 65536,
    .sm_ack_quiet_ms = 2000,
    .sm_resume_ms = 300000,
    .sm_ack_timeout_ms = 60000,
    .csi_enable = 0,
    .csi_max_held = 100,
    .csi_max_held_bytes = 65536,
};

static const xcm_listen_options listen_defaults = {
    .size = sizeof(xcm_listen_options),
    .host = "127.0.0.1",
    .port = 0,
    .http_bosh_path = "/http-bind/",
    .http_ws_paths = "/ws/, /xmpp-websocket",
    .http_max_header = 8192,
    .http_max_connections = 10000,
    .http_max_per_address = 100,
    .http_header_timeout_ms = 10000,
    .http_idle_timeout_ms = 60000,
    .bosh_wait = 60,
    .bosh_hold = 1,
    .bosh_requests = 2,
    .bosh_inactivity = 60,
    .bosh_polling = 2,
    .bosh_maxpause = 120,
    .bosh_max_per_address = 16,
};

/* The least size of each: the size field and the first field after it.
 * Anything smaller was never initialised. */
#define MIN_SIZE(type, first)                                                  \
  (offsetof(type, first) + sizeof(((type *)0)->first))

/* The most upstream links: each is a connection Openfire keeps for the
 * CM, and the pool's bookkeeping is sized for a handful. */
#define MAX_CONNECTIONS 64

int xcm_options_init(xcm_options *opt, size_t size) {
  return xcm__sized_init(opt, size, &defaults, sizeof defaults,
                         MIN_SIZE(xcm_options, domain));
}

int xcm_listen_options_init(xcm_listen_options *lo, size_t size) {
  return xcm__sized_init(lo, size, &listen_defaults, sizeof listen_defaults,
                         MIN_SIZE(xcm_listen_options, host));
}

static int say(char *errbuf, size_t errlen, const char *msg) {
  if (errbuf != NULL && errlen > 0)
    snprintf(errbuf, errlen, "%s", msg);
  return XCM_EINVAL;
}

static int bad(char *errbuf, size_t errlen, const char *field,
               const char *range) {
  if (errbuf != NULL && errlen > 0)
    snprintf(errbuf, errlen, "xcm_options.%s is out of range: %s", field,
             range);
  return XCM_EINVAL;
}

/* A limit that XCM_UNLIMITED switches off: anything but 0. */
#define CHECK_LIMIT(field)                                                     \
  if (o->field == 0)                                                           \
  return bad(errbuf, errlen, #field, "1 to 4294967294, or XCM_UNLIMITED")
/* A count or duration that must be there: anything but 0 and, for the
 * unsigned ones, XCM_UNLIMITED, which would be mistaken for "off". */
#define CHECK_UINT(field)                                                      \
  if (o->field == 0 || o->field == XCM_UNLIMITED)                              \
  return bad(errbuf, errlen, #field, "1 to 4294967294")
#define CHECK_SIZE(field)                                                      \
  if (o->field == 0)                                                           \
  return bad(errbuf, errlen, #field, "at least 1")

static int empty(const char *s) {
  return s == NULL || s[0] == '\0';
}

/* The pin's form, and what it cannot be combined with. */
static int check_pin(const xcm_options *opt, char *errbuf, size_t errlen) {
  unsigned char pin[32];
  const char *fp = opt->upstream_fingerprint;
  const char *clash = NULL;

  if (xcm__tls_parse_fingerprint(fp, pin) != 0) {
    if (errbuf != NULL && errlen > 0)
      snprintf(
          errbuf, errlen,
          "upstream_fingerprint: \"%.80s%s\" is not a SHA-256 "
          "fingerprint; expected \"sha256:\" and 64 hex digits, with "
          "or without ':' between byte pairs, e.g. sha256:%s or "
          "sha256:%s",
          fp, strlen(fp) > 80 ? "..." : "",
          "9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:"
          "2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08",
          "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    return XCM_EINVAL;
  }
  if (opt->upstream_accept_self_signed)
    clash = "upstream_accept_self_signed (which trusts any certificate)";
  else if (opt->upstream_ca_file != NULL)
    clash = "upstream_ca_file (the pin replaces the CA)";
  if (clash != NULL) {
    if (errbuf != NULL && errlen > 0)
      snprintf(errbuf, errlen,
               "upstream_fingerprint cannot be set with %s: set one of them",
               clash);
    return XCM_EINVAL;
  }
  return 0;
}

/* upstream_servers: its syntax, the links over all its servers, and
 * server_host and server_port left alone beside it (or naming its only
 * server), so that nobody wonders which of the two is used. */
static int check_servers(const xcm_options *o, char *errbuf, size_t errlen) {
  xcm_server_ref refs[XCM_SERVERS_MAX];
  char why[200];
  int n = xcm__servers_parse(o->upstream_servers, refs, why, sizeof why);

  if (n < 0) {
    if (errbuf != NULL && errlen > 0)
      snprintf(errbuf, errlen, "xcm_options.upstream_servers: %s", why);
    return XCM_EINVAL;
  }
  if ((unsigned)n * o->connections > XCM_SERVERS_MAX_LINKS) {
    if (errbuf != NULL && errlen > 0)
      snprintf(errbuf, errlen,
               "xcm_options.upstream_servers: %d servers with connections "
               "= %u each make %u links: at most %d in all",
               n, o->connections, (unsigned)n * o->connections,
               XCM_SERVERS_MAX_LINKS);
    return XCM_EINVAL;
  }
  if ((strcmp(o->server_host, defaults.server_host) != 0 ||
       o->server_port != defaults.server_port) &&
      !(n == 1 && refs[0].port == o->server_port &&
        strlen(o->server_host) == refs[0].len &&
        strncasecmp(o->server_host, refs[0].host, refs[0].len) == 0)) {
    if (errbuf != NULL && errlen > 0)
      snprintf(errbuf, errlen,
               "xcm_options.upstream_servers (\"%.80s\") and "
               ".server_host/.server_port (%.80s port %d) both name the "
               "upstream: set one of them (list every node in "
               "upstream_servers, and leave server_host and server_port "
               "at their defaults)",
               o->upstream_servers, o->server_host, o->server_port);
    return XCM_EINVAL;
  }
  return 0;
}

/* The CSI rules' syntax, naming the field. */
static const char *const csi_fields[2] = {"xcm_options.csi_hold_ns",
                                          "xcm_options.csi_urgent_ns"};

static int check_csi(const xcm_options *o, char *errbuf, size_t errlen) {
  return xcm__csi_rules_parse(NULL, o->csi_hold_ns, o->csi_urgent_ns,
                              csi_fields, errbuf, errlen);
}

int xcm__options_resolve(xcm_options *o, const xcm_options *in, char *errbuf,
                         size_t errlen) {
  int err;

  *o = defaults;
  err = xcm__sized_read(o, sizeof *o, in, MIN_SIZE(xcm_options, domain),
                        "xcm_options", "xcm_options_init(&opt, sizeof opt)",
                        errbuf, errlen);
  if (err != 0)
    return err;
  if (empty(o->domain))
    return say(errbuf, errlen,
               "xcm_options.domain is not set: the XMPP domain is required");
  if (empty(o->name) || empty(o->secret))
    return say(errbuf, errlen, "xcm_options.name and .secret must both be set");
  if (empty(o->server_host))
    return say(errbuf, errlen,
               "xcm_options.server_host is not set: a host name or address");
  if (o->resource_prefix == NULL)
    return say(errbuf, errlen, "xcm_options.resource_prefix is NULL");
  /* The upstream address NAME/PREFIXn-m lives in a fixed buffer of the
   * link (XCM_POOL_MAX_JID): refuse what would not fit rather than cut
   * it. */
  if (strlen(o->name) + strlen(o->resource_prefix) + 24 > XCM_POOL_MAX_JID)
    return say(errbuf, errlen,
               "xcm_options.name and .resource_prefix are too long together "
               "(at most 232 bytes)");
  if (o->server_port < 1 || o->server_port > 65535)
    return bad(errbuf, errlen, "server_port", "1 to 65535");
  if (o->connections < 1 || o->connections > MAX_CONNECTIONS)
    return bad(errbuf, errlen, "connections", "1 to 64");
  if (o->upstream_servers != NULL &&
      (err = check_servers(o, errbuf, errlen)) != 0)
    return err;
  if ((unsigned)o->upstream_tls > XCM_UPSTREAM_TLS_REQUIRED)
    return bad(errbuf, errlen, "upstream_tls",
               "XCM_UPSTREAM_TLS_OFF, _OPTIONAL or _REQUIRED");
  CHECK_UINT(keepalive_ms);
  CHECK_UINT(dead_after_ms);
  CHECK_SIZE(max_stanza_preauth);
  CHECK_SIZE(max_stanza);
  CHECK_UINT(max_depth);
  CHECK_LIMIT(header_timeout_ms);
  CHECK_LIMIT(auth_timeout_ms);
  CHECK_LIMIT(idle_timeout_ms);
  CHECK_SIZE(max_client_out);
  CHECK_LIMIT(rate);
  CHECK_UINT(burst);
  CHECK_LIMIT(rate_bytes);
  CHECK_UINT(burst_bytes);
  CHECK_LIMIT(max_clients);
  CHECK_LIMIT(max_per_address);
  CHECK_LIMIT(sm_max_unacked);
  CHECK_SIZE(sm_max_unacked_bytes);
  CHECK_LIMIT(sm_ack_every);
  CHECK_LIMIT(sm_ack_every_bytes);
  CHECK_LIMIT(sm_ack_quiet_ms);
  CHECK_LIMIT(sm_ack_timeout_ms);
  if (o->sm_resume_ms > 86400000)
    return bad(errbuf, errlen, "sm_resume_ms", "0 (no resumption) to 86400000");
  if (o->csi_max_held < 1 || o->csi_max_held > 100000)
    return bad(errbuf, errlen, "csi_max_held", "1 to 100000");
  if (o->csi_max_held_bytes < 1 || o->csi_max_held_bytes > (1u << 24))
    return bad(errbuf, errlen, "csi_max_held_bytes", "1 to 16777216");
  if ((err = check_csi(o, errbuf, errlen)) != 0)
    return err;
  if (o->upstream_fingerprint != NULL &&
      (err = check_pin(o, errbuf, errlen)) != 0)
    return err;
  if (o->log_level < XCM_LOG_ERROR || o->log_level > XCM_LOG_DEBUG)
    return bad(errbuf, errlen, "log_level", "XCM_LOG_ERROR to XCM_LOG_DEBUG");
  if (o->alloc != NULL) {
    xcm_allocator a;

    /* The library calls through the caller's table itself: it must hold
     * every field of the first version (realloc and ud). */
    memset(&a, 0, sizeof a);
    err = xcm__sized_read(&a, sizeof a, o->alloc, MIN_SIZE(xcm_allocator, ud),
                          "xcm_allocator", "it with .size = sizeof it", errbuf,
                          errlen);
    if (err != 0)
      return err;
    if (a.realloc == NULL)
      return say(errbuf, errlen, "xcm_options.alloc->realloc is NULL");
  }
  return 0;
}

/* proxy_trusted goes with proxy_protocol, both ways: a balancer's
 * listener that trusted anyone by default would let anyone name any
 * address. */
static int check_trusted(const xcm_listen_options *lo, char *errbuf,
                         size_t errlen) {
  char why[160];
  int n = xcm__proxy_trust_parse(lo->proxy_trusted, NULL, why, sizeof why);

  if (n < 0) {
    if (errbuf != NULL && errlen > 0)
      snprintf(errbuf, errlen, "xcm_listen_options.proxy_trusted: %s", why);
    return XCM_EINVAL;
  }
  if (lo->proxy_protocol && n == 0)
    return say(errbuf, errlen,
               "xcm_listen_options.proxy_trusted is not set: a "
               "proxy_protocol listener takes PROXY headers only from the "
               "balancers it lists (e.g. \"10.0.0.5, fd00::/8\")");
  if (!lo->proxy_protocol && n > 0)
    return say(errbuf, errlen,
               "xcm_listen_options.proxy_trusted is set without "
               "proxy_protocol: set both, or neither");
  return 0;
}

/* The BOSH fields: 0 takes the default (a caller whose struct ends
 * before them gets every default). */
static int check_bosh(xcm_listen_options *lo, char *errbuf, size_t errlen) {
  unsigned *f[] = {&lo->bosh_wait,           &lo->bosh_hold,
                   &lo->bosh_requests,       &lo->bosh_inactivity,
                   &lo->bosh_polling,        &lo->bosh_maxpause,
                   &lo->bosh_max_per_address};
  const unsigned d[] = {
      listen_defaults.bosh_wait,           listen_defaults.bosh_hold,
      listen_defaults.bosh_requests,       listen_defaults.bosh_inactivity,
      listen_defaults.bosh_polling,        listen_defaults.bosh_maxpause,
      listen_defaults.bosh_max_per_address};
  size_t i;

  for (i = 0; i < sizeof f / sizeof f[0]; i++)
    if (*f[i] == 0)
      *f[i] = d[i];
  if (lo->bosh_wait > 3600 || lo->bosh_inactivity > 3600 ||
      lo->bosh_polling > 3600)
    return say(errbuf, errlen,
               "xcm_listen_options.bosh_wait, bosh_inactivity and "
               "bosh_polling are out of range: 1 to 3600 seconds");
  if (lo->bosh_requests > 8 || lo->bosh_hold >= lo->bosh_requests)
    return say(errbuf, errlen,
               "xcm_listen_options.bosh_requests is out of range: 1 to 8, "
               "and above bosh_hold");
  if (lo->bosh_maxpause != XCM_UNLIMITED && lo->bosh_maxpause > 86400)
    return say(errbuf, errlen,
               "xcm_listen_options.bosh_maxpause is out of range: 1 to 86400 "
               "seconds, or XCM_UNLIMITED for no pause");
  return 0;
}

/* An HTTP listener's fields: 0 takes the default (so does a caller
 * whose struct ends before them); paths, origins and the public URL are
 * checked here so that xcm_cm_listen fails before opening anything. */
static int check_http(xcm_listen_options *lo, char *errbuf, size_t errlen) {
  xcm_http_cfg cfg;
  int err;

  if (!lo->http)
    return 0;
  if (lo->http_max_header == 0)
    lo->http_max_header = listen_defaults.http_max_header;
  if (lo->http_max_connections == 0)
    lo->http_max_connections = listen_defaults.http_max_connections;
  if (lo->http_max_per_address == 0)
    lo->http_max_per_address = listen_defaults.http_max_per_address;
  if (lo->http_header_timeout_ms == 0)
    lo->http_header_timeout_ms = listen_defaults.http_header_timeout_ms;
  if (lo->http_idle_timeout_ms == 0)
    lo->http_idle_timeout_ms = listen_defaults.http_idle_timeout_ms;
  if (lo->http_max_header < 256 || lo->http_max_header > 65536)
    return say(errbuf, errlen,
               "xcm_listen_options.http_max_header is out of range: 256 to "
               "65536 bytes");
  if (lo->http_max_body == XCM_UNLIMITED)
    return say(errbuf, errlen,
               "xcm_listen_options.http_max_body cannot be XCM_UNLIMITED: a "
               "body is held whole; 0 takes max_stanza + 1024");
  if (lo->http_header_timeout_ms == XCM_UNLIMITED ||
      lo->http_idle_timeout_ms == XCM_UNLIMITED)
    return say(errbuf, errlen,
               "xcm_listen_options.http_header_timeout_ms and "
               "http_idle_timeout_ms cannot be XCM_UNLIMITED: a stranger "
               "could hold a connection forever");
  if (lo->direct_tls && lo->cert_file == NULL)
    return say(errbuf, errlen,
               "xcm_listen_options.direct_tls is set on an HTTP listener "
               "without cert_file: set cert_file and key_file for HTTPS");
  if (lo->http_public_url != NULL) {
    const char *u = lo->http_public_url, *rest;
    int ok = strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;

    rest = ok ? strstr(u, "://") + 3 : u;
    ok = ok && *rest != '\0' && *rest != '/' && strlen(u) < 256;
    for (const char *p = rest; ok && *p; p++)
      if (*p <= ' ' || *p >= 127 || *p == '"' || *p == '\'' || *p == '<' ||
          *p == '>' || *p == '&' || *p == '\\' || *p == '?' || *p == '#')
        ok = 0;
    if (!ok) {
      if (errbuf != NULL && errlen > 0)
        snprintf(errbuf, errlen,
                 "xcm_listen_options.http_public_url '%.80s' is not a base "
                 "URL: http:// or https://, a host, an optional port and "
                 "path, no query, under 256 bytes",
                 u);
      return XCM_EINVAL;
    }
  }
  err = check_bosh(lo, errbuf, errlen);
  if (err != 0)
    return err;
  memset(&cfg, 0, sizeof cfg);
  err = xcm__http_cfg_parse(&cfg, NULL, lo->http_bosh_path, lo->http_ws_paths,
                            lo->http_origins, errbuf, errlen);
  xcm__http_cfg_free(&cfg, NULL);
  return err;
}

int xcm__listen_options_resolve(xcm_listen_options *lo,
                                const xcm_listen_options *in, char *errbuf,
                                size_t errlen) {
  int err;

  *lo = listen_defaults;
  err = xcm__sized_read(lo, sizeof *lo, in, MIN_SIZE(xcm_listen_options, host),
                        "xcm_listen_options",
                        "xcm_listen_options_init(&lo, sizeof lo)", errbuf,
                        errlen);
  if (err != 0)
    return err;
  if (empty(lo->host) || lo->port < 0 || lo->port > 65535 ||
      (lo->cert_file != NULL && lo->key_file == NULL)) {
    if (errbuf != NULL && errlen > 0)
      snprintf(errbuf, errlen, "xcm_listen_options.%s",
               empty(lo->host) ? "host is not set"
               : lo->cert_file == NULL || lo->key_file != NULL
                   ? "port is out of range: 0 to 65535"
                   : "key_file is not set: it is required with cert_file");
    return XCM_EINVAL;
  }
  err = check_trusted(lo, errbuf, errlen);
  return err != 0 ? err : check_http(lo, errbuf, errlen);
}

int xcm_options_check(const xcm_options *in, char *errbuf, size_t errlen) {
  xcm_options o;

  if (in == NULL)
    return say(errbuf, errlen, "xcm_options is NULL");
  return xcm__options_resolve(&o, in, errbuf, errlen);
}

int xcm_listen_options_check(const xcm_listen_options *in, char *errbuf,
                             size_t errlen) {
  xcm_listen_options lo;

  return xcm__listen_options_resolve(&lo, in, errbuf, errlen);
}

void xcm__pool_options_defaults(xcm_pool_options *po) {
  memset(po, 0, sizeof *po);
  po->host = defaults.server_host;
  po->port = defaults.server_port;
  po->resource_prefix = defaults.resource_prefix;
  po->connections = defaults.connections;
  po->tls = (enum xcm_pool_tls)defaults.upstream_tls;
  po->keepalive_ms = defaults.keepalive_ms;
  po->dead_after_ms = defaults.dead_after_ms;
  /* Not options of the API: settings of the pool that tests tune. */
  po->backoff_min_ms = 250;
  po->backoff_max_ms = 30000;
  po->request_timeout_ms = 30000;
  po->high_water = 1u << 20;
  po->low_water = po->high_water / 4;
  po->max_out = 8 * po->high_water;
  po->hold_max = 65536;
  po->linger_ms = 200;
}

void xcm__pool_options_from(xcm_pool_options *po, const xcm_options *o) {
  xcm__pool_options_defaults(po);
  po->host = o->server_host;
  po->port = o->server_port;
  po->servers = o->upstream_servers;
  po->domain = o->domain;
  po->name = o->name;
  po->secret = o->secret;
  po->resource_prefix = o->resource_prefix;
  po->connections = o->connections;
  po->tls = (enum xcm_pool_tls)o->upstream_tls;
  po->ca_file = o->upstream_ca_file;
  po->accept_self_signed = o->upstream_accept_self_signed;
  po->zlib = o->upstream_zlib;
  po->keepalive_ms = o->keepalive_ms;
  po->dead_after_ms = o->dead_after_ms;
}

void xcm__client_cfg_from(xcm_client_cfg *cfg, const xcm_options *o) {
  memset(cfg, 0, sizeof *cfg);
  cfg->domain = o->domain;
  cfg->max_stanza_preauth = o->max_stanza_preauth;
  cfg->max_stanza = o->max_stanza;
  cfg->max_depth = o->max_depth;
  cfg->header_timeout_ms = o->header_timeout_ms;
  cfg->auth_timeout_ms = o->auth_timeout_ms;
  cfg->idle_timeout_ms = o->idle_timeout_ms;
  cfg->max_out = o->max_client_out;
  cfg->rate = o->rate;
  cfg->burst = o->burst;
  cfg->rate_bytes = o->rate_bytes;
  cfg->burst_bytes = o->burst_bytes;
  cfg->compression = o->compression;
  cfg->upstream_wait_ms = o->upstream_wait_ms;
  cfg->sm = o->sm_enable != 0;
  cfg->sm_max_unacked = o->sm_max_unacked;
  cfg->sm_max_unacked_bytes = o->sm_max_unacked_bytes;
  cfg->sm_ack_every = o->sm_ack_every;
  cfg->sm_ack_every_bytes = o->sm_ack_every_bytes;
  cfg->sm_ack_quiet_ms = o->sm_ack_quiet_ms;
  cfg->sm_resume_ms = o->sm_enable ? o->sm_resume_ms : 0;
  cfg->sm_ack_timeout_ms = o->sm_ack_timeout_ms;
  cfg->csi.enable = o->csi_enable != 0;
  cfg->csi.max_held = o->csi_max_held;
  cfg->csi.max_held_bytes = o->csi_max_held_bytes;
  /* Checked by xcm__options_resolve; the rules point into o's strings. */
  xcm__csi_rules_parse(&cfg->csi.rules, o->csi_hold_ns, o->csi_urgent_ns,
                       csi_fields, NULL, 0);
}

void xcm__client_cfg_defaults(xcm_client_cfg *cfg) {
  xcm__client_cfg_from(cfg, &defaults);
}
