/* TLS on mbedTLS 2.28: shared configurations and per-stream state.
 *
 * Certificates are checked when they are loaded, so that a bad file is
 * reported by name at startup and not as a handshake failure per client:
 * unreadable, not PEM, key not matching, expired, not yet valid. */
#include "transport/tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_internal.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "util/alloc.h"
#include "xcm/error.h"
#include "util/hex.h"

/* A certificate chain with its key; the first of a server's is the one
 * offered when SNI names none of them. */
typedef struct cert_key {
  mbedtls_x509_crt crt;
  mbedtls_pk_context key;
  struct cert_key *next;
} cert_key;

struct xcm_tls_config {
  /* Atomic: a stream moved to another instance (xcm__stream_move_in)
   * drops its reference on the other instance's thread. */
  int refs;
  int is_server;
  int verify;
  xcm_ctx *ctx; /* for logs, and the allocator while loading */
  /* The context's allocator, for freeing: the last reference may go on
   * another thread, after the context itself. */
  const xcm_allocator *alloc;
  mbedtls_ssl_config conf;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca;
  cert_key *certs;
  const char *alpn[2];
  char *alpn_name;
  mbedtls_ssl_ticket_context ticket; /* server: resumption tickets */
  /* client: the one leaf certificate trusted, by its SHA-256. */
  int pinned;
  int pin_expiry_told; /* an expired pinned certificate was reported */
  unsigned char pin[32];
  void (*refused)(void *ud, const xcm_tls_refusal *r);
  void *refused_ud;
};

/* What a client keeps of the server's leaf certificate while it is
 * verified, for the report of a refusal: mbedTLS frees a chain it
 * refuses before the handshake returns. Allocated on first use, so that
 * the streams of a server's clients never carry it. */
typedef struct leaf_info {
  unsigned char sha256[32];
  uint32_t flags; /* the leaf's own verification flags */
  int self_signed;
  int mismatch; /* pinned, and not this certificate */
  char subject[256];
  char issuer[256];
  char valid_from[24];
  char valid_to[24];
} leaf_info;

struct xcm_tls {
  mbedtls_ssl_context ssl;
  xcm_tls_config *cfg;
  xcm_tls_send_fn send;
  xcm_tls_recv_fn recv;
  void *ud;
  int done;
  int refused;     /* the server's certificate, reported */
  leaf_info *leaf; /* client: see leaf_info */
};

/* How long a session ticket resumes a session: a returning client skips
 * the key exchange and the signature (4 ms of CPU each with mbedTLS
 * 2.28), and the key that seals tickets changes this often, so that it
 * never protects more than a short stretch of past sessions. */
#define TICKET_LIFETIME_S 3600

/* Forward secrecy and AEAD first; CBC with ECDHE after them for older
 * clients. No static-RSA key exchange: every OpenSSL-based client
 * (slixmpp, libstrophe, Gajim, Conversations' Java) offers ECDHE. The
 * server picks by this order. */
static const int suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
    0};

static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_SECP521R1, MBEDTLS_ECP_DP_NONE};

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) {
  va_list ap;

  if (errbuf == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(errbuf, errlen, fmt, ap);
  va_end(ap);
}

/* mbedTLS's text for err, on one line. */
static void mbed_text(int err, char *buf, size_t len) {
  mbedtls_strerror(err, buf, len);
}

/* ---- loading files ------------------------------------------------- */

/* The whole file plus a NUL, which mbedTLS's PEM parser needs. */
static int read_file(xcm_ctx *ctx, const char *path, unsigned char **data,
                     size_t *len, char *errbuf, size_t errlen) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL, *p;
  size_t cap = 0, n = 0, got;

  if (f == NULL) {
    set_err(errbuf, errlen, "%s: cannot read: %s", path, strerror(errno));
    return XCM_ECONFIG;
  }
  for (;;) {
    if (cap - n < 4097) {
      cap = cap ? cap * 2 : 8192;
      p = xcm__realloc(ctx->alloc, buf, cap);
      if (p == NULL) {
        fclose(f);
        xcm__free(ctx->alloc, buf);
        return XCM_ENOMEM;
      }
      buf = p;
    }
    got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0)
      break;
  }
  if (ferror(f)) {
    set_err(errbuf, errlen, "%s: cannot read: %s", path, strerror(errno));
    fclose(f);
    xcm__free(ctx->alloc, buf);
    return XCM_ECONFIG;
  }
  fclose(f);
  buf[n] = '\0';
  *data = buf;
  *len = n + 1;
  return 0;
}

