/* xcmd's configuration: our INI-like format and the Java CM's manager.xml.
 * doc/config.md is the reference for both; this file follows it. */
#include "config.h"

#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
  XCMD_MAX_FILE = 1024 * 1024, /* no real configuration comes near */
  XCMD_MAX_VALUE = 4095,
  XCMD_MAX_KEYS = 96,
  XCMD_XML_DEPTH = 16,
  XCMD_XML_PATH = 255,
  XCMD_XML_TEXT = 64 * 1024,
  XCMD_XML_PROPS = 512
};

/* The units of sizes and durations. */
enum {
  XCMD_KIB = 1024,
  XCMD_MIB = 1024 * 1024,
  XCMD_GIB = 1024 * 1024 * 1024,
  XCMD_SEC = 1000,
  XCMD_MIN = 60 * 1000,
  XCMD_HOUR = 3600 * 1000,
  XCMD_DAY = 86400 * 1000
};

/* ---- Shared by both formats ------------------------------------------ */

static __attribute__((format(printf, 3, 4))) int
xcmd_fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;

  if (err != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return XCM_ECONFIG;
}

/* A value as it may appear inside an error message: control bytes would
 * garble a terminal or a log line, and a page of junk helps nobody. */
static const char *xcmd_show(const char *s, size_t len, char *buf,
                             size_t bufsize) {
  size_t i, n = 0, max = bufsize - 4;

  for (i = 0; i < len && n < max; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  if (i < len) {
    memcpy(buf + n, "...", 3);
    n += 3;
  }
  buf[n] = '\0';
  return buf;
}

static char *xcmd_own(xcmd_config *cfg, const char *s, size_t len) {
  char *p;

  if (cfg->nowned_ == cfg->owned_cap_) {
    unsigned cap = cfg->owned_cap_ ? cfg->owned_cap_ * 2 : 16;
    char **v = realloc(cfg->owned_, cap * sizeof(*v));
    if (v == NULL)
      return NULL;
    cfg->owned_ = v;
    cfg->owned_cap_ = cap;
  }
  p = malloc(len + 1);
  if (p == NULL)
    return NULL;
  memcpy(p, s, len);
  p[len] = '\0';
  cfg->owned_[cfg->nowned_++] = p;
  return p;
}

/* The library's defaults (xcm_options_init), so that every field holds
 * the value in effect: the daemon prints them and the cross-checks
 * compare them. The config file's own "0" and "unlimited" are read into
 * these values by the keys' table below. */
static void xcmd_defaults(xcmd_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  xcm_options_init(&cfg->opt, sizeof cfg->opt);
  cfg->log_target = XCMD_LOG_STDERR;
  cfg->log_level = XCM_LOG_INFO;
  cfg->drain_ms = 5000;
  cfg->drain_period_ms = 60000;
}

/* A pin for Openfire's certificate, as xcm_options.upstream_fingerprint
 * takes it: "sha256:" and 64 hex digits, any case, with ':' between
 * every byte pair or none. */
static int xcmd_fingerprint_ok(const char *s) {
  size_t i, n = strlen(s);
  int colons;

  if (strncasecmp(s, "sha256:", 7) != 0)
    return 0;
  s += 7;
  n -= 7;
  colons = n == 32 * 3 - 1;
  if (n != (colons ? 32 * 3 - 1 : 64))
    return 0;
  for (i = 0; i < n; i++) {
    if (colons && i % 3 == 2) {
      if (s[i] != ':')
        return 0;
    } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
                 (s[i] >= 'A' && s[i] <= 'F'))) {
      return 0;
    }
  }
  return 1;
}

#define XCMD_FINGERPRINT_FORM                                                  \
  "use sha256: and 64 hex digits, with or without ':' between byte pairs, "    \
  "as 'openssl x509 -noout -fingerprint -sha256' or keytool prints it"

static void xcmd_default_listener(xcm_listen_options *lo) {
  xcm_listen_options_init(lo, sizeof(*lo));
}

/* Digits only: no sign, no spaces, no base prefix. 0 on success, -1 when
 * s is not a number, -2 when it does not fit. */