static void wipe_free(xcm_ctx *ctx, unsigned char *buf, size_t len) {
  /* Key files hold secrets: do not leave them in freed memory. */
  volatile unsigned char *p = buf;

  while (len--)
    *p++ = 0;
  xcm__free(ctx->alloc, buf);
}

static void format_time(const mbedtls_x509_time *t, char *buf, size_t len) {
  snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d", t->year, t->mon, t->day,
           t->hour, t->min, t->sec);
}

/* Reject a chain with a certificate outside its validity period, naming
 * the one at fault. */
static int check_dates(const mbedtls_x509_crt *chain, const char *path,
                       char *errbuf, size_t errlen) {
  const mbedtls_x509_crt *c;
  char when[32], who[160];
  int i = 0;

  for (c = chain; c != NULL && c->raw.len != 0; c = c->next, i++) {
    if (i == 0)
      snprintf(who, sizeof who, "certificate");
    else if (mbedtls_x509_dn_gets(who + 22, sizeof who - 22, &c->subject) >= 0)
      memcpy(who, "chain certificate for ", 22);
    else
      snprintf(who, sizeof who, "chain certificate %d", i + 1);
    if (mbedtls_x509_time_is_past(&c->valid_to)) {
      format_time(&c->valid_to, when, sizeof when);
      set_err(errbuf, errlen, "%s: %s expired on %s", path, who, when);
      return XCM_ECONFIG;
    }
    if (mbedtls_x509_time_is_future(&c->valid_from)) {
      format_time(&c->valid_from, when, sizeof when);
      set_err(errbuf, errlen, "%s: %s is not valid before %s", path, who, when);
      return XCM_ECONFIG;
    }
  }
  return 0;
}

/* For a CA bundle (lenient), certificates mbedTLS cannot parse are
 * skipped with a warning, as long as some remain: system bundles carry
 * roots with algorithms it lacks. */
static int load_crt(xcm_ctx *ctx, mbedtls_x509_crt *crt, const char *path,
                    int lenient, char *errbuf, size_t errlen) {
  unsigned char *data;
  size_t len;
  char why[128];
  int err;

  err = read_file(ctx, path, &data, &len, errbuf, errlen);
  if (err != 0)
    return err;
  if (strstr((const char *)data, "-----BEGIN CERTIFICATE-----") == NULL) {
    xcm__free(ctx->alloc, data);
    set_err(errbuf, errlen, "%s: no PEM certificate in the file", path);
    return XCM_ECONFIG;
  }
  err = mbedtls_x509_crt_parse(crt, data, len);
  xcm__free(ctx->alloc, data);
  if (err < 0) {
    mbed_text(err, why, sizeof why);
    set_err(errbuf, errlen, "%s: bad PEM certificate: %s", path, why);
    return XCM_ECONFIG;
  }
  if (err > 0 && lenient && crt->raw.len != 0) {
    xcm__log(ctx, XCM_LOG_WARN, "%s: %d certificates cannot be parsed: skipped",
             path, err);
    return 0;
  }
  if (err > 0) {
    set_err(errbuf, errlen, "%s: %d of the certificates cannot be parsed", path,
            err);
    return XCM_ECONFIG;
  }
  return 0;
}

static int load_key(xcm_ctx *ctx, mbedtls_pk_context *key, const char *path,
                    char *errbuf, size_t errlen) {
  unsigned char *data;
  size_t len;
  char why[128];
  int err;

  err = read_file(ctx, path, &data, &len, errbuf, errlen);
  if (err != 0)
    return err;
  err = mbedtls_pk_parse_key(key, data, len, NULL, 0);
  wipe_free(ctx, data, len);
  if (err == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
    set_err(errbuf, errlen, "%s: the key is encrypted; give it unencrypted",
            path);
    return XCM_ECONFIG;
  }
  if (err != 0) {
    mbed_text(err, why, sizeof why);
    set_err(errbuf, errlen, "%s: bad PEM private key: %s", path, why);
    return XCM_ECONFIG;
  }
  return 0;
}

static int load_cert_key(xcm_tls_config *cfg, const char *cert_file,
                         const char *key_file, int dates, char *errbuf,
                         size_t errlen) {
  cert_key *ck, **tail;
  int err;

  if (cert_file == NULL || key_file == NULL) {
    set_err(errbuf, errlen, "a certificate needs both cert_file and key_file");
    return XCM_ECONFIG;
  }
  ck = xcm__alloc(cfg->ctx->alloc, sizeof(*ck));
  if (ck == NULL)
    return XCM_ENOMEM;
  mbedtls_x509_crt_init(&ck->crt);
  mbedtls_pk_init(&ck->key);
  ck->next = NULL;
  err = load_crt(cfg->ctx, &ck->crt, cert_file, 0, errbuf, errlen);
  if (err == 0 && dates)
    err = check_dates(&ck->crt, cert_file, errbuf, errlen);
  if (err == 0)
    err = load_key(cfg->ctx, &ck->key, key_file, errbuf, errlen);
  if (err == 0 && mbedtls_pk_check_pair(&ck->crt.pk, &ck->key) != 0) {
    set_err(errbuf, errlen, "%s: the key does not match the certificate in %s",
            key_file, cert_file);
    err = XCM_ECONFIG;
  }
  if (err != 0) {
    mbedtls_x509_crt_free(&ck->crt);
    mbedtls_pk_free(&ck->key);
    xcm__free(cfg->ctx->alloc, ck);
    return err;
  }
  for (tail = &cfg->certs; *tail != NULL; tail = &(*tail)->next)
    ;
  *tail = ck;
  return 0;
}

/* ---- SNI ----------------------------------------------------------- */

static int name_eq(const unsigned char *a, size_t alen, const unsigned char *b,
                   size_t blen) {
  size_t i;

  if (alen != blen)
    return 0;
  for (i = 0; i < alen; i++) {
    unsigned char x = a[i], y = b[i];

    if (x >= 'A' && x <= 'Z')
      x = (unsigned char)(x + 32);
    if (y >= 'A' && y <= 'Z')
      y = (unsigned char)(y + 32);
    if (x != y)
      return 0;
  }
  return 1;
}

/* pattern is a certificate name, perhaps "*.example.org", which covers
 * exactly one label in front of example.org. */
static int name_matches(const unsigned char *pat, size_t plen,
                        const unsigned char *name, size_t nlen) {
  const unsigned char *dot;

  if (plen > 2 && pat[0] == '*' && pat[1] == '.') {
    dot = memchr(name, '.', nlen);
    if (dot == NULL || dot == name)
      return 0;
    return name_eq(pat + 1, plen - 1, dot, nlen - (size_t)(dot - name));
  }
  return name_eq(pat, plen, name, nlen);
}

static int cert_covers(const mbedtls_x509_crt *crt, const unsigned char *name,
                       size_t len) {
  const mbedtls_x509_sequence *san;
  const mbedtls_x509_name *dn;
  int has_dns = 0;

  for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
    if (san->buf.tag != (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2))
      continue;
    has_dns = 1;
    if (name_matches(san->buf.p, san->buf.len, name, len))
      return 1;
  }
  if (has_dns)
    return 0;
  /* Only without DNS names does the common name count (RFC 6125). */
  for (dn = &crt->subject; dn != NULL; dn = dn->next)
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &dn->oid) == 0 &&
        name_matches(dn->val.p, dn->val.len, name, len))
      return 1;
  return 0;
}

static int on_sni(void *ud, mbedtls_ssl_context *ssl, const unsigned char *name,
                  size_t len) {
  xcm_tls_config *cfg = ud;
  cert_key *ck;

  for (ck = cfg->certs; ck != NULL; ck = ck->next)
    if (cert_covers(&ck->crt, name, len))
      return mbedtls_ssl_set_hs_own_cert(ssl, &ck->crt, &ck->key);
  /* An unknown name gets the default certificate; the client decides. */
  return 0;
}

/* ---- configurations ------------------------------------------------ */

/* Where distributions keep the trust anchors as one PEM file, for a
 * client that verifies without a ca_file of its own (the upstream pool
 * connecting to an Openfire with a public certificate). */
static const char *system_ca_bundle(void) {
  static const char *const paths[] = {
      "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
      "/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
      "/etc/ssl/ca-bundle.pem",             /* openSUSE */
      "/etc/ssl/cert.pem",                  /* BSDs, macOS */
  };
  size_t i;

  for (i = 0; i < sizeof paths / sizeof paths[0]; i++)
    if (access(paths[i], R_OK) == 0)
      return paths[i];
  return NULL;
}

static void config_free(xcm_tls_config *cfg) {
  const xcm_allocator *a = cfg->alloc;
  cert_key *ck, *next;

  for (ck = cfg->certs; ck != NULL; ck = next) {
    next = ck->next;
    mbedtls_x509_crt_free(&ck->crt);
    mbedtls_pk_free(&ck->key);
    xcm__free(a, ck);
  }
  mbedtls_x509_crt_free(&cfg->ca);
  mbedtls_ssl_config_free(&cfg->conf);
  mbedtls_ssl_ticket_free(&cfg->ticket);
  mbedtls_ctr_drbg_free(&cfg->drbg);
  mbedtls_entropy_free(&cfg->entropy);
  xcm__free(a, cfg->alpn_name);
  xcm__free(a, cfg);
}