static int xcmd_parse_digits(const char *s, size_t len,
                             unsigned long long *out) {
  unsigned long long v = 0;
  size_t i;

  if (len == 0)
    return -1;
  for (i = 0; i < len; i++) {
    unsigned d;
    if (s[i] < '0' || s[i] > '9')
      return -1;
    d = (unsigned)(s[i] - '0');
    if (v > (ULLONG_MAX - d) / 10)
      return -2;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* ---- Our format --------------------------------------------------------
 *
 * One table holds every key: its section, its type, where its value goes
 * and, for numbers, the range it must fall in. */

enum xcmd_section {
  XCMD_SEC_SERVER,
  XCMD_SEC_UPSTREAM,
  XCMD_SEC_LISTENER,
  XCMD_SEC_LIMITS,
  XCMD_SEC_LOG,
  XCMD_SEC_METRICS,
  XCMD_SEC_DAEMON,
  XCMD_SEC_SM,
  XCMD_SEC_CSI,
  XCMD_NSECTIONS
};

static const char *const xcmd_section_names[XCMD_NSECTIONS] = {
    "server",  "upstream", "listener",          "limits", "log",
    "metrics", "daemon",   "stream_management", "csi"};

enum xcmd_type {
  XCMD_T_STR,    /* const char * */
  XCMD_T_UINT,   /* unsigned */
  XCMD_T_PORT,   /* int */
  XCMD_T_BOOL,   /* int */
  XCMD_T_SIZE,   /* size_t */
  XCMD_T_USIZE,  /* unsigned, a size */
  XCMD_T_MS,     /* unsigned, milliseconds */
  XCMD_T_SEC,    /* unsigned, whole seconds (BOSH counts in them) */
  XCMD_T_LEVEL,  /* int, XCM_LOG_* */
  XCMD_T_TARGET, /* xcmd_log_target */
  XCMD_T_TLS     /* xcm_upstream_tls */
};

typedef struct xcmd_key {
  enum xcmd_section section;
  const char *name;
  enum xcmd_type type;
  size_t off; /* into xcmd_config; in [listener], into xcm_listen_options */
  unsigned long long min, max;
} xcmd_key;

static const xcmd_key xcmd_keys[] = {
    {XCMD_SEC_SERVER, "domain", XCMD_T_STR, offsetof(xcmd_config, opt.domain),
     0, 0},
    {XCMD_SEC_SERVER, "compression", XCMD_T_BOOL,
     offsetof(xcmd_config, opt.compression), 0, 0},
    {XCMD_SEC_SERVER, "expat_only", XCMD_T_BOOL,
     offsetof(xcmd_config, opt.expat_only), 0, 0},

    {XCMD_SEC_UPSTREAM, "host", XCMD_T_STR,
     offsetof(xcmd_config, opt.server_host), 0, 0},
    {XCMD_SEC_UPSTREAM, "port", XCMD_T_PORT,
     offsetof(xcmd_config, opt.server_port), 1, 65535},
    {XCMD_SEC_UPSTREAM, "servers", XCMD_T_STR,
     offsetof(xcmd_config, opt.upstream_servers), 0, 0},
    {XCMD_SEC_UPSTREAM, "name", XCMD_T_STR, offsetof(xcmd_config, opt.name), 0,
     0},
    {XCMD_SEC_UPSTREAM, "secret", XCMD_T_STR, offsetof(xcmd_config, opt.secret),
     0, 0},
    {XCMD_SEC_UPSTREAM, "resource_prefix", XCMD_T_STR,
     offsetof(xcmd_config, opt.resource_prefix), 0, 0},
    {XCMD_SEC_UPSTREAM, "connections", XCMD_T_UINT,
     offsetof(xcmd_config, opt.connections), 1, 64},
    {XCMD_SEC_UPSTREAM, "tls", XCMD_T_TLS,
     offsetof(xcmd_config, opt.upstream_tls), 0, 0},
    {XCMD_SEC_UPSTREAM, "ca_file", XCMD_T_STR,
     offsetof(xcmd_config, opt.upstream_ca_file), 0, 0},
    {XCMD_SEC_UPSTREAM, "fingerprint", XCMD_T_STR,
     offsetof(xcmd_config, opt.upstream_fingerprint), 0, 0},
    {XCMD_SEC_UPSTREAM, "accept_self_signed", XCMD_T_BOOL,
     offsetof(xcmd_config, opt.upstream_accept_self_signed), 0, 0},
    {XCMD_SEC_UPSTREAM, "zlib", XCMD_T_BOOL,
     offsetof(xcmd_config, opt.upstream_zlib), 0, 0},
    {XCMD_SEC_UPSTREAM, "keepalive", XCMD_T_MS,
     offsetof(xcmd_config, opt.keepalive_ms), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_UPSTREAM, "dead_after", XCMD_T_MS,
     offsetof(xcmd_config, opt.dead_after_ms), XCMD_SEC, XCMD_DAY},
    {XCMD_SEC_UPSTREAM, "wait", XCMD_T_MS,
     offsetof(xcmd_config, opt.upstream_wait_ms), 0, 60ULL * XCMD_SEC},

    {XCMD_SEC_LISTENER, "host", XCMD_T_STR, offsetof(xcm_listen_options, host),
     0, 0},
    {XCMD_SEC_LISTENER, "port", XCMD_T_PORT, offsetof(xcm_listen_options, port),
     1, 65535},
    {XCMD_SEC_LISTENER, "cert", XCMD_T_STR,
     offsetof(xcm_listen_options, cert_file), 0, 0},
    {XCMD_SEC_LISTENER, "key", XCMD_T_STR,
     offsetof(xcm_listen_options, key_file), 0, 0},
    {XCMD_SEC_LISTENER, "direct_tls", XCMD_T_BOOL,
     offsetof(xcm_listen_options, direct_tls), 0, 0},
    {XCMD_SEC_LISTENER, "reuseport", XCMD_T_BOOL,
     offsetof(xcm_listen_options, reuseport), 0, 0},
    {XCMD_SEC_LISTENER, "proxy_protocol", XCMD_T_BOOL,
     offsetof(xcm_listen_options, proxy_protocol), 0, 0},
    {XCMD_SEC_LISTENER, "proxy_trusted", XCMD_T_STR,
     offsetof(xcm_listen_options, proxy_trusted), 0, 0},
    {XCMD_SEC_LISTENER, "http", XCMD_T_BOOL, offsetof(xcm_listen_options, http),
     0, 0},
    {XCMD_SEC_LISTENER, "http_bosh_path", XCMD_T_STR,
     offsetof(xcm_listen_options, http_bosh_path), 0, 0},
    {XCMD_SEC_LISTENER, "http_ws_paths", XCMD_T_STR,
     offsetof(xcm_listen_options, http_ws_paths), 0, 0},
    {XCMD_SEC_LISTENER, "http_origins", XCMD_T_STR,
     offsetof(xcm_listen_options, http_origins), 0, 0},
    {XCMD_SEC_LISTENER, "http_public_url", XCMD_T_STR,
     offsetof(xcm_listen_options, http_public_url), 0, 0},
    {XCMD_SEC_LISTENER, "http_max_header", XCMD_T_USIZE,
     offsetof(xcm_listen_options, http_max_header), XCMD_KIB, XCMD_MIB},
    {XCMD_SEC_LISTENER, "http_max_body", XCMD_T_USIZE,
     offsetof(xcm_listen_options, http_max_body), XCMD_KIB, 64ULL * XCMD_MIB},
    {XCMD_SEC_LISTENER, "http_max_connections", XCMD_T_UINT,
     offsetof(xcm_listen_options, http_max_connections), 1, 10000000},
    {XCMD_SEC_LISTENER, "http_max_per_address", XCMD_T_UINT,
     offsetof(xcm_listen_options, http_max_per_address), 1, 10000000},
    {XCMD_SEC_LISTENER, "http_header_timeout", XCMD_T_MS,
     offsetof(xcm_listen_options, http_header_timeout_ms), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_LISTENER, "http_idle_timeout", XCMD_T_MS,
     offsetof(xcm_listen_options, http_idle_timeout_ms), XCMD_SEC, XCMD_DAY},
    {XCMD_SEC_LISTENER, "bosh_wait", XCMD_T_SEC,
     offsetof(xcm_listen_options, bosh_wait), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_LISTENER, "bosh_hold", XCMD_T_UINT,
     offsetof(xcm_listen_options, bosh_hold), 1, 7},
    {XCMD_SEC_LISTENER, "bosh_requests", XCMD_T_UINT,
     offsetof(xcm_listen_options, bosh_requests), 2, 8},
    {XCMD_SEC_LISTENER, "bosh_inactivity", XCMD_T_SEC,
     offsetof(xcm_listen_options, bosh_inactivity), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_LISTENER, "bosh_polling", XCMD_T_SEC,
     offsetof(xcm_listen_options, bosh_polling), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_LISTENER, "bosh_maxpause", XCMD_T_SEC,
     offsetof(xcm_listen_options, bosh_maxpause), XCMD_SEC, XCMD_DAY},
    {XCMD_SEC_LISTENER, "bosh_max_per_address", XCMD_T_UINT,
     offsetof(xcm_listen_options, bosh_max_per_address), 1, 10000000},

    {XCMD_SEC_LIMITS, "max_stanza_preauth", XCMD_T_SIZE,
     offsetof(xcmd_config, opt.max_stanza_preauth), XCMD_KIB, XCMD_MIB},
    {XCMD_SEC_LIMITS, "max_stanza", XCMD_T_SIZE,
     offsetof(xcmd_config, opt.max_stanza), XCMD_KIB, 64ULL * XCMD_MIB},
    {XCMD_SEC_LIMITS, "max_depth", XCMD_T_UINT,
     offsetof(xcmd_config, opt.max_depth), 4, 256},
    {XCMD_SEC_LIMITS, "header_timeout", XCMD_T_MS,
     offsetof(xcmd_config, opt.header_timeout_ms), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_LIMITS, "auth_timeout", XCMD_T_MS,
     offsetof(xcmd_config, opt.auth_timeout_ms), XCMD_SEC, XCMD_HOUR},
    {XCMD_SEC_LIMITS, "idle_timeout", XCMD_T_MS,
     offsetof(xcmd_config, opt.idle_timeout_ms), XCMD_SEC, 24ULL * XCMD_DAY},
    {XCMD_SEC_LIMITS, "max_client_out", XCMD_T_SIZE,
     offsetof(xcmd_config, opt.max_client_out), 4 * XCMD_KIB, XCMD_GIB},
    {XCMD_SEC_LIMITS, "rate", XCMD_T_UINT, offsetof(xcmd_config, opt.rate), 1,
     1000000},
    {XCMD_SEC_LIMITS, "burst", XCMD_T_UINT, offsetof(xcmd_config, opt.burst), 1,
     1000000},
    {XCMD_SEC_LIMITS, "rate_bytes", XCMD_T_USIZE,
     offsetof(xcmd_config, opt.rate_bytes), XCMD_KIB, XCMD_GIB},
    {XCMD_SEC_LIMITS, "burst_bytes", XCMD_T_USIZE,
     offsetof(xcmd_config, opt.burst_bytes), XCMD_KIB, XCMD_GIB},
    {XCMD_SEC_LIMITS, "max_clients", XCMD_T_UINT,
     offsetof(xcmd_config, opt.max_clients), 1, 10000000},
    {XCMD_SEC_LIMITS, "max_per_address", XCMD_T_UINT,
     offsetof(xcmd_config, opt.max_per_address), 1, 10000000},

    {XCMD_SEC_LOG, "target", XCMD_T_TARGET, offsetof(xcmd_config, log_target),
     0, 0},
    {XCMD_SEC_LOG, "level", XCMD_T_LEVEL, offsetof(xcmd_config, log_level), 0,
     0},
    {XCMD_SEC_LOG, "bodies", XCMD_T_BOOL, offsetof(xcmd_config, log_bodies), 0,
     0},

    {XCMD_SEC_METRICS, "host", XCMD_T_STR, offsetof(xcmd_config, metrics_host),
     0, 0},
    {XCMD_SEC_METRICS, "port", XCMD_T_PORT, offsetof(xcmd_config, metrics_port),
     1, 65535},

    {XCMD_SEC_DAEMON, "workers", XCMD_T_UINT, offsetof(xcmd_config, workers), 0,
     256},
    {XCMD_SEC_DAEMON, "pid_file", XCMD_T_STR, offsetof(xcmd_config, pid_file),
     0, 0},
    {XCMD_SEC_DAEMON, "user", XCMD_T_STR, offsetof(xcmd_config, user), 0, 0},
    {XCMD_SEC_DAEMON, "group", XCMD_T_STR, offsetof(xcmd_config, group), 0, 0},
    {XCMD_SEC_DAEMON, "drain", XCMD_T_MS, offsetof(xcmd_config, drain_ms), 0,
     XCMD_HOUR},
    {XCMD_SEC_DAEMON, "drain_period", XCMD_T_MS,
     offsetof(xcmd_config, drain_period_ms), 0, XCMD_DAY},

    {XCMD_SEC_SM, "enable", XCMD_T_BOOL, offsetof(xcmd_config, opt.sm_enable),
     0, 0},
    {XCMD_SEC_SM, "max_unacked", XCMD_T_UINT,
     offsetof(xcmd_config, opt.sm_max_unacked), 1, 1000000},
    {XCMD_SEC_SM, "max_unacked_bytes", XCMD_T_SIZE,
     offsetof(xcmd_config, opt.sm_max_unacked_bytes), XCMD_KIB, XCMD_GIB},
    {XCMD_SEC_SM, "ack_every", XCMD_T_UINT,
     offsetof(xcmd_config, opt.sm_ack_every), 1, 1000000},
    {XCMD_SEC_SM, "ack_every_bytes", XCMD_T_USIZE,
     offsetof(xcmd_config, opt.sm_ack_every_bytes), XCMD_KIB, XCMD_GIB},
    {XCMD_SEC_SM, "ack_quiet", XCMD_T_MS,
     offsetof(xcmd_config, opt.sm_ack_quiet_ms), 10, XCMD_HOUR},
    {XCMD_SEC_SM, "resume", XCMD_T_MS, offsetof(xcmd_config, opt.sm_resume_ms),
     0, XCMD_DAY},
    {XCMD_SEC_SM, "ack_timeout", XCMD_T_MS,
     offsetof(xcmd_config, opt.sm_ack_timeout_ms), XCMD_SEC, XCMD_HOUR},

    {XCMD_SEC_CSI, "enable", XCMD_T_BOOL, offsetof(xcmd_config, opt.csi_enable),
     0, 0},
    {XCMD_SEC_CSI, "max_held", XCMD_T_UINT,
     offsetof(xcmd_config, opt.csi_max_held), 1, 100000},
    {XCMD_SEC_CSI, "max_held_bytes", XCMD_T_SIZE,
     offsetof(xcmd_config, opt.csi_max_held_bytes), XCMD_KIB, 16 * XCMD_MIB},
    {XCMD_SEC_CSI, "hold_ns", XCMD_T_STR,
     offsetof(xcmd_config, opt.csi_hold_ns), 0, 0},
    {XCMD_SEC_CSI, "urgent_ns", XCMD_T_STR,
     offsetof(xcmd_config, opt.csi_urgent_ns), 0, 0},
};

enum { XCMD_NKEYS = sizeof(xcmd_keys) / sizeof(xcmd_keys[0]) };
_Static_assert((int)XCMD_NKEYS <= (int)XCMD_MAX_KEYS, "raise XCMD_MAX_KEYS");

typedef struct xcmd_ini {
  xcmd_config *cfg;
  const char *name;
  char *err;
  size_t errlen;
  unsigned line;
  int section; /* -1 before the first header */
  unsigned section_line[XCMD_NSECTIONS];
  /* Where each key was set (0: not set). [listener] keys start over with
   * every listener. */
  unsigned key_line[XCMD_MAX_KEYS];
  unsigned listener_line[XCMD_MAX_LISTENERS];
  /* The keys set to XCMD_PLACEHOLDER, in the order of the file, each once
   * (a [listener] key may repeat). */
  int placeholder[XCMD_MAX_KEYS];
  unsigned nplaceholders;
  char value[XCMD_MAX_VALUE + 1];
} xcmd_ini;

static __attribute__((format(printf, 3, 4))) int
xcmd_ini_fail(xcmd_ini *st, unsigned line, const char *fmt, ...) {
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (line == 0)
    return xcmd_fail(st->err, st->errlen, "%s: %s", st->name, msg);
  return xcmd_fail(st->err, st->errlen, "%s:%u: %s", st->name, line, msg);
}

static __attribute__((format(printf, 4, 5))) int
xcmd_key_fail(xcmd_ini *st, unsigned line, int k, const char *fmt, ...) {
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return xcmd_ini_fail(st, line, "key '%s' in [%s]: %s", xcmd_keys[k].name,
                       xcmd_section_names[xcmd_keys[k].section], msg);
}

static int xcmd_key_index(int section, const char *name, size_t len) {
  int k;

  for (k = 0; k < XCMD_NKEYS; k++)
    if ((int)xcmd_keys[k].section == section &&
        strlen(xcmd_keys[k].name) == len &&
        memcmp(xcmd_keys[k].name, name, len) == 0)
      return k;
  return -1;
}

/* The index of a key the code names itself, which must exist. */
static int xcmd_known_key(int section, const char *name) {
  int k = xcmd_key_index(section, name, strlen(name));

  if (k < 0)
    abort();
  return k;
}

typedef struct xcmd_unit {
  const char *name;
  unsigned long long mult;
} xcmd_unit;

/* "256k", "8 KiB": digits, optional spaces, then one of the units.
 * Returns as xcmd_parse_digits. */
static int xcmd_parse_unit(const char *s, size_t len, const xcmd_unit *units,
                           size_t nunits, int any_case,
                           unsigned long long *out) {
  unsigned long long v;
  size_t digits = 0, ulen, u;
  const char *unit;
  int rc;

  while (digits < len && s[digits] >= '0' && s[digits] <= '9')
    digits++;
  unit = s + digits;
  ulen = len - digits;
  while (ulen > 0 && *unit == ' ') {
    unit++;
    ulen--;
  }
  for (u = 0; u < nunits; u++) {
    if (strlen(units[u].name) != ulen ||
        (any_case ? strncasecmp(units[u].name, unit, ulen)
                  : memcmp(units[u].name, unit, ulen)) != 0)
      continue;
    rc = xcmd_parse_digits(s, digits, &v);
    if (rc != 0)
      return rc;
    if (v > ULLONG_MAX / units[u].mult)
      return -2;
    *out = v * units[u].mult;
    return 0;
  }
  return -1;
}

/* Binary multiples throughout, whatever the spelling: memory is counted
 * in them, and nobody means 1000 bytes by "1k" in a limit. The first
 * spelling of each multiple is the one messages use. */
static const xcmd_unit xcmd_size_units[] = {
    {"", 1},           {"b", 1},         {"k", XCMD_KIB},  {"kb", XCMD_KIB},
    {"kib", XCMD_KIB}, {"m", XCMD_MIB},  {"mb", XCMD_MIB}, {"mib", XCMD_MIB},
    {"g", XCMD_GIB},   {"gb", XCMD_GIB}, {"gib", XCMD_GIB}};

static int xcmd_parse_size(const char *s, size_t len, unsigned long long *out) {
  return xcmd_parse_unit(s, len, xcmd_size_units,
                         sizeof(xcmd_size_units) / sizeof(xcmd_size_units[0]),
                         1, out);
}

/* The unit is required: a bare number would leave the reader guessing
 * between seconds and milliseconds. Lowercase only, so that "M" is not
 * read as minutes by someone who meant months or megabytes. */
static const xcmd_unit xcmd_ms_units[] = {{"ms", 1},
                                          {"s", XCMD_SEC},
                                          {"m", XCMD_MIN},
                                          {"h", XCMD_HOUR},
                                          {"d", XCMD_DAY}};

static int xcmd_parse_ms(const char *s, size_t len, unsigned long long *out) {
  return xcmd_parse_unit(s, len, xcmd_ms_units,
                         sizeof(xcmd_ms_units) / sizeof(xcmd_ms_units[0]), 0,
                         out);
}

/* The shortest spelling of v in the file's own units, for messages: the
 * largest multiple that divides it (for 0, the smallest). */
static const char *xcmd_fmt_unit(unsigned long long v, const xcmd_unit *units,
                                 size_t nunits, char *buf, size_t n) {
  const xcmd_unit *best = NULL;
  size_t u;

  for (u = 0; u < nunits; u++) {
    if (v == 0 ? units[u].mult != 1 : v % units[u].mult != 0)
      continue;
    if (best == NULL || units[u].mult > best->mult)
      best = &units[u];
  }
  snprintf(buf, n, "%llu%s", v / best->mult, best->name);
  return buf;
}

static const char *xcmd_fmt_size(unsigned long long v, char *buf, size_t n) {
  return xcmd_fmt_unit(v, xcmd_size_units,
                       sizeof(xcmd_size_units) / sizeof(xcmd_size_units[0]),
                       buf, n);
}

static const char *xcmd_fmt_ms(unsigned long long v, char *buf, size_t n) {
  return xcmd_fmt_unit(v, xcmd_ms_units,
                       sizeof(xcmd_ms_units) / sizeof(xcmd_ms_units[0]), buf,
                       n);
}

static int xcmd_parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"yes", "true", "on"};
  static const char *const no[] = {"no", "false", "off"};
  size_t i;

  for (i = 0; i < 3; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  }
  return -1;
}