int xcm__tls_config_load(xcm_tls_config **out, xcm_ctx *ctx, int is_server,
                         const xcm_tls_options *opt, int dates, char *errbuf,
                         size_t errlen) {
  static const char pers[] = "libxcm tls";
  static const xcm_tls_options none;
  xcm_tls_config *cfg;
  const char *alpn, *ca_file;
  int err;

  *out = NULL;
  if (opt == NULL)
    opt = &none;
  set_err(errbuf, errlen, "%s", "");
  cfg = xcm__calloc(ctx->alloc, sizeof(*cfg));
  if (cfg == NULL)
    return XCM_ENOMEM;
  cfg->refs = 1;
  cfg->ctx = ctx;
  cfg->alloc = ctx->alloc;
  cfg->is_server = is_server;
  cfg->pinned = !is_server && opt->pin_sha256 != NULL;
  /* A pin replaces the CA and the host name checks. */
  cfg->verify = !is_server && opt->verify && !cfg->pinned;
  if (cfg->pinned)
    memcpy(cfg->pin, opt->pin_sha256, sizeof cfg->pin);
  if (!is_server) {
    cfg->refused = opt->refused;
    cfg->refused_ud = opt->refused_ud;
  }
  mbedtls_ssl_config_init(&cfg->conf);
  mbedtls_entropy_init(&cfg->entropy);
  mbedtls_ctr_drbg_init(&cfg->drbg);
  mbedtls_x509_crt_init(&cfg->ca);
  mbedtls_ssl_ticket_init(&cfg->ticket);
  err = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy,
                              (const unsigned char *)pers, sizeof pers - 1);
  if (err != 0) {
    set_err(errbuf, errlen, "cannot seed the random generator");
    err = XCM_ECONFIG;
    goto fail;
  }
  if (is_server && (opt->cert_file == NULL || opt->key_file == NULL)) {
    set_err(errbuf, errlen, "a TLS server needs cert_file and key_file");
    err = XCM_ECONFIG;
    goto fail;
  }
  if (opt->cert_file != NULL || opt->key_file != NULL) {
    err = load_cert_key(cfg, opt->cert_file, opt->key_file, dates, errbuf,
                        errlen);
    if (err != 0)
      goto fail;
  }
  ca_file = opt->ca_file;
  if (cfg->verify && ca_file == NULL) {
    ca_file = system_ca_bundle();
    if (ca_file == NULL) {
      set_err(errbuf, errlen,
              "verify needs ca_file (no system CA bundle was found)");
      err = XCM_ECONFIG;
      goto fail;
    }
  }
  if (ca_file != NULL) {
    /* Not date-checked: CA bundles routinely carry expired roots. */
    err = load_crt(ctx, &cfg->ca, ca_file, 1, errbuf, errlen);
    if (err != 0)
      goto fail;
  }
  err = mbedtls_ssl_config_defaults(
      &cfg->conf, is_server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (err != 0) {
    set_err(errbuf, errlen, "cannot set up the TLS configuration");
    err = XCM_ECONFIG;
    goto fail;
  }
  mbedtls_ssl_conf_rng(&cfg->conf, mbedtls_ctr_drbg_random, &cfg->drbg);
  /* TLS 1.2 and up; 2.28 has no TLS 1.3 but its experimental draft, so
   * 1.2 is also the most, until the library is newer. */
  mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&cfg->conf, suites);
  mbedtls_ssl_conf_curves(&cfg->conf, curves);
  if (cfg->certs != NULL) {
    err = mbedtls_ssl_conf_own_cert(&cfg->conf, &cfg->certs->crt,
                                    &cfg->certs->key);
    if (err != 0) {
      err = XCM_ENOMEM;
      goto fail;
    }
  }
  alpn = opt->alpn;
  if (is_server) {
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_sni(&cfg->conf, on_sni, cfg);
    /* XEP-0368: direct TLS clients offer "xmpp-client". */
    if (alpn == NULL)
      alpn = "xmpp-client";
  } else if (cfg->verify) {
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
  } else if (cfg->pinned) {
    /* The chain is still checked, for the record (an expired pinned
     * certificate is reported), but only the pin decides: a mismatch
     * fails the handshake from the verify callback (on_verify). */
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
  } else {
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
    xcm__log(ctx, XCM_LOG_WARN,
             "TLS client configuration without certificate verification: "
             "the server is not authenticated");
  }
  /* A client keeps no ticket: sessions are not resumed, and a ticket
   * would be memory held per link. A server issues them: the server
   * keeps nothing per session for them (a ticket is the session, sealed
   * with a key of this configuration). */
  if (!is_server) {
    mbedtls_ssl_conf_session_tickets(&cfg->conf,
                                     MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
  } else {
    err = mbedtls_ssl_ticket_setup(&cfg->ticket, mbedtls_ctr_drbg_random,
                                   &cfg->drbg, MBEDTLS_CIPHER_AES_256_GCM,
                                   TICKET_LIFETIME_S);
    if (err != 0) {
      set_err(errbuf, errlen, "cannot set up TLS session tickets");
      err = err == MBEDTLS_ERR_SSL_ALLOC_FAILED ? XCM_ENOMEM : XCM_ECONFIG;
      goto fail;
    }
    mbedtls_ssl_conf_session_tickets_cb(&cfg->conf, mbedtls_ssl_ticket_write,
                                        mbedtls_ssl_ticket_parse, &cfg->ticket);
  }
  if (alpn != NULL && alpn[0] != '\0') {
    cfg->alpn_name = xcm__strndup(ctx->alloc, alpn, strlen(alpn));
    if (cfg->alpn_name == NULL) {
      err = XCM_ENOMEM;
      goto fail;
    }
    cfg->alpn[0] = cfg->alpn_name;
    cfg->alpn[1] = NULL;
    mbedtls_ssl_conf_alpn_protocols(&cfg->conf, cfg->alpn);
  }
  *out = cfg;
  return 0;

fail:
  config_free(cfg);
  return err;
}