/* Checks a number against the key's range; the message spells the bounds
 * in the key's own units. */
static int xcmd_ini_range(xcmd_ini *st, int k, int rc, unsigned long long v,
                          const char *shown) {
  const xcmd_key *key = &xcmd_keys[k];
  char lo[32], hi[32];

  if (rc == 0 && v >= key->min && v <= key->max)
    return 0;
  if (key->type == XCMD_T_SIZE || key->type == XCMD_T_USIZE) {
    xcmd_fmt_size(key->min, lo, sizeof(lo));
    xcmd_fmt_size(key->max, hi, sizeof(hi));
  } else if (key->type == XCMD_T_MS || key->type == XCMD_T_SEC) {
    xcmd_fmt_ms(key->min, lo, sizeof(lo));
    xcmd_fmt_ms(key->max, hi, sizeof(hi));
  } else {
    snprintf(lo, sizeof(lo), "%llu", key->min);
    snprintf(hi, sizeof(hi), "%llu", key->max);
  }
  return xcmd_key_fail(st, st->line, k, "'%s' is out of range (%s to %s)",
                       shown, lo, hi);
}

/* Limits that "unlimited" switches off (XCM_UNLIMITED in xcm.h); all are
 * unsigned fields of xcm_options, or of xcm_listen_options for an HTTP
 * listener's connection limits. */
static int xcmd_may_be_unlimited(const xcmd_key *key) {
  static const char *const names[] = {"max_clients",    "max_per_address",
                                      "header_timeout", "auth_timeout",
                                      "idle_timeout",   "rate",
                                      "rate_bytes"};
  static const char *const sm_names[] = {"max_unacked", "ack_every",
                                         "ack_every_bytes", "ack_quiet",
                                         "ack_timeout"};
  size_t i;

  if (key->section == XCMD_SEC_LISTENER)
    return strcmp(key->name, "http_max_connections") == 0 ||
           strcmp(key->name, "http_max_per_address") == 0 ||
           strcmp(key->name, "bosh_max_per_address") == 0;
  if (key->section == XCMD_SEC_SM) {
    for (i = 0; i < sizeof(sm_names) / sizeof(sm_names[0]); i++)
      if (strcmp(key->name, sm_names[i]) == 0)
        return 1;
    return 0;
  }
  if (key->section != XCMD_SEC_LIMITS)
    return 0;
  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strcmp(key->name, names[i]) == 0)
      return 1;
  return 0;
}

static int xcmd_ini_apply(xcmd_ini *st, int k, const char *v, size_t len) {
  static const char *const levels[] = {"error", "warn", "info", "debug"};
  const xcmd_key *key = &xcmd_keys[k];
  char *base, shown[64];
  unsigned long long n = 0;
  char *s;
  int rc, b;
  size_t i;

  base = key->section == XCMD_SEC_LISTENER
             ? (char *)&st->cfg->listeners[st->cfg->nlisteners - 1]
             : (char *)st->cfg;
  base += key->off;
  xcmd_show(v, len, shown, sizeof(shown));
  if (xcmd_may_be_unlimited(key) && strcmp(v, "unlimited") == 0) {
    *(unsigned *)(void *)base = XCM_UNLIMITED;
    return 0;
  }
  if (xcmd_may_be_unlimited(key) && strcmp(v, "0") == 0)
    return xcmd_key_fail(st, st->line, k,
                         "'0' is not a limit: write 'unlimited' to switch "
                         "it off");
  switch (key->type) {
  case XCMD_T_STR:
    s = xcmd_own(st->cfg, v, len);
    if (s == NULL)
      return XCM_ENOMEM;
    *(const char **)(void *)base = s;
    if (strcmp(v, XCMD_PLACEHOLDER) == 0) {
      for (i = 0; i < st->nplaceholders && st->placeholder[i] != k; i++)
        ;
      if (i == st->nplaceholders)
        st->placeholder[st->nplaceholders++] = k;
    }
    return 0;
  case XCMD_T_UINT:
  case XCMD_T_PORT:
    rc = xcmd_parse_digits(v, len, &n);
    if (rc == -1)
      return xcmd_key_fail(st, st->line, k, "'%s' is not a number", shown);
    if ((rc = xcmd_ini_range(st, k, rc, n, shown)) != 0)
      return rc;
    if (key->type == XCMD_T_PORT)
      *(int *)(void *)base = (int)n;
    else
      *(unsigned *)(void *)base = (unsigned)n;
    return 0;
  case XCMD_T_SIZE:
  case XCMD_T_USIZE:
    rc = xcmd_parse_size(v, len, &n);
    if (rc == -1)
      return xcmd_key_fail(st, st->line, k,
                           "'%s' is not a size (use e.g. 8k, 256k, 1m)", shown);
    if ((rc = xcmd_ini_range(st, k, rc, n, shown)) != 0)
      return rc;
    if (key->type == XCMD_T_USIZE)
      *(unsigned *)(void *)base = (unsigned)n;
    else
      *(size_t *)(void *)base = (size_t)n;
    return 0;
  case XCMD_T_MS:
    rc = xcmd_parse_ms(v, len, &n);
    if (rc == -1)
      return xcmd_key_fail(st, st->line, k,
                           "'%s' is not a duration (use e.g. 30s, 5m)", shown);
    if ((rc = xcmd_ini_range(st, k, rc, n, shown)) != 0)
      return rc;
    *(unsigned *)(void *)base = (unsigned)n;
    return 0;
  case XCMD_T_SEC:
    rc = xcmd_parse_ms(v, len, &n);
    if (rc == -1 || (rc == 0 && n % XCMD_SEC != 0))
      return xcmd_key_fail(st, st->line, k,
                           "'%s' is not a whole number of seconds (use e.g. "
                           "30s, 2m)",
                           shown);
    if ((rc = xcmd_ini_range(st, k, rc, n, shown)) != 0)
      return rc;
    *(unsigned *)(void *)base = (unsigned)(n / XCMD_SEC);
    return 0;
  case XCMD_T_BOOL:
    if (xcmd_parse_bool(v, &b) != 0)
      return xcmd_key_fail(st, st->line, k,
                           "'%s' is not a boolean (use yes or no)", shown);
    *(int *)(void *)base = b;
    return 0;
  case XCMD_T_LEVEL:
    for (i = 0; i < 4; i++) {
      if (strcmp(v, levels[i]) == 0) {
        /* XCM_LOG_ERROR is 1, and the others follow in this order. */
        *(int *)(void *)base = XCM_LOG_ERROR + (int)i;
        return 0;
      }
    }
    return xcmd_key_fail(st, st->line, k,
                         "'%s' is not a level (use error, warn, info or debug)",
                         shown);
  case XCMD_T_TARGET:
    if (strcmp(v, "stderr") == 0)
      *(xcmd_log_target *)(void *)base = XCMD_LOG_STDERR;
    else if (strcmp(v, "syslog") == 0)
      *(xcmd_log_target *)(void *)base = XCMD_LOG_SYSLOG;
    else
      return xcmd_key_fail(st, st->line, k,
                           "'%s' is not a log target (use stderr or syslog)",
                           shown);
    return 0;
  case XCMD_T_TLS:
    if (strcmp(v, "off") == 0)
      *(xcm_upstream_tls *)(void *)base = XCM_UPSTREAM_TLS_OFF;
    else if (strcmp(v, "optional") == 0)
      *(xcm_upstream_tls *)(void *)base = XCM_UPSTREAM_TLS_OPTIONAL;
    else if (strcmp(v, "required") == 0)
      *(xcm_upstream_tls *)(void *)base = XCM_UPSTREAM_TLS_REQUIRED;
    else
      return xcmd_key_fail(
          st, st->line, k,
          "'%s' is not a TLS mode (use off, optional or required)", shown);
    return 0;
  }
  abort();
}

static int xcmd_is_blank(char c) {
  return c == ' ' || c == '\t';
}

/* The value part of "key = value": quoted, with \" and \\ as the only
 * escapes, or bare up to a '#' that follows white space. */
static int xcmd_ini_value(xcmd_ini *st, int k, const char *s, size_t n,
                          size_t *outlen) {
  size_t i = 0, o = 0;

  if (n > 0 && s[0] == '"') {
    for (i = 1; i < n && s[i] != '"'; i++) {
      char c = s[i];
      if (c == '\\') {
        if (i + 1 == n || (s[i + 1] != '"' && s[i + 1] != '\\'))
          return xcmd_key_fail(st, st->line, k,
                               "unknown escape in a quoted value (only \\\" "
                               "and \\\\)");
        c = s[++i];
      }
      if (o == XCMD_MAX_VALUE)
        return xcmd_key_fail(st, st->line, k, "value longer than %d bytes",
                             XCMD_MAX_VALUE);
      st->value[o++] = c;
    }
    if (i == n)
      return xcmd_key_fail(st, st->line, k, "unterminated quoted value");
    for (i++; i < n && xcmd_is_blank(s[i]); i++)
      ;
    if (i < n && s[i] != '#')
      return xcmd_key_fail(st, st->line, k, "text after the closing quote");
  } else {
    for (i = 0; i < n; i++)
      if (s[i] == '#' && (i == 0 || xcmd_is_blank(s[i - 1])))
        break;
    while (i > 0 && xcmd_is_blank(s[i - 1]))
      i--;
    if (i > XCMD_MAX_VALUE)
      return xcmd_key_fail(st, st->line, k, "value longer than %d bytes",
                           XCMD_MAX_VALUE);
    memcpy(st->value, s, i);
    o = i;
  }
  st->value[o] = '\0';
  if (o == 0)
    return xcmd_key_fail(st, st->line, k, "no value");
  *outlen = o;
  return 0;
}

static int xcmd_is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

static int xcmd_ini_key(xcmd_ini *st, const char *s, size_t n) {
  char shown[64];
  size_t klen = 0, i, vlen = 0;
  int k, rc;

  while (klen < n && xcmd_is_key_char(s[klen]))
    klen++;
  for (i = klen; i < n && xcmd_is_blank(s[i]); i++)
    ;
  if (klen == 0 || i == n || s[i] != '=')
    return xcmd_ini_fail(st, st->line, "expected 'key = value' or '[section]'");
  xcmd_show(s, klen, shown, sizeof(shown));
  if (st->section < 0)
    return xcmd_ini_fail(st, st->line, "key '%s' before any [section]", shown);
  k = xcmd_key_index(st->section, s, klen);
  if (k < 0)
    return xcmd_ini_fail(st, st->line, "unknown key '%s' in [%s]", shown,
                         xcmd_section_names[st->section]);
  if (st->key_line[k] != 0)
    return xcmd_key_fail(st, st->line, k, "already set on line %u",
                         st->key_line[k]);
  for (i++; i < n && xcmd_is_blank(s[i]); i++)
    ;
  if ((rc = xcmd_ini_value(st, k, s + i, n - i, &vlen)) != 0)
    return rc;
  if ((rc = xcmd_ini_apply(st, k, st->value, vlen)) != 0)
    return rc;
  st->key_line[k] = st->line;
  return 0;
}

static unsigned xcmd_line_of(const xcmd_ini *st, int section,
                             const char *name) {
  return st->key_line[xcmd_known_key(section, name)];
}

/* proxy_trusted: libxcm's own check of the list (xcm_listen_options_check
 * names the bad entry), and both ways with proxy_protocol. */
static int xcmd_listener_trusted(xcmd_ini *st, const xcm_listen_options *lo) {
  static const char field[] = "xcm_listen_options.proxy_trusted: ";
  unsigned proxy_line = xcmd_line_of(st, XCMD_SEC_LISTENER, "proxy_protocol");
  unsigned trusted_line = xcmd_line_of(st, XCMD_SEC_LISTENER, "proxy_trusted");
  int trusted_key = xcmd_known_key(XCMD_SEC_LISTENER, "proxy_trusted");
  xcm_listen_options check;
  char why[256];

  if (trusted_line != 0) {
    xcm_listen_options_init(&check, sizeof check);
    check.proxy_protocol = 1;
    check.proxy_trusted = lo->proxy_trusted;
    if (xcm_listen_options_check(&check, why, sizeof why) != 0)
      return xcmd_key_fail(st, trusted_line, trusted_key, "%s",
                           strncmp(why, field, sizeof field - 1) == 0
                               ? why + sizeof field - 1
                               : why);
  }
  if (lo->proxy_protocol && trusted_line == 0)
    return xcmd_key_fail(st, proxy_line,
                         xcmd_known_key(XCMD_SEC_LISTENER, "proxy_protocol"),
                         "needs 'proxy_trusted', the load balancers' addresses "
                         "(e.g. proxy_trusted = 10.0.0.5, fd00::/8)");
  if (!lo->proxy_protocol && trusted_line != 0)
    return xcmd_key_fail(st, trusted_line, trusted_key,
                         "set without 'proxy_protocol = yes'");
  return 0;
}

/* The http_* keys mean something only with http = yes; an HTTP
 * listener with a certificate is HTTPS from the first byte, so
 * direct_tls has nothing to add there. */
static int xcmd_listener_http(xcmd_ini *st, const xcm_listen_options *lo) {
  static const char *const http_keys[] = {"http_bosh_path",
                                          "http_ws_paths",
                                          "http_origins",
                                          "http_public_url",
                                          "http_max_header",
                                          "http_max_body",
                                          "http_max_connections",
                                          "http_max_per_address",
                                          "http_header_timeout",
                                          "http_idle_timeout",
                                          "bosh_wait",
                                          "bosh_hold",
                                          "bosh_requests",
                                          "bosh_inactivity",
                                          "bosh_polling",
                                          "bosh_maxpause",
                                          "bosh_max_per_address"};
  unsigned i, line;

  if (lo->http) {
    line = xcmd_line_of(st, XCMD_SEC_LISTENER, "direct_tls");
    if (lo->direct_tls)
      return xcmd_key_fail(st, line,
                           xcmd_known_key(XCMD_SEC_LISTENER, "direct_tls"),
                           "an HTTP listener with 'cert' is HTTPS from the "
                           "first byte: leave direct_tls out");
    return 0;
  }
  for (i = 0; i < sizeof http_keys / sizeof http_keys[0]; i++)
    if ((line = xcmd_line_of(st, XCMD_SEC_LISTENER, http_keys[i])) != 0)
      return xcmd_key_fail(st, line,
                           xcmd_known_key(XCMD_SEC_LISTENER, http_keys[i]),
                           "set without 'http = yes'");
  return 0;
}

/* Checks that need a listener's every key, run when its section ends. */
static int xcmd_listener_done(xcmd_ini *st) {
  unsigned i = st->cfg->nlisteners - 1, j;
  xcm_listen_options *lo = &st->cfg->listeners[i];
  unsigned cert_line = xcmd_line_of(st, XCMD_SEC_LISTENER, "cert");
  unsigned key_line = xcmd_line_of(st, XCMD_SEC_LISTENER, "key");
  unsigned tls_line = xcmd_line_of(st, XCMD_SEC_LISTENER, "direct_tls");
  char shown[64];
  int rc;

  if (cert_line != 0 && key_line == 0)
    return xcmd_key_fail(st, cert_line,
                         xcmd_known_key(XCMD_SEC_LISTENER, "cert"),
                         "set without 'key'");
  if (key_line != 0 && cert_line == 0)
    return xcmd_key_fail(st, key_line, xcmd_known_key(XCMD_SEC_LISTENER, "key"),
                         "set without 'cert'");
  if (lo->direct_tls && cert_line == 0)
    return xcmd_key_fail(st, tls_line,
                         xcmd_known_key(XCMD_SEC_LISTENER, "direct_tls"),
                         "needs 'cert' and 'key'");
  if ((rc = xcmd_listener_trusted(st, lo)) != 0)
    return rc;
  if ((rc = xcmd_listener_http(st, lo)) != 0)
    return rc;
  if (lo->port == 0 && lo->http)
    lo->port = cert_line != 0 ? 5281 : 5280; /* Prosody's, as clients know */
  if (lo->port == 0)
    lo->port = lo->direct_tls ? 5223 : 5222;
  /* Only the spelling is compared: 0.0.0.0 against 127.0.0.1 on one port
   * is left for bind() to refuse. */
  for (j = 0; j < i; j++)
    if (st->cfg->listeners[j].port == lo->port &&
        strcmp(st->cfg->listeners[j].host, lo->host) == 0)
      return xcmd_ini_fail(
          st, st->listener_line[i],
          "[listener] %s port %d is already used by the [listener] on line %u",
          xcmd_show(lo->host, strlen(lo->host), shown, sizeof(shown)), lo->port,
          st->listener_line[j]);
  return 0;
}

static int xcmd_ini_section(xcmd_ini *st, const char *s, size_t n) {
  const char *close = memchr(s, ']', n), *name;
  size_t i, len;
  char shown[64];
  int sec, rc, k;

  if (close == NULL)
    return xcmd_ini_fail(st, st->line, "malformed section header (use [name])");
  for (i = (size_t)(close - s) + 1; i < n && xcmd_is_blank(s[i]); i++)
    ;
  if (i < n && s[i] != '#')
    return xcmd_ini_fail(st, st->line, "malformed section header (use [name])");
  name = s + 1;
  len = (size_t)(close - name);
  while (len > 0 && xcmd_is_blank(*name)) {
    name++;
    len--;
  }
  while (len > 0 && xcmd_is_blank(name[len - 1]))
    len--;
  for (sec = 0; sec < XCMD_NSECTIONS; sec++)
    if (strlen(xcmd_section_names[sec]) == len &&
        memcmp(xcmd_section_names[sec], name, len) == 0)
      break;
  if (sec == XCMD_NSECTIONS)
    return xcmd_ini_fail(st, st->line, "unknown section [%s]",
                         xcmd_show(name, len, shown, sizeof(shown)));
  if (st->section == XCMD_SEC_LISTENER && (rc = xcmd_listener_done(st)) != 0)
    return rc;
  if (sec != XCMD_SEC_LISTENER && st->section_line[sec] != 0)
    return xcmd_ini_fail(st, st->line,
                         "section [%s] appears twice (first on line %u; only "
                         "[listener] repeats)",
                         xcmd_section_names[sec], st->section_line[sec]);
  if (sec == XCMD_SEC_LISTENER) {
    if (st->cfg->nlisteners == XCMD_MAX_LISTENERS)
      return xcmd_ini_fail(st, st->line, "more than %d [listener] sections",
                           XCMD_MAX_LISTENERS);
    xcmd_default_listener(&st->cfg->listeners[st->cfg->nlisteners]);
    st->listener_line[st->cfg->nlisteners++] = st->line;
    for (k = 0; k < XCMD_NKEYS; k++)
      if (xcmd_keys[k].section == XCMD_SEC_LISTENER)
        st->key_line[k] = 0;
  }
  st->section_line[sec] = st->line;
  st->section = sec;
  return 0;
}

static int xcmd_ini_line(xcmd_ini *st, const char *s, size_t n) {
  size_t i;

  /* Control bytes have no business in a configuration and are mostly a
   * sign of a binary or mangled file; a lone CR is one of them. */
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return xcmd_ini_fail(st, st->line, "control character (byte 0x%02x)", c);
  }
  while (n > 0 && xcmd_is_blank(*s)) {
    s++;
    n--;
  }
  while (n > 0 && xcmd_is_blank(s[n - 1]))
    n--;
  if (n == 0 || s[0] == '#')
    return 0;
  if (s[0] == '[')
    return xcmd_ini_section(st, s, n);
  return xcmd_ini_key(st, s, n);
}

/* What the operator should put where a packaged file says CHANGE-ME. */
static const char *xcmd_placeholder_hint(const xcmd_key *key) {
  if (key->section == XCMD_SEC_SERVER && strcmp(key->name, "domain") == 0)
    return "your XMPP domain";
  if (key->section != XCMD_SEC_UPSTREAM)
    return NULL;
  if (strcmp(key->name, "host") == 0)
    return "your Openfire's address";
  if (strcmp(key->name, "servers") == 0)
    return "your Openfire cluster's nodes (host:port, host:port)";
  if (strcmp(key->name, "name") == 0)
    return "a name for this CM that no other CM of your Openfire uses";
  if (strcmp(key->name, "secret") == 0)
    return "your Openfire's connection-manager secret "
           "(xmpp.multiplex.defaultSecret)";
  return NULL;
}

/* ", " between items, " and " before the last. */
static const char *xcmd_list_sep(unsigned i, unsigned n) {
  return i == 0 ? "" : i + 1 == n ? " and " : ", ";
}

/* One line naming every key still at XCMD_PLACEHOLDER and what goes
 * there: "[upstream] host and [upstream] secret are still the
 * placeholders from the package (CHANGE-ME): set them to ...". */
static int xcmd_placeholder_fail(xcmd_ini *st) {
  char msg[1024];
  size_t at = 0;
  unsigned i, n = st->nplaceholders;
  const char *hint;

#define XCMD_ADD(...)                                                          \
  do {                                                                         \
    if (at < sizeof(msg))                                                      \
      at += (size_t)snprintf(msg + at, sizeof(msg) - at, __VA_ARGS__);         \
  } while (0)
  for (i = 0; i < n; i++) {
    const xcmd_key *key = &xcmd_keys[st->placeholder[i]];
    XCMD_ADD("%s[%s] %s", xcmd_list_sep(i, n), xcmd_section_names[key->section],
             key->name);
  }
  XCMD_ADD(" %s still the placeholder%s from the package (%s): set %s to ",
           n == 1 ? "is" : "are", n == 1 ? "" : "s", XCMD_PLACEHOLDER,
           n == 1 ? "it" : "them");
  for (i = 0; i < n; i++) {
    const xcmd_key *key = &xcmd_keys[st->placeholder[i]];
    hint = xcmd_placeholder_hint(key);
    if (hint != NULL)
      XCMD_ADD("%s%s", xcmd_list_sep(i, n), hint);
    else
      XCMD_ADD("%syour value for [%s] %s", xcmd_list_sep(i, n),
               xcmd_section_names[key->section], key->name);
  }
#undef XCMD_ADD
  xcmd_fail(st->err, st->errlen, "%s: %s", st->name, msg);
  return XCMD_EPLACEHOLDER;
}