int xcm__tls_config_new(xcm_tls_config **out, xcm_ctx *ctx, int is_server,
                        const xcm_tls_options *opt, char *errbuf,
                        size_t errlen) {
  return xcm__tls_config_load(out, ctx, is_server, opt, 1, errbuf, errlen);
}

int xcm__tls_config_add_cert(xcm_tls_config *cfg, const char *cert_file,
                             const char *key_file, char *errbuf,
                             size_t errlen) {
  if (!cfg->is_server) {
    set_err(errbuf, errlen, "only a server chooses a certificate by SNI");
    return XCM_EINVAL;
  }
  return load_cert_key(cfg, cert_file, key_file, 1, errbuf, errlen);
}

static void config_ref(xcm_tls_config *cfg) {
  __atomic_add_fetch(&cfg->refs, 1, __ATOMIC_RELAXED);
}

/* Acquire-release, so that the thread that frees sees every write the
 * other holders made before they let go. */
void xcm__tls_config_unref(xcm_tls_config *cfg) {
  if (cfg != NULL && __atomic_sub_fetch(&cfg->refs, 1, __ATOMIC_ACQ_REL) == 0)
    config_free(cfg);
}

/* ---- fingerprints -------------------------------------------------- */

int xcm__tls_parse_fingerprint(const char *s, unsigned char out[32]) {
  unsigned char sha[32];
  int colons = -1; /* unknown until after the first byte */
  size_t i;

  if (s == NULL || strncasecmp(s, "sha256:", 7) != 0)
    return XCM_EINVAL;
  s += 7;
  for (i = 0; i < 32; i++) {
    int hi, lo;

    if (i > 0) {
      /* Colons between every pair or between none. */
      if (colons < 0)
        colons = *s == ':';
      if (colons && *s++ != ':')
        return XCM_EINVAL;
    }
    hi = xcm__hex_digit(s[0]);
    lo = hi < 0 ? -1 : xcm__hex_digit(s[1]);
    if (lo < 0)
      return XCM_EINVAL;
    sha[i] = (unsigned char)(hi << 4 | lo);
    s += 2;
  }
  if (*s != '\0')
    return XCM_EINVAL;
  memcpy(out, sha, sizeof sha);
  return 0;
}

void xcm__tls_format_fingerprint(const unsigned char sha[32], char *buf,
                                 size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  char text[7 + 32 * 3];
  size_t i, n = 7;

  memcpy(text, "sha256:", 7);
  for (i = 0; i < 32; i++) {
    if (i > 0)
      text[n++] = ':';
    text[n++] = hex[sha[i] >> 4];
    text[n++] = hex[sha[i] & 15];
  }
  text[n] = '\0';
  snprintf(buf, len, "%s", text);
}