/* servers: the nodes of a cluster, instead of host and port (not beside
 * them: one place names the upstream), read as libxcm reads it. */
static int xcmd_ini_servers(xcmd_ini *st) {
  static const char field[] = "xcm_options.upstream_servers: ";
  unsigned line = xcmd_line_of(st, XCMD_SEC_UPSTREAM, "servers");
  unsigned host = xcmd_line_of(st, XCMD_SEC_UPSTREAM, "host");
  unsigned port = xcmd_line_of(st, XCMD_SEC_UPSTREAM, "port");
  int k = xcmd_known_key(XCMD_SEC_UPSTREAM, "servers");
  const xcm_options *o = &st->cfg->opt;
  xcm_options check;
  char why[512];

  if (line == 0)
    return 0;
  if (host != 0 || port != 0)
    return xcmd_key_fail(st, line, k,
                         "cannot be set with '%s' (line %u): list every node "
                         "in servers, as host:port, and remove host and port",
                         host != 0 ? "host" : "port", host != 0 ? host : port);
  if (strcmp(o->upstream_servers, XCMD_PLACEHOLDER) == 0)
    return 0; /* reported with the other placeholders */
  xcm_options_init(&check, sizeof check);
  check.domain = "example.com";
  check.name = "cm";
  check.secret = "secret";
  check.upstream_servers = o->upstream_servers;
  check.connections = o->connections;
  if (xcm_options_check(&check, why, sizeof why) != 0)
    return xcmd_key_fail(st, line, k, "%s",
                         strncmp(why, field, sizeof field - 1) == 0
                             ? why + sizeof field - 1
                             : why);
  return 0;
}

/* [csi] hold_ns and urgent_ns, read as libxcm reads them; an error
 * names the key whose list it is about. */
static int xcmd_ini_csi(xcmd_ini *st) {
  static const char hold[] = "xcm_options.csi_hold_ns: ";
  static const char urgent[] = "xcm_options.csi_urgent_ns: ";
  const xcm_options *o = &st->cfg->opt;
  xcm_options check;
  const char *key = "hold_ns", *msg;
  char why[512];

  if (o->csi_hold_ns == NULL && o->csi_urgent_ns == NULL)
    return 0;
  if ((o->csi_hold_ns != NULL &&
       strcmp(o->csi_hold_ns, XCMD_PLACEHOLDER) == 0) ||
      (o->csi_urgent_ns != NULL &&
       strcmp(o->csi_urgent_ns, XCMD_PLACEHOLDER) == 0))
    return 0; /* reported with the other placeholders */
  xcm_options_init(&check, sizeof check);
  check.domain = "example.com";
  check.name = "cm";
  check.secret = "secret";
  check.csi_hold_ns = o->csi_hold_ns;
  check.csi_urgent_ns = o->csi_urgent_ns;
  if (xcm_options_check(&check, why, sizeof why) == 0)
    return 0;
  msg = why;
  if (strncmp(why, hold, sizeof hold - 1) == 0) {
    msg = why + sizeof hold - 1;
  } else if (strncmp(why, urgent, sizeof urgent - 1) == 0) {
    msg = why + sizeof urgent - 1;
    key = "urgent_ns";
  }
  return xcmd_key_fail(st, xcmd_line_of(st, XCMD_SEC_CSI, key),
                       xcmd_known_key(XCMD_SEC_CSI, key), "%s", msg);
}

/* Checks across keys, once the whole file is read. */
static int xcmd_ini_finish(xcmd_ini *st) {
  xcmd_config *cfg = st->cfg;
  xcm_options *o = &cfg->opt;
  char a[32], b[32];
  unsigned line;
  int rc;

  if (o->domain == NULL)
    return xcmd_ini_fail(st, 0, "key 'domain' in [server] is required");
  if (o->name == NULL)
    return xcmd_ini_fail(st, 0, "key 'name' in [upstream] is required");
  if (o->secret == NULL)
    return xcmd_ini_fail(st, 0, "key 'secret' in [upstream] is required");
  if (cfg->nlisteners == 0)
    return xcmd_ini_fail(st, 0, "at least one [listener] is required");
  if ((rc = xcmd_ini_servers(st)) != 0)
    return rc;
  if ((rc = xcmd_ini_csi(st)) != 0)
    return rc;
  if (o->max_stanza_preauth > o->max_stanza) {
    xcmd_fmt_size(o->max_stanza_preauth, a, sizeof(a));
    xcmd_fmt_size(o->max_stanza, b, sizeof(b));
    line = xcmd_line_of(st, XCMD_SEC_LIMITS, "max_stanza_preauth");
    if (line != 0)
      return xcmd_key_fail(
          st, line, xcmd_known_key(XCMD_SEC_LIMITS, "max_stanza_preauth"),
          "%s is larger than max_stanza (%s)", a, b);
    return xcmd_key_fail(st, xcmd_line_of(st, XCMD_SEC_LIMITS, "max_stanza"),
                         xcmd_known_key(XCMD_SEC_LIMITS, "max_stanza"),
                         "%s is smaller than max_stanza_preauth (%s)", b, a);
  }
  if (o->dead_after_ms <= o->keepalive_ms) {
    xcmd_fmt_ms(o->keepalive_ms, a, sizeof(a));
    xcmd_fmt_ms(o->dead_after_ms, b, sizeof(b));
    line = xcmd_line_of(st, XCMD_SEC_UPSTREAM, "dead_after");
    if (line != 0)
      return xcmd_key_fail(st, line,
                           xcmd_known_key(XCMD_SEC_UPSTREAM, "dead_after"),
                           "%s must be longer than keepalive (%s)", b, a);
    return xcmd_key_fail(st, xcmd_line_of(st, XCMD_SEC_UPSTREAM, "keepalive"),
                         xcmd_known_key(XCMD_SEC_UPSTREAM, "keepalive"),
                         "%s must be shorter than dead_after (%s)", a, b);
  }
  if ((line = xcmd_line_of(st, XCMD_SEC_UPSTREAM, "fingerprint")) != 0) {
    int k = xcmd_known_key(XCMD_SEC_UPSTREAM, "fingerprint");
    char shown[128]; /* a whole fingerprint with colons, and more */

    if (!xcmd_fingerprint_ok(o->upstream_fingerprint))
      return xcmd_key_fail(
          st, line, k,
          "'%s' is not a SHA-256 fingerprint (" XCMD_FINGERPRINT_FORM ")",
          xcmd_show(o->upstream_fingerprint, strlen(o->upstream_fingerprint),
                    shown, sizeof(shown)));
    if (o->upstream_accept_self_signed)
      return xcmd_key_fail(st, line, k,
                           "cannot be set with accept_self_signed = yes (a "
                           "pin trusts one certificate; accept_self_signed "
                           "any): set one of them");
    if (o->upstream_ca_file != NULL)
      return xcmd_key_fail(st, line, k,
                           "cannot be set with ca_file (the pin replaces the "
                           "CA): set one of them");
    if (o->upstream_tls == XCM_UPSTREAM_TLS_OFF)
      return xcmd_key_fail(st, line, k,
                           "needs TLS, and tls is off (with a fingerprint, "
                           "TLS is required)");
  }
  if (cfg->log_bodies && cfg->log_level != XCM_LOG_DEBUG)
    return xcmd_key_fail(st, xcmd_line_of(st, XCMD_SEC_LOG, "bodies"),
                         xcmd_known_key(XCMD_SEC_LOG, "bodies"),
                         "needs level = debug");
  if (cfg->metrics_host != NULL && cfg->metrics_port == 0)
    return xcmd_key_fail(st, xcmd_line_of(st, XCMD_SEC_METRICS, "host"),
                         xcmd_known_key(XCMD_SEC_METRICS, "host"),
                         "set without 'port'");
  if (cfg->metrics_port != 0 && cfg->metrics_host == NULL)
    cfg->metrics_host = "127.0.0.1";
  o->log_level = cfg->log_level;
  /* Last: the file is valid otherwise, only the operator's values are
   * missing. */
  if (st->nplaceholders > 0)
    return xcmd_placeholder_fail(st);
  return 0;
}

static int xcmd_ini_parse(xcmd_ini *st, const char *text, size_t len) {
  const char *p = text, *end = text + len;
  int rc;

  if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
    p += 3;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *q = eol != NULL ? eol : end;

    st->line++;
    /* CRLF files from Windows editors read like LF ones. */
    if (q > p && q[-1] == '\r')
      q--;
    if ((rc = xcmd_ini_line(st, p, (size_t)(q - p))) != 0)
      return rc;
    p = eol != NULL ? eol + 1 : end;
  }
  if (st->section == XCMD_SEC_LISTENER && (rc = xcmd_listener_done(st)) != 0)
    return rc;
  return xcmd_ini_finish(st);
}

/* Both formats start from the defaults and an empty message ... */
static void xcmd_parse_begin(xcmd_config *out, char *err, size_t errlen) {
  xcmd_defaults(out);
  if (err != NULL && errlen > 0)
    err[0] = '\0';
}

/* ... and end the same way: on failure nothing is left in out. */
static int xcmd_parse_end(int rc, const char *name_for_errors, xcmd_config *out,
                          char *err, size_t errlen) {
  if (rc == XCM_ENOMEM)
    xcmd_fail(err, errlen, "%s: out of memory", name_for_errors);
  if (rc != 0)
    xcmd_config_free(out);
  return rc;
}

int xcmd_config_parse(const char *text, size_t len, const char *name_for_errors,
                      xcmd_config *out, char *err, size_t errlen) {
  xcmd_ini *st;
  int rc;

  xcmd_parse_begin(out, err, errlen);
  /* The state holds a value buffer too big to put on a worker's stack. */
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    return XCM_ENOMEM;
  st->cfg = out;
  st->name = name_for_errors;
  st->err = err;
  st->errlen = errlen;
  st->section = -1;
  rc = xcmd_ini_parse(st, text, len);
  free(st);
  return xcmd_parse_end(rc, name_for_errors, out, err, errlen);
}

/* ---- manager.xml --------------------------------------------------------
 *
 * The Java CM kept its settings as a tree under <jive>: the property
 * "xmpp.socket.ssl.port" is <jive><xmpp><socket><ssl><port>. The parse
 * flattens the tree to such names (one per element with text), then the
 * mapping takes the properties it knows and warns about the rest. */

typedef struct xcmd_prop {
  char *name;
  char *value;
  unsigned line;
  int used;
} xcmd_prop;

typedef struct xcmd_warn {
  unsigned line;
  char *text;
} xcmd_warn;

typedef struct xcmd_xml {
  XML_Parser parser;
  xcmd_config *cfg;
  const char *name;
  char *err;
  size_t errlen;
  int rc;

  /* The element stack: the length of each element's property name in
   * path, where its text starts in text, and its line. */
  unsigned depth;
  size_t path_len[XCMD_XML_DEPTH];
  size_t text_at[XCMD_XML_DEPTH];
  unsigned line_at[XCMD_XML_DEPTH];
  char path[XCMD_XML_PATH + 1];
  /* Character data of the open elements, innermost last: an element's end
   * pops its own text, so its parent's continues where it left off. */
  char *text;
  size_t text_len, text_cap;

  xcmd_prop *props;
  unsigned nprops, props_cap;
  xcmd_warn *warns;
  unsigned nwarns, warns_cap;
} xcmd_xml;

static __attribute__((format(printf, 3, 4))) int
xcmd_xml_fail(xcmd_xml *st, unsigned line, const char *fmt, ...) {
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (line == 0)
    st->rc = xcmd_fail(st->err, st->errlen, "%s: %s", st->name, msg);
  else
    st->rc = xcmd_fail(st->err, st->errlen, "%s:%u: %s", st->name, line, msg);
  return st->rc;
}

/* Inside an expat callback: record the failure and stop the parse. */
static void xcmd_xml_stop(xcmd_xml *st, int rc) {
  st->rc = rc;
  XML_StopParser(st->parser, XML_FALSE);
}

static unsigned xcmd_xml_line(xcmd_xml *st) {
  return (unsigned)XML_GetCurrentLineNumber(st->parser);
}

static __attribute__((format(printf, 3, 4))) int
xcmd_xml_warn(xcmd_xml *st, unsigned line, const char *fmt, ...) {
  char msg[512], full[1024];
  va_list ap;
  size_t len;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (line == 0)
    snprintf(full, sizeof(full), "%s: %s", st->name, msg);
  else
    snprintf(full, sizeof(full), "%s:%u: %s", st->name, line, msg);
  if (st->nwarns == st->warns_cap) {
    unsigned cap = st->warns_cap ? st->warns_cap * 2 : 8;
    xcmd_warn *v = realloc(st->warns, cap * sizeof(*v));
    if (v == NULL)
      return XCM_ENOMEM;
    st->warns = v;
    st->warns_cap = cap;
  }
  len = strlen(full);
  st->warns[st->nwarns].text = malloc(len + 1);
  if (st->warns[st->nwarns].text == NULL)
    return XCM_ENOMEM;
  memcpy(st->warns[st->nwarns].text, full, len + 1);
  st->warns[st->nwarns++].line = line;
  return 0;
}

static int xcmd_xml_add(xcmd_xml *st, const char *value, size_t vlen,
                        unsigned line) {
  size_t plen = st->path_len[st->depth];
  unsigned i;

  for (i = 0; i < st->nprops; i++) {
    if (strlen(st->props[i].name) == plen &&
        memcmp(st->props[i].name, st->path, plen) == 0) {
      /* Java's XMLProperties reads the first element of a name. */
      char shown[64];
      return xcmd_xml_warn(st, line,
                           "%s: set again (first on line %u); the first value "
                           "is used, as the Java CM did",
                           xcmd_show(st->path, plen, shown, sizeof(shown)),
                           st->props[i].line);
    }
  }
  if (st->nprops == XCMD_XML_PROPS)
    return xcmd_xml_fail(st, line, "more than %d properties", XCMD_XML_PROPS);
  if (st->nprops == st->props_cap) {
    unsigned cap = st->props_cap ? st->props_cap * 2 : 32;
    xcmd_prop *v = realloc(st->props, cap * sizeof(*v));
    if (v == NULL)
      return XCM_ENOMEM;
    st->props = v;
    st->props_cap = cap;
  }
  st->props[st->nprops].name = malloc(plen + 1);
  st->props[st->nprops].value = malloc(vlen + 1);
  if (st->props[st->nprops].name == NULL ||
      st->props[st->nprops].value == NULL) {
    free(st->props[st->nprops].name);
    free(st->props[st->nprops].value);
    return XCM_ENOMEM;
  }
  memcpy(st->props[st->nprops].name, st->path, plen);
  st->props[st->nprops].name[plen] = '\0';
  memcpy(st->props[st->nprops].value, value, vlen);
  st->props[st->nprops].value[vlen] = '\0';
  st->props[st->nprops].line = line;
  st->props[st->nprops++].used = 0;
  return 0;
}

static void XMLCALL xcmd_xml_start(void *ud, const XML_Char *name,
                                   const XML_Char **attrs) {
  xcmd_xml *st = ud;
  size_t parent, len = strlen(name), at;
  char shown[64];

  (void)attrs;
  if (st->rc != 0)
    return;
  if (st->depth == 0 && strcmp(name, "jive") != 0) {
    xcmd_xml_fail(st, xcmd_xml_line(st),
                  "the root element is <%s>, not <jive>: not a manager.xml",
                  xcmd_show(name, len, shown, sizeof(shown)));
    xcmd_xml_stop(st, st->rc);
    return;
  }
  if (st->depth == XCMD_XML_DEPTH) {
    xcmd_xml_fail(st, xcmd_xml_line(st), "elements nest deeper than %d",
                  XCMD_XML_DEPTH);
    xcmd_xml_stop(st, st->rc);
    return;
  }
  if (st->depth == 0) {
    st->path_len[0] = 0; /* <jive> itself is no part of the names */
  } else {
    parent = st->path_len[st->depth - 1];
    at = parent > 0 ? parent + 1 : 0;
    if (at + len > XCMD_XML_PATH) {
      xcmd_xml_fail(st, xcmd_xml_line(st), "property name longer than %d bytes",
                    XCMD_XML_PATH);
      xcmd_xml_stop(st, st->rc);
      return;
    }
    if (parent > 0)
      st->path[parent] = '.';
    memcpy(st->path + at, name, len);
    st->path_len[st->depth] = at + len;
  }
  st->text_at[st->depth] = st->text_len;
  st->line_at[st->depth] = xcmd_xml_line(st);
  st->depth++;
}

static void XMLCALL xcmd_xml_end(void *ud, const XML_Char *name) {
  xcmd_xml *st = ud;
  const char *v;
  size_t len;
  int rc;

  (void)name;
  if (st->rc != 0)
    return;
  st->depth--;
  len = st->text_len - st->text_at[st->depth];
  /* An element without text may come before any text was stored. */
  v = len > 0 ? st->text + st->text_at[st->depth] : "";
  while (len > 0 && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) {
    v++;
    len--;
  }
  while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t' ||
                     v[len - 1] == '\n' || v[len - 1] == '\r'))
    len--;
  /* An element with only white space is a container, not a property. */
  if (st->depth > 0 && len > 0 &&
      (rc = xcmd_xml_add(st, v, len, st->line_at[st->depth])) != 0) {
    xcmd_xml_stop(st, rc);
    return;
  }
  st->text_len = st->text_at[st->depth];
}

static void XMLCALL xcmd_xml_text(void *ud, const XML_Char *s, int len) {
  xcmd_xml *st = ud;
  size_t n = (size_t)len;

  if (st->rc != 0 || st->depth == 0)
    return;
  if (st->text_len + n > XCMD_XML_TEXT) {
    xcmd_xml_fail(st, xcmd_xml_line(st), "element text longer than %d bytes",
                  XCMD_XML_TEXT);
    xcmd_xml_stop(st, st->rc);
    return;
  }
  if (st->text_len + n > st->text_cap) {
    size_t cap = st->text_cap ? st->text_cap : 256;
    char *t;
    while (cap < st->text_len + n)
      cap *= 2;
    t = realloc(st->text, cap);
    if (t == NULL) {
      xcmd_xml_stop(st, XCM_ENOMEM);
      return;
    }
    st->text = t;
    st->text_cap = cap;
  }
  memcpy(st->text + st->text_len, s, n);
  st->text_len += n;
}

/* No doctype: a configuration file needs no entities, and refusing the
 * declaration leaves nothing for entity expansion to blow up. */
static void XMLCALL xcmd_xml_doctype(void *ud, const XML_Char *name,
                                     const XML_Char *sysid,
                                     const XML_Char *pubid, int internal) {
  xcmd_xml *st = ud;

  (void)name;
  (void)sysid;
  (void)pubid;
  (void)internal;
  if (st->rc != 0)
    return;
  xcmd_xml_fail(st, xcmd_xml_line(st), "doctype declarations are not accepted");
  xcmd_xml_stop(st, st->rc);
}

static xcmd_prop *xcmd_xml_take(xcmd_xml *st, const char *name) {
  unsigned i;

  for (i = 0; i < st->nprops; i++) {
    if (strcmp(st->props[i].name, name) == 0) {
      st->props[i].used = 1;
      return &st->props[i];
    }
  }
  return NULL;
}

static int xcmd_xml_int(xcmd_xml *st, const xcmd_prop *p, long long min,
                        long long max, long long *out) {
  const char *s = p->value;
  unsigned long long u;
  int neg = 0, rc;
  char shown[64];

  xcmd_show(p->value, strlen(p->value), shown, sizeof(shown));
  if (*s == '-') {
    neg = 1;
    s++;
  }
  rc = xcmd_parse_digits(s, strlen(s), &u);
  if (rc == -1)
    return xcmd_xml_fail(st, p->line, "%s: '%s' is not a number", p->name,
                         shown);
  if (rc == 0 && u <= (unsigned long long)LLONG_MAX) {
    long long v = neg ? -(long long)u : (long long)u;
    if (v >= min && v <= max) {
      *out = v;
      return 0;
    }
  }
  return xcmd_xml_fail(st, p->line, "%s: '%s' is out of range (%lld to %lld)",
                       p->name, shown, min, max);
}

/* Java's Boolean.valueOf() took anything but "true" for false; a typo is
 * more likely than an intent there, so anything else is an error. */
static int xcmd_xml_bool(xcmd_xml *st, const xcmd_prop *p, int *out) {
  char shown[64];

  if (strcasecmp(p->value, "true") == 0)
    *out = 1;
  else if (strcasecmp(p->value, "false") == 0)
    *out = 0;
  else
    return xcmd_xml_fail(
        st, p->line, "%s: '%s' is not true or false", p->name,
        xcmd_show(p->value, strlen(p->value), shown, sizeof(shown)));
  return 0;
}

static int xcmd_xml_own(xcmd_xml *st, const char *s, const char **out) {
  char *p = xcmd_own(st->cfg, s, strlen(s));

  if (p == NULL)
    return XCM_ENOMEM;
  *out = p;
  return 0;
}

/* Properties xcmd has no counterpart for, and the value the Java CM used
 * when they were absent: set to that value, they change nothing and pass
 * silently. A NULL default warns whenever the property is present. */
static const struct {
  const char *name;
  const char *java_default;
  const char *why;
} xcmd_xml_untranslated[] = {
    {"xmpp.manager.incoming.threads", "5",
     "xcmd has no thread pools; each worker thread runs one event loop "
     "(workers in [daemon])"},
    {"xmpp.processor.threads.standard", "16",
     "xcmd has no thread pools; each worker thread runs one event loop "
     "(workers in [daemon])"},
    {"xmpp.processor.threads.ssl", "16",
     "xcmd has no thread pools; each worker thread runs one event loop "
     "(workers in [daemon])"},
    {"xmpp.socket.backlog", "50", "xcmd leaves the listen backlog to libuv"},
    {"xmpp.socket.buffer.receive", "-1",
     "xcmd leaves socket buffer sizes to the system"},
    {"xmpp.socket.buffer.send", "-1",
     "xcmd leaves socket buffer sizes to the system"},
    {"xmpp.socket.linger", "-1", "xcmd does not set SO_LINGER"},
    {"xmpp.socket.tcp-nodelay", NULL, "xcmd does not set TCP_NODELAY itself"},
    {"xmpp.socket.directBuffer", "false", "a Java (MINA) buffer setting"},
    {"xmpp.socket.ssl.algorithm", "TLS",
     "the TLS library chooses the protocol versions"},
};