/* ---- per stream ---------------------------------------------------- */

/* mbedTLS calls this for each certificate of the server's chain, the
 * leaf (depth 0) last. The leaf is remembered for a report; with a pin
 * it must be the pinned certificate. */
static int on_verify(void *ud, mbedtls_x509_crt *crt, int depth,
                     uint32_t *flags) {
  xcm_tls *t = ud;
  leaf_info *li;

  if (depth != 0)
    return 0;
  if (t->leaf == NULL) {
    t->leaf = xcm__alloc(t->cfg->alloc, sizeof(*t->leaf));
    if (t->leaf == NULL)
      return MBEDTLS_ERR_X509_ALLOC_FAILED;
  }
  li = t->leaf;
  memset(li, 0, sizeof(*li));
  if (mbedtls_sha256_ret(crt->raw.p, crt->raw.len, li->sha256, 0) != 0)
    return MBEDTLS_ERR_X509_FATAL_ERROR;
  li->flags = *flags;
  li->self_signed =
      crt->issuer_raw.len == crt->subject_raw.len &&
      memcmp(crt->issuer_raw.p, crt->subject_raw.p, crt->subject_raw.len) == 0;
  if (mbedtls_x509_dn_gets(li->subject, sizeof li->subject, &crt->subject) < 0)
    snprintf(li->subject, sizeof li->subject, "?");
  if (mbedtls_x509_dn_gets(li->issuer, sizeof li->issuer, &crt->issuer) < 0)
    snprintf(li->issuer, sizeof li->issuer, "?");
  format_time(&crt->valid_from, li->valid_from, sizeof li->valid_from);
  format_time(&crt->valid_to, li->valid_to, sizeof li->valid_to);
  if (t->cfg->pinned && memcmp(li->sha256, t->cfg->pin, 32) != 0) {
    li->mismatch = 1;
    /* Any error but VERIFY_FAILED, which VERIFY_OPTIONAL forgives. */
    return MBEDTLS_ERR_X509_FATAL_ERROR;
  }
  return 0;
}

static int bio_send(void *ud, const unsigned char *buf, size_t len) {
  xcm_tls *t = ud;

  if (t->send(t->ud, (const char *)buf, len) != 0)
    return MBEDTLS_ERR_SSL_ALLOC_FAILED;
  return (int)len;
}

static int bio_recv(void *ud, unsigned char *buf, size_t len) {
  xcm_tls *t = ud;
  size_t n = t->recv(t->ud, (char *)buf, len);

  return n > 0 ? (int)n : MBEDTLS_ERR_SSL_WANT_READ;
}

int xcm__tls_new(xcm_tls **out, xcm_tls_config *cfg, int is_server,
                 const char *hostname, xcm_tls_send_fn send,
                 xcm_tls_recv_fn recv, void *ud) {
  const xcm_allocator *a = cfg->ctx->alloc;
  xcm_tls *t;
  int err;

  *out = NULL;
  if (!is_server != !cfg->is_server)
    return XCM_EINVAL;
  /* Without a name mbedTLS checks the chain but not whose it is. */
  if (cfg->verify && hostname == NULL)
    return XCM_EINVAL;
  t = xcm__alloc(a, sizeof(*t));
  if (t == NULL)
    return XCM_ENOMEM;
  mbedtls_ssl_init(&t->ssl);
  t->cfg = cfg;
  t->send = send;
  t->recv = recv;
  t->ud = ud;
  t->done = 0;
  t->refused = 0;
  t->leaf = NULL;
  err = mbedtls_ssl_setup(&t->ssl, &cfg->conf);
  if (err == 0 && !is_server && hostname != NULL)
    err = mbedtls_ssl_set_hostname(&t->ssl, hostname);
  if (err == 0 && !is_server && (cfg->verify || cfg->pinned))
    mbedtls_ssl_set_verify(&t->ssl, on_verify, t);
  if (err != 0) {
    mbedtls_ssl_free(&t->ssl);
    xcm__free(a, t);
    return err == MBEDTLS_ERR_SSL_ALLOC_FAILED ? XCM_ENOMEM : XCM_ETLS;
  }
  mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
  config_ref(cfg);
  *out = t;
  return 0;
}

void xcm__tls_free(xcm_tls *t) {
  xcm_tls_config *cfg;

  if (t == NULL)
    return;
  cfg = t->cfg;
  mbedtls_ssl_free(&t->ssl);
  xcm__free(cfg->alloc, t->leaf);
  xcm__free(cfg->alloc, t);
  xcm__tls_config_unref(cfg);
}

void xcm__tls_set_io(xcm_tls *t, xcm_tls_send_fn send, xcm_tls_recv_fn recv,
                     void *ud) {
  t->send = send;
  t->recv = recv;
  t->ud = ud;
}

/* After the handshake an mbedTLS 2.28 context reads its configuration
 * only through ssl.conf (the random generator for CBC's explicit IVs,
 * the endpoint, the limits): the handshake's state, which also points at
 * the certificates SNI chose, is freed once it is done. So the pointer
 * can change, to a configuration of the same role whose generator this
 * thread may use. */
int xcm__tls_set_config(xcm_tls *t, xcm_tls_config *cfg) {
  xcm_tls_config *old = t->cfg;

  if (cfg == NULL || !t->done || !cfg->is_server != !old->is_server)
    return XCM_EINVAL;
  if (cfg == old)
    return 0;
  config_ref(cfg);
  t->ssl.conf = &cfg->conf;
  t->cfg = cfg;
  xcm__tls_config_unref(old);
  return 0;
}

static void log_failure(xcm_tls *t, const char *what, int err,
                        const char *peer) {
  char why[160], info[512];
  uint32_t flags;
  char *p;

  mbed_text(err, why, sizeof why);
  if (err == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
    flags = mbedtls_ssl_get_verify_result(&t->ssl);
    mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
    /* One reason per line from mbedTLS; one log line here. */
    for (p = info; *p != '\0'; p++)
      if (*p == '\n')
        *p = p[1] != '\0' ? ';' : '\0';
    xcm__log(t->cfg->ctx, XCM_LOG_WARN, "TLS %s with %s failed: %s (%s)", what,
             peer, why, info);
    return;
  }
  xcm__log(t->cfg->ctx, XCM_LOG_WARN, "TLS %s with %s failed: %s", what, peer,
           why);
}

/* The reasons of flags in words, "; "-separated, for an operator. */
static void describe_flags(const leaf_info *li, uint32_t flags,
                           const char *host, char *buf, size_t len) {
  size_t n = 0;
  char rest[512], *p;

#define ADD(...)                                                               \
  do {                                                                         \
    if (n < len)                                                               \
      n += (size_t)snprintf(buf + n, len - n, "%s", n ? "; " : "");            \
    if (n < len)                                                               \
      n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__);                    \
  } while (0)
  buf[0] = '\0';
  if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
    if (li->self_signed)
      ADD("self-signed (issued by itself, not by a trusted CA)");
    else
      ADD("issued by an unknown CA (not in the trusted CAs)");
  }
  if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
    ADD("expired on %s", li->valid_to);
  if (flags & MBEDTLS_X509_BADCERT_FUTURE)
    ADD("not valid before %s", li->valid_from);
  if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
    ADD("name mismatch (it is not for \"%s\")", host ? host : "");
  flags &=
      ~(uint32_t)(MBEDTLS_X509_BADCERT_NOT_TRUSTED |
                  MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE |
                  MBEDTLS_X509_BADCERT_CN_MISMATCH);
  if (flags != 0 &&
      mbedtls_x509_crt_verify_info(rest, sizeof rest, "", flags) > 0) {
    for (p = rest; *p != '\0'; p++)
      if (*p == '\n')
        *p = p[1] != '\0' ? ';' : '\0';
    ADD("%s", rest);
  }
#undef ADD
  if (buf[0] == '\0')
    snprintf(buf, len, "not trusted");
}

/* The server's certificate was refused: tell the owner, with what it
 * needs to say what to do. */
static void report_refusal(xcm_tls *t) {
  const leaf_info *li = t->leaf;
  xcm_tls_refusal r;
  char why[512];

  memset(&r, 0, sizeof r);
  r.peer = t->ssl.hostname;
  memcpy(r.sha256, li->sha256, sizeof r.sha256);
  r.subject = li->subject;
  r.issuer = li->issuer;
  r.valid_from = li->valid_from;
  r.valid_to = li->valid_to;
  r.self_signed = li->self_signed;
  if (li->mismatch) {
    r.pin = t->cfg->pin;
    snprintf(why, sizeof why, "not the pinned certificate");
  } else {
    r.flags = mbedtls_ssl_get_verify_result(&t->ssl);
    describe_flags(li, r.flags, t->ssl.hostname, why, sizeof why);
  }
  r.why = why;
  t->cfg->refused(t->cfg->refused_ud, &r);
}