static int xcmd_xml_map_untranslated(xcmd_xml *st) {
  size_t i;
  int rc;

  for (i = 0;
       i < sizeof(xcmd_xml_untranslated) / sizeof(xcmd_xml_untranslated[0]);
       i++) {
    xcmd_prop *p = xcmd_xml_take(st, xcmd_xml_untranslated[i].name);
    if (p == NULL ||
        (xcmd_xml_untranslated[i].java_default != NULL &&
         strcasecmp(p->value, xcmd_xml_untranslated[i].java_default) == 0))
      continue;
    rc = xcmd_xml_warn(st, p->line, "%s: not translated: %s", p->name,
                       xcmd_xml_untranslated[i].why);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* The upstream: Openfire's address, the secret, the CM's name, and how
 * its certificate is checked. */
static int xcmd_xml_map_upstream(xcmd_xml *st) {
  static const char *const checks[] = {
      "xmpp.server.certificate.verify.chain",
      "xmpp.server.certificate.verify.root",
      "xmpp.server.certificate.verify.validity"};
  xcm_options *o = &st->cfg->opt;
  int verify = 1, self_signed = 0, b, rc;
  char shown[64], *lower;
  xcmd_prop *p;
  long long v;
  size_t i;

  if ((p = xcmd_xml_take(st, "xmpp.domain")) == NULL)
    return xcmd_xml_fail(st, 0,
                         "xmpp.domain is not set (<jive><xmpp><domain>)");
  if ((rc = xcmd_xml_own(st, p->value, &o->domain)) != 0)
    return rc;
  if ((p = xcmd_xml_take(st, "xmpp.password")) == NULL)
    return xcmd_xml_fail(st, 0,
                         "xmpp.password is not set (<jive><xmpp><password>)");
  if ((rc = xcmd_xml_own(st, p->value, &o->secret)) != 0)
    return rc;
  if ((p = xcmd_xml_take(st, "xmpp.manager.name")) == NULL)
    return xcmd_xml_fail(
        st, 0,
        "xmpp.manager.name is not set "
        "(<jive><xmpp><manager><name>): the Java CM made up "
        "a random name at every start; xcmd needs a fixed one");
  /* The Java CM lowercased the name; Openfire knows it by that spelling. */
  lower = xcmd_own(st->cfg, p->value, strlen(p->value));
  if (lower == NULL)
    return XCM_ENOMEM;
  for (i = 0; lower[i] != '\0'; i++)
    if (lower[i] >= 'A' && lower[i] <= 'Z')
      lower[i] = (char)(lower[i] - 'A' + 'a');
  o->name = lower;

  if ((p = xcmd_xml_take(st, "xmpp.hostname")) != NULL) {
    if ((rc = xcmd_xml_own(st, p->value, &o->server_host)) != 0)
      return rc;
  } else {
    o->server_host = o->domain;
    rc = xcmd_xml_warn(
        st, 0,
        "xmpp.hostname is not set: the Java CM looked up the "
        "domain's DNS SRV records; xcmd connects to '%s' itself",
        xcmd_show(o->domain, strlen(o->domain), shown, sizeof(shown)));
    if (rc != 0)
      return rc;
  }
  if ((p = xcmd_xml_take(st, "xmpp.port")) != NULL) {
    if ((rc = xcmd_xml_int(st, p, 1, 65535, &v)) != 0)
      return rc;
    o->server_port = (int)v;
  }
  if ((p = xcmd_xml_take(st, "xmpp.manager.connections")) != NULL) {
    if ((rc = xcmd_xml_int(st, p, 1, 64, &v)) != 0)
      return rc;
    o->connections = (unsigned)v;
  }

  if ((p = xcmd_xml_take(st, "xmpp.server.certificate.verify")) != NULL &&
      (rc = xcmd_xml_bool(st, p, &verify)) != 0)
    return rc;
  p = xcmd_xml_take(st, "xmpp.server.certificate.accept-selfsigned");
  if (p != NULL && (rc = xcmd_xml_bool(st, p, &self_signed)) != 0)
    return rc;
  if (!verify) {
    o->upstream_accept_self_signed = 1;
  } else if (self_signed) {
    o->upstream_accept_self_signed = 1;
    rc = xcmd_xml_warn(st, p->line,
                       "%s: xcmd cannot accept only self-signed certificates; "
                       "it skips verifying Openfire's certificate altogether",
                       p->name);
    if (rc != 0)
      return rc;
  }
  /* xcmd's own property, beside the Java CM's: the pin of Openfire's
   * certificate ([upstream] fingerprint). */
  if ((p = xcmd_xml_take(st, "xmpp.server.certificate.fingerprint")) != NULL) {
    char fp[128];

    if (!xcmd_fingerprint_ok(p->value))
      return xcmd_xml_fail(
          st, p->line,
          "%s: '%s' is not a SHA-256 fingerprint (" XCMD_FINGERPRINT_FORM ")",
          p->name, xcmd_show(p->value, strlen(p->value), fp, sizeof(fp)));
    if (o->upstream_accept_self_signed)
      return xcmd_xml_fail(
          st, p->line,
          "%s: cannot be set while verification is off (verify false or "
          "accept-selfsigned true): a pin trusts one certificate",
          p->name);
    if ((rc = xcmd_xml_own(st, p->value, &o->upstream_fingerprint)) != 0)
      return rc;
  }
  for (i = 0; i < 3; i++) {
    if ((p = xcmd_xml_take(st, checks[i])) == NULL)
      continue;
    if ((rc = xcmd_xml_bool(st, p, &b)) != 0)
      return rc;
    if (!b && !o->upstream_accept_self_signed &&
        (rc = xcmd_xml_warn(st, p->line,
                            "%s: not translated: xcmd checks all of Openfire's "
                            "certificate or none of it; verification stays on",
                            p->name)) != 0)
      return rc;
  }
  if ((p = xcmd_xml_take(st, "xmpp.server.compression.policy")) != NULL) {
    if (strcmp(p->value, "optional") == 0)
      o->upstream_zlib = 1;
    else if (strcmp(p->value, "disabled") != 0)
      return xcmd_xml_fail(
          st, p->line, "%s: '%s' is not optional or disabled", p->name,
          xcmd_show(p->value, strlen(p->value), shown, sizeof(shown)));
  }
  return 0;
}

static int xcmd_xml_listener(xcmd_xml *st, const char *host, int port,
                             int direct_tls);

/* xmpp.httpbind.*: the Java CM's HTTP binding, on its host, as HTTP
 * listeners: port.plain as plain HTTP, port.secure as HTTPS with the
 * certificate of --cert. Both serve BOSH and WebSocket at the paths
 * clients expect. What has no counterpart is named in a warning. */
static int xcmd_xml_map_httpbind(xcmd_xml *st) {
  static const char *const mapped[] = {"xmpp.httpbind.enabled",
                                       "xmpp.httpbind.port.plain",
                                       "xmpp.httpbind.port.secure"};
  static const struct {
    const char *prop;
    size_t off;
    long long min, max;
  } bosh[] = {
      {"xmpp.httpbind.client.requests.wait",
       offsetof(xcm_listen_options, bosh_wait), 1, 3600},
      {"xmpp.httpbind.client.requests.polling",
       offsetof(xcm_listen_options, bosh_polling), 1, 3600},
      {"xmpp.httpbind.client.requests.max",
       offsetof(xcm_listen_options, bosh_requests), 2, 8},
      {"xmpp.httpbind.client.idle",
       offsetof(xcm_listen_options, bosh_inactivity), 1, 3600},
      {"xmpp.httpbind.client.maxpause",
       offsetof(xcm_listen_options, bosh_maxpause), 1, 86400},
  };
  xcmd_config *cfg = st->cfg;
  xcmd_prop *hb, *p;
  int on = 0, port = 7070, sport = 7443, rc;
  const char *host = cfg->nlisteners > 0 ? cfg->listeners[0].host : "::";
  unsigned i, k;
  long long v;

  if ((hb = xcmd_xml_take(st, "xmpp.httpbind.enabled")) != NULL &&
      (rc = xcmd_xml_bool(st, hb, &on)) != 0)
    return rc;
  if (!on) {
    /* With the binding off its settings change nothing. */
    for (i = 0; i < st->nprops; i++)
      if (strncmp(st->props[i].name, "xmpp.httpbind.", 14) == 0)
        st->props[i].used = 1;
    return 0;
  }
  if ((p = xcmd_xml_take(st, "xmpp.httpbind.port.plain")) != NULL) {
    if ((rc = xcmd_xml_int(st, p, 1, 65535, &v)) != 0)
      return rc;
    port = (int)v;
  }
  if ((p = xcmd_xml_take(st, "xmpp.httpbind.port.secure")) != NULL) {
    if ((rc = xcmd_xml_int(st, p, 1, 65535, &v)) != 0)
      return rc;
    sport = (int)v;
  }
  if (port == sport)
    return xcmd_xml_fail(st, p != NULL ? p->line : 0,
                         "xmpp.httpbind.port.secure: port %d is the plain "
                         "port too",
                         sport);
  for (i = 0; i < cfg->nlisteners; i++)
    if (cfg->listeners[i].port == port || cfg->listeners[i].port == sport)
      return xcmd_xml_fail(st, hb->line,
                           "xmpp.httpbind: port %d is a client port too",
                           cfg->listeners[i].port);
  if (cfg->nlisteners + 2 > XCMD_MAX_LISTENERS)
    return xcmd_xml_fail(st, hb->line, "xmpp.httpbind: too many listeners");
  xcmd_xml_listener(st, host, port, 0);
  cfg->listeners[cfg->nlisteners - 1].http = 1;
  cfg->cert_wanted &= ~(1u << (cfg->nlisteners - 1));
  xcmd_xml_listener(st, host, sport, 0);
  cfg->listeners[cfg->nlisteners - 1].http = 1;
  /* The Java CM's (and Openfire's) BOSH settings, in seconds as
   * bosh_* are, on both listeners. */
  for (k = 0; k < sizeof bosh / sizeof bosh[0]; k++) {
    if ((p = xcmd_xml_take(st, bosh[k].prop)) == NULL)
      continue;
    if ((rc = xcmd_xml_int(st, p, bosh[k].min, bosh[k].max, &v)) != 0)
      return rc;
    for (i = cfg->nlisteners - 2; i < cfg->nlisteners; i++)
      *(unsigned *)(void *)((char *)&cfg->listeners[i] + bosh[k].off) =
          (unsigned)v;
  }
  for (i = 0; i < st->nprops; i++) {
    int known = 0;

    if (st->props[i].used ||
        strncmp(st->props[i].name, "xmpp.httpbind.", 14) != 0)
      continue;
    for (k = 0; k < sizeof mapped / sizeof mapped[0]; k++)
      known |= strcmp(st->props[i].name, mapped[k]) == 0;
    st->props[i].used = 1;
    if (known)
      continue;
    rc = xcmd_xml_warn(st, st->props[i].line,
                       "%s: not translated: the HTTP listeners keep xcmd's "
                       "defaults (http_* keys of [listener] in an xcmd.conf)",
                       st->props[i].name);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int xcmd_xml_listener(xcmd_xml *st, const char *host, int port,
                             int direct_tls) {
  xcmd_config *cfg = st->cfg;
  xcm_listen_options *lo = &cfg->listeners[cfg->nlisteners];

  xcmd_default_listener(lo);
  lo->host = host;
  lo->port = port;
  lo->direct_tls = direct_tls;
  cfg->cert_wanted |= 1u << cfg->nlisteners;
  cfg->nlisteners++;
  return 0;
}

/* The client side: listeners, idle limit, and the keystores that cannot
 * be read. */
static int xcmd_xml_map_clients(xcmd_xml *st) {
  xcmd_config *cfg = st->cfg;
  xcmd_prop *p, *plain, *deflt, *ssl_port = NULL, *keystore, *truststore;
  int plain_on = 1, ssl_on = 1, port = 5222, sport = 5223, rc;
  const char *host = "::";
  long long v;

  if ((p = xcmd_xml_take(st, "xmpp.client.idle")) == NULL) {
    cfg->opt.idle_timeout_ms = 30 * XCMD_MIN; /* the Java CM's default */
  } else {
    if ((rc = xcmd_xml_int(st, p, INT_MIN, INT_MAX, &v)) != 0)
      return rc;
    if (v >= 1000) {
      cfg->opt.idle_timeout_ms = (unsigned)v;
    } else {
      /* The Java CM counted whole seconds, so anything under one meant
       * no limit at all; xcmd always has one. */
      cfg->opt.idle_timeout_ms = 24u * XCMD_DAY;
      rc = xcmd_xml_warn(st, p->line,
                         "%s: %lld meant no idle limit; xcmd closes clients "
                         "idle for 24d",
                         p->name, v);
      if (rc != 0)
        return rc;
    }
  }

  if ((p = xcmd_xml_take(st, "xmpp.socket.network.interface")) != NULL &&
      (rc = xcmd_xml_own(st, p->value, &host)) != 0)
    return rc;
  /* The older name wins over the newer, as in the Java CM. */
  plain = xcmd_xml_take(st, "xmpp.socket.plain.port");
  deflt = xcmd_xml_take(st, "xmpp.socket.default.port");
  if (plain != NULL && deflt != NULL &&
      (rc = xcmd_xml_warn(st, deflt->line,
                          "%s: ignored: xmpp.socket.plain.port is set and "
                          "wins, as in the Java CM",
                          deflt->name)) != 0)
    return rc;
  if (plain == NULL)
    plain = deflt;
  if (plain != NULL) {
    if ((rc = xcmd_xml_int(st, plain, 1, 65535, &v)) != 0)
      return rc;
    port = (int)v;
  }
  if ((p = xcmd_xml_take(st, "xmpp.socket.default.active")) != NULL &&
      (rc = xcmd_xml_bool(st, p, &plain_on)) != 0)
    return rc;
  if ((p = xcmd_xml_take(st, "xmpp.socket.ssl.active")) != NULL &&
      (rc = xcmd_xml_bool(st, p, &ssl_on)) != 0)
    return rc;
  if ((ssl_port = xcmd_xml_take(st, "xmpp.socket.ssl.port")) != NULL) {
    if ((rc = xcmd_xml_int(st, ssl_port, 1, 65535, &v)) != 0)
      return rc;
    sport = (int)v;
  }
  if (plain_on && ssl_on && port == sport)
    return xcmd_xml_fail(st, ssl_port != NULL ? ssl_port->line : 0,
                         "xmpp.socket.ssl.port: port %d is the plain port too",
                         sport);
  if (plain_on)
    xcmd_xml_listener(st, host, port, 0);
  if (ssl_on)
    xcmd_xml_listener(st, host, sport, 1);
  if (cfg->nlisteners == 0)
    return xcmd_xml_fail(st, 0,
                         "no client listener: xmpp.socket.default.active and "
                         "xmpp.socket.ssl.active are both false");

  /* The password and type belong to the stores and go with them. */
  keystore = xcmd_xml_take(st, "xmpp.socket.ssl.keystore");
  xcmd_xml_take(st, "xmpp.socket.ssl.keypass");
  xcmd_xml_take(st, "xmpp.socket.ssl.storeType");
  truststore = xcmd_xml_take(st, "xmpp.socket.ssl.truststore");
  xcmd_xml_take(st, "xmpp.socket.ssl.trustpass");
  rc = xcmd_xml_warn(st, keystore != NULL ? keystore->line : 0,
                     "xmpp.socket.ssl.keystore: a Java keystore cannot be "
                     "read; the listeners take the PEM certificate and key "
                     "given with --cert and --key");
  if (rc != 0)
    return rc;
  if (!cfg->opt.upstream_accept_self_signed &&
      cfg->opt.upstream_fingerprint == NULL &&
      (rc =
           xcmd_xml_warn(st, truststore != NULL ? truststore->line : 0,
                         "xmpp.socket.ssl.truststore: a Java keystore cannot "
                         "be read; to verify Openfire's certificate give its "
                         "CA as PEM (ca_file in [upstream] of an xcmd.conf) or "
                         "pin it (xmpp.server.certificate.fingerprint)")) != 0)
    return rc;
  return 0;
}

static int xcmd_xml_map(xcmd_xml *st) {
  xcmd_config *cfg = st->cfg;
  int debug = 0, rc;
  xcmd_prop *p;
  unsigned i;
  long long v;

  if ((rc = xcmd_xml_map_upstream(st)) != 0)
    return rc;
  if ((rc = xcmd_xml_map_clients(st)) != 0)
    return rc;
  if ((p = xcmd_xml_take(st, "xmpp.processor.count")) != NULL) {
    if ((rc = xcmd_xml_int(st, p, 1, 256, &v)) != 0)
      return rc;
    cfg->workers = (unsigned)v;
  }
  if ((rc = xcmd_xml_map_untranslated(st)) != 0)
    return rc;
  if ((rc = xcmd_xml_map_httpbind(st)) != 0)
    return rc;
  if ((p = xcmd_xml_take(st, "log.debug.enabled")) != NULL) {
    if ((rc = xcmd_xml_bool(st, p, &debug)) != 0)
      return rc;
    if (debug)
      cfg->log_level = cfg->opt.log_level = XCM_LOG_DEBUG;
  }
  /* Written by the Java CM's setup; it says nothing about running. */
  xcmd_xml_take(st, "setup");
  for (i = 0; i < st->nprops; i++) {
    if (st->props[i].used)
      continue;
    rc = xcmd_xml_warn(st, st->props[i].line, "%s: unknown property, ignored",
                       st->props[i].name);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Hand the warnings to the config in the order of the file; those about a
 * property that was absent (line 0) come first. */
static int xcmd_xml_keep_warnings(xcmd_xml *st) {
  xcmd_config *cfg = st->cfg;
  unsigned i, j;

  for (i = 1; i < st->nwarns; i++) {
    xcmd_warn w = st->warns[i];
    for (j = i; j > 0 && st->warns[j - 1].line > w.line; j--)
      st->warns[j] = st->warns[j - 1];
    st->warns[j] = w;
  }
  if (st->nwarns == 0)
    return 0;
  cfg->warnings = malloc(st->nwarns * sizeof(*cfg->warnings));
  if (cfg->warnings == NULL)
    return XCM_ENOMEM;
  for (i = 0; i < st->nwarns; i++) {
    cfg->warnings[i] = st->warns[i].text;
    st->warns[i].text = NULL;
  }
  cfg->nwarnings = st->nwarns;
  st->nwarns = 0;
  return 0;
}

static void xcmd_xml_free(xcmd_xml *st) {
  unsigned i;

  for (i = 0; i < st->nprops; i++) {
    free(st->props[i].name);
    free(st->props[i].value);
  }
  for (i = 0; i < st->nwarns; i++)
    free(st->warns[i].text);
  free(st->props);
  free(st->warns);
  free(st->text);
  if (st->parser != NULL)
    XML_ParserFree(st->parser);
}

static int xcmd_xml_parse(xcmd_xml *st, const char *text, size_t len) {
  int rc;

  if (len > INT_MAX)
    return xcmd_xml_fail(st, 0, "file too large");
  st->parser = XML_ParserCreate(NULL);
  if (st->parser == NULL)
    return XCM_ENOMEM;
  XML_SetUserData(st->parser, st);
  XML_SetElementHandler(st->parser, xcmd_xml_start, xcmd_xml_end);
  XML_SetCharacterDataHandler(st->parser, xcmd_xml_text);
  XML_SetStartDoctypeDeclHandler(st->parser, xcmd_xml_doctype);
  if (XML_Parse(st->parser, text, (int)len, XML_TRUE) == XML_STATUS_ERROR) {
    if (st->rc != 0)
      return st->rc;
    if (XML_GetErrorCode(st->parser) == XML_ERROR_NO_MEMORY)
      return XCM_ENOMEM;
    return xcmd_xml_fail(st, xcmd_xml_line(st), "not well-formed XML: %s",
                         XML_ErrorString(XML_GetErrorCode(st->parser)));
  }
  if (st->rc != 0)
    return st->rc;
  st->cfg->from_manager_xml = 1;
  if ((rc = xcmd_xml_map(st)) != 0)
    return rc;
  return xcmd_xml_keep_warnings(st);
}

int xcmd_config_parse_manager_xml(const char *text, size_t len,
                                  const char *name_for_errors, xcmd_config *out,
                                  char *err, size_t errlen) {
  xcmd_xml *st;
  int rc;

  xcmd_parse_begin(out, err, errlen);
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    return XCM_ENOMEM;
  st->cfg = out;
  st->name = name_for_errors;
  st->err = err;
  st->errlen = errlen;
  rc = xcmd_xml_parse(st, text, len);
  xcmd_xml_free(st);
  free(st);
  return xcmd_parse_end(rc, name_for_errors, out, err, errlen);
}

/* ---- Files and the rest ------------------------------------------------ */

static int xcmd_read_file(const char *path, char **out, size_t *outlen,
                          char *err, size_t errlen) {
  size_t len = 0, cap = 4096, n;
  char *buf, *b;
  FILE *f;
  int rc;

  f = fopen(path, "rb");
  if (f == NULL) {
    rc = -errno;
    xcmd_fail(err, errlen, "%s: %s", path, strerror(errno));
    return rc;
  }
  buf = malloc(cap);
  if (buf == NULL)
    goto nomem;
  do {
    if (len == cap) {
      b = realloc(buf, cap * 2);
      if (b == NULL)
        goto nomem;
      buf = b;
      cap *= 2;
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (len > XCMD_MAX_FILE) {
      rc = xcmd_fail(err, errlen, "%s: larger than %d bytes", path,
                     XCMD_MAX_FILE);
      goto fail;
    }
  } while (n > 0);
  if (ferror(f)) {
    /* A directory opens fine and fails here, with EISDIR. */
    rc = errno != 0 ? -errno : -EIO;
    xcmd_fail(err, errlen, "%s: %s", path, strerror(-rc));
    goto fail;
  }
  fclose(f);
  *out = buf;
  *outlen = len;
  return 0;

nomem:
  rc = XCM_ENOMEM;
  xcmd_fail(err, errlen, "%s: out of memory", path);
fail:
  fclose(f);
  free(buf);
  return rc;
}

int xcmd_config_load(const char *path, xcmd_config *out, char *err,
                     size_t errlen) {
  size_t len = 0, i = 0;
  char *text = NULL;
  int rc;

  memset(out, 0, sizeof(*out));
  if ((rc = xcmd_read_file(path, &text, &len, err, errlen)) != 0)
    return rc;
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
    i = 3;
  while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' ||
                     text[i] == '\n'))
    i++;
  if (i < len && text[i] == '<')
    rc = xcmd_config_parse_manager_xml(text, len, path, out, err, errlen);
  else
    rc = xcmd_config_parse(text, len, path, out, err, errlen);
  free(text);
  return rc;
}

int xcmd_config_set_cert(xcmd_config *cfg, const char *cert, const char *key) {
  unsigned i;
  int n = 0;

  if (cert == NULL || key == NULL || *cert == '\0' || *key == '\0')
    return XCM_EINVAL;
  for (i = 0; i < cfg->nlisteners; i++) {
    xcm_listen_options *lo = &cfg->listeners[i];
    char *c, *k;
    if (!(cfg->cert_wanted & (1u << i)))
      continue;
    c = xcmd_own(cfg, cert, strlen(cert));
    k = c != NULL ? xcmd_own(cfg, key, strlen(key)) : NULL;
    if (k == NULL)
      return XCM_ENOMEM;
    lo->cert_file = c;
    lo->key_file = k;
    n++;
  }
  return n;
}

void xcmd_config_free(xcmd_config *cfg) {
  unsigned i;

  for (i = 0; i < cfg->nowned_; i++)
    free(cfg->owned_[i]);
  free(cfg->owned_);
  for (i = 0; i < cfg->nwarnings; i++)
    free(cfg->warnings[i]);
  free(cfg->warnings);
  memset(cfg, 0, sizeof(*cfg));
}