int xcm__tls_handshake(xcm_tls *t, const char *peer) {
  int err;

  if (t->done)
    return 0;
  err = mbedtls_ssl_handshake(&t->ssl);
  if (err == 0) {
    t->done = 1;
    if (t->cfg->pinned && t->leaf != NULL &&
        (t->leaf->flags & MBEDTLS_X509_BADCERT_EXPIRED) &&
        !t->cfg->pin_expiry_told) {
      /* Trusted all the same: refusing it would stop every link on a
       * date nobody chose, and the pin already names these bytes. */
      t->cfg->pin_expiry_told = 1;
      xcm__log(t->cfg->ctx, XCM_LOG_WARN,
               "TLS with %s: the pinned certificate expired on %s; it is "
               "still trusted because it is pinned, but give the server a "
               "new one (and pin that)",
               peer, t->leaf->valid_to);
    }
    /* Kept only for a refusal's report. */
    xcm__free(t->cfg->alloc, t->leaf);
    t->leaf = NULL;
    xcm__log(t->cfg->ctx, XCM_LOG_DEBUG, "TLS with %s: %s, %s", peer,
             mbedtls_ssl_get_version(&t->ssl),
             mbedtls_ssl_get_ciphersuite(&t->ssl));
    return 0;
  }
  if (err == MBEDTLS_ERR_SSL_WANT_READ || err == MBEDTLS_ERR_SSL_WANT_WRITE)
    return UV_EAGAIN;
  if (t->leaf != NULL && t->cfg->refused != NULL &&
      (t->leaf->mismatch || err == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)) {
    report_refusal(t);
    t->refused = 1;
    return XCM_ETLS;
  }
  log_failure(t, "handshake", err, peer);
  return err == MBEDTLS_ERR_SSL_ALLOC_FAILED ? XCM_ENOMEM : XCM_ETLS;
}

int xcm__tls_handshake_done(const xcm_tls *t) {
  return t->done;
}

int xcm__tls_read(xcm_tls *t, char *buf, size_t len, const char *peer) {
  int n = mbedtls_ssl_read(&t->ssl, (unsigned char *)buf, len);

  if (n > 0)
    return n;
  if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE)
    return UV_EAGAIN;
  /* 0 comes only from a transport EOF, which our input never reports. */
  if (n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
    return UV_EOF;
  log_failure(t, "read", n, peer);
  return n == MBEDTLS_ERR_SSL_ALLOC_FAILED ? XCM_ENOMEM : XCM_ETLS;
}

int xcm__tls_write(xcm_tls *t, const char *data, size_t len) {
  int n;

  while (len > 0) {
    n = mbedtls_ssl_write(&t->ssl, (const unsigned char *)data, len);
    if (n < 0)
      return n == MBEDTLS_ERR_SSL_ALLOC_FAILED ? XCM_ENOMEM : XCM_ETLS;
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

int xcm__tls_close_notify(xcm_tls *t) {
  return mbedtls_ssl_close_notify(&t->ssl) == 0 ? 0 : XCM_ETLS;
}

int xcm__tls_has_pending(const xcm_tls *t) {
  return mbedtls_ssl_get_bytes_avail(&t->ssl) > 0 ||
         mbedtls_ssl_check_pending(&t->ssl);
}

int xcm__tls_refused(const xcm_tls *t) {
  return t->refused;
}

const char *xcm__tls_alpn(const xcm_tls *t) {
  return mbedtls_ssl_get_alpn_protocol(&t->ssl);
}

/* What mbedtls_ssl_setup and the handshake leave allocated: the two
 * record buffers, the session (and the peer's certificate, kept by a
 * client), and the transform with its cipher contexts. The cipher
 * contexts' sizes are not public; an AES-GCM context pair is assumed. */
size_t xcm__tls_footprint(const xcm_tls *t) {
  const mbedtls_ssl_context *ssl = &t->ssl;
  size_t n = sizeof(*t);

  if (ssl->in_buf != NULL)
    n += MBEDTLS_SSL_IN_BUFFER_LEN;
  if (ssl->out_buf != NULL)
    n += MBEDTLS_SSL_OUT_BUFFER_LEN;
  if (ssl->session != NULL) {
    n += sizeof(*ssl->session);
    if (ssl->session->peer_cert != NULL)
      n += sizeof(mbedtls_x509_crt) + 2 * ssl->session->peer_cert->raw.len;
  }
  if (ssl->transform != NULL)
    n += sizeof(*ssl->transform) + 2 * 1100;
  if (ssl->handshake != NULL)
    n += sizeof(*ssl->handshake);
  if (ssl->hostname != NULL)
    n += strlen(ssl->hostname) + 1;
  return n;
}
