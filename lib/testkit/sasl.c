/* SASL as the server side: PLAIN (RFC 4616), ANONYMOUS (RFC 4505) and
 * SCRAM-SHA-1 (RFC 5802), against the testkit's accounts. Answers are
 * the RFC 6120 elements, delivered through Openfire's raw-text framing as
 * the captures' <success/> is. Any other mechanism, DIGEST-MD5 included
 * although it is announced by default, fails with invalid-mechanism. */
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>

#include "proto/cmproto.h"
#include "testkit/testkit.h"
#include "util/alloc.h"
#include "xcm/error.h"

#define SCRAM_ITERATIONS 4096 /* Openfire's default */
#define SHA1_LEN 20

static void send_raw(xcm_tk_session *s, const char *open, const char *b64,
                     size_t b64_len, const char *close) {
  xcm_buf b;

  xcm__buf_init(&b, s->kit->ctx.alloc);
  if (xcm__buf_append_str(&b, open) == 0 &&
      xcm__buf_append(&b, b64, b64_len) == 0 &&
      xcm__buf_append_str(&b, close) == 0)
    xcm__tk_deliver(s, b.data, b.len, 1);
  xcm__buf_free(&b);
}

static void failure(xcm_tk_session *s, const char *cond) {
  xcm_buf b;

  s->kit->stats.auth_failed++;
  s->sasl = XCM_TK_SASL_NONE;
  xcm__buf_init(&b, s->kit->ctx.alloc);
  if (xcm__buf_append_str(&b, "<failure xmlns=\"" XCM_NS_SASL "\"><") == 0 &&
      xcm__buf_append_str(&b, cond) == 0 &&
      xcm__buf_append_str(&b, "/></failure>") == 0)
    xcm__tk_deliver(s, b.data, b.len, 1);
  xcm__buf_free(&b);
}

/* The captures' exact success, or one with additional data. */
static void success(xcm_tk_session *s, xcm_tk_user *u, const char *b64,
                    size_t b64_len) {
  xcm__tk_authed(s, u);
  s->sasl = XCM_TK_SASL_NONE;
  if (b64_len == 0)
    send_raw(s, "<success xmlns=\"" XCM_NS_SASL "\"/>", "", 0, "");
  else
    send_raw(s, "<success xmlns=\"" XCM_NS_SASL "\">", b64, b64_len,
             "</success>");
}

static void challenge(xcm_tk_session *s, const char *b64, size_t b64_len) {
  if (b64_len == 0)
    send_raw(s, "<challenge xmlns=\"" XCM_NS_SASL "\"/>", "", 0, "");
  else
    send_raw(s, "<challenge xmlns=\"" XCM_NS_SASL "\">", b64, b64_len,
             "</challenge>");
}

/* Base64 of an element's text into out (NUL-terminated); "=" stands for
 * empty data (RFC 6120, 6.4.2). */
static int decode(xcm_tk_session *s, const char *text, size_t len,
                  xcm_buf *out) {
  size_t olen = 0;

  while (len > 0 &&
         (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')) {
    text++;
    len--;
  }
  while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n' ||
                     text[len - 1] == '\r' || text[len - 1] == '\t'))
    len--;
  xcm__buf_reset(out);
  if (xcm__buf_reserve(out, len + 1) != 0)
    return XCM_ENOMEM;
  if (len == 1 && text[0] == '=') {
    out->data[0] = '\0';
    return 0;
  }
  if (mbedtls_base64_decode((unsigned char *)out->data, out->cap, &olen,
                            (const unsigned char *)text, len) != 0) {
    failure(s, "incorrect-encoding");
    return XCM_EPROTO;
  }
  out->len = olen;
  out->data[olen] = '\0';
  return 0;
}

static int encode(const unsigned char *data, size_t len, xcm_buf *out) {
  size_t olen = 0, need = 4 * ((len + 2) / 3) + 1;

  xcm__buf_reset(out);
  if (xcm__buf_reserve(out, need) != 0)
    return XCM_ENOMEM;
  if (mbedtls_base64_encode((unsigned char *)out->data, out->cap, &olen, data,
                            len) != 0)
    return XCM_EINVAL;
  out->len = olen;
  return 0;
}

/* An authorization identity is accepted when it names the user itself
 * (as a bare JID or as the plain name). */
static int authzid_ok(const xcm_testkit *kit, const xcm_tk_user *u,
                      const char *z, size_t len) {
  size_t n = strlen(u->name), d = strlen(kit->domain);

  if (len == 0 || (len == n && memcmp(z, u->name, n) == 0))
    return 1;
  return len == n + 1 + d && memcmp(z, u->name, n) == 0 && z[n] == '@' &&
         memcmp(z + n + 1, kit->domain, d) == 0;
}

/* ---- PLAIN and ANONYMOUS ------------------------------------------- */

static void plain(xcm_tk_session *s, const char *data, size_t len) {
  const char *authcid, *pass, *nul1, *nul2;
  xcm_tk_user *u;

  nul1 = memchr(data, '\0', len);
  nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - data))
                      : NULL;
  if (nul2 == NULL ||
      memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - data)) != NULL) {
    failure(s, "malformed-request");
    return;
  }
  authcid = nul1 + 1;
  pass = nul2 + 1;
  u = xcm__tk_check_password(s->kit, authcid, (size_t)(nul2 - authcid), pass,
                             len - (size_t)(pass - data));
  if (u == NULL) {
    failure(s, "not-authorized");
    return;
  }
  if (!authzid_ok(s->kit, u, data, (size_t)(nul1 - data))) {
    failure(s, "invalid-authzid");
    return;
  }
  success(s, u, NULL, 0);
}

static int usable_node(const char *s) {
  return s[0] != '\0' && strlen(s) < 64 &&
         strpbrk(s, "\"&'/:<>@ \t\r\n") == NULL;
}

/* Openfire names an anonymous user after its stream id. */
static void anonymous(xcm_tk_session *s) {
  xcm_testkit *kit = s->kit;
  char name[XCM_TK_ID_LEN + 1];
  const char *n = s->sid;
  xcm_tk_user *u;

  while (!usable_node(n) || xcm__tk_user(kit, n, strlen(n)) != NULL) {
    xcm__tk_random_id(kit, name, XCM_TK_ID_LEN);
    n = name;
  }
  if (xcm__tk_user_add(kit, n, NULL, 1, &u) != 0) {
    failure(s, "temporary-auth-failure");
    return;
  }
  success(s, u, NULL, 0);
}

/* ---- SCRAM-SHA-1 --------------------------------------------------- */

static int hmac(const unsigned char *key, size_t klen, const void *data,
                size_t len, unsigned char out[SHA1_LEN]) {
  return mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), key, klen,
                         data, len, out);
}

static int salt_password(const xcm_tk_user *u, unsigned char out[SHA1_LEN]) {
  mbedtls_md_context_t md;
  int err;

  mbedtls_md_init(&md);
  err = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), 1);
  if (err == 0)
    err = mbedtls_pkcs5_pbkdf2_hmac(
        &md, (const unsigned char *)u->password, strlen(u->password), u->salt,
        sizeof(u->salt), SCRAM_ITERATIONS, SHA1_LEN, out);
  mbedtls_md_free(&md);
  return err;
}

/* A saslname with =2C and =3D decoded; 0 for a malformed one. */
static size_t unescape_name(const char *in, size_t len, char *out) {
  size_t i, n = 0;

  for (i = 0; i < len; i++) {
    if (in[i] != '=') {
      out[n++] = in[i];
    } else if (i + 2 < len && in[i + 1] == '2' && in[i + 2] == 'C') {
      out[n++] = ',';
      i += 2;
    } else if (i + 2 < len && in[i + 1] == '3' && in[i + 2] == 'D') {
      out[n++] = '=';
      i += 2;
    } else {
      return 0;
    }
  }
  return n;
}

/* The value of attribute "k=" at the start of *p (up to the next ','),
 * advancing *p past it. */
static int scram_attr(const char **p, const char *end, char k, const char **v,
                      size_t *vlen) {
  const char *s = *p, *comma;

  if (end - s < 2 || s[0] != k || s[1] != '=')
    return 0;
  s += 2;
  comma = memchr(s, ',', (size_t)(end - s));
  *v = s;
  *vlen = comma != NULL ? (size_t)(comma - s) : (size_t)(end - s);
  *p = comma != NULL ? comma + 1 : end;
  return 1;
}

static void scram_first(xcm_tk_session *s, const char *msg, size_t len) {
  xcm_testkit *kit = s->kit;
  const xcm_allocator *a = kit->ctx.alloc;
  const char *p = msg, *end = msg + len, *authz = NULL, *bare, *user, *cnonce;
  size_t authz_len = 0, user_len, cnonce_len, name_len;
  unsigned char rnd[18];
  char name[256];
  xcm_buf snonce, salt, first;
  xcm_tk_user *u;
  int err;

  if (len < 3 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',') {
    /* p=: the client wants channel binding, which is not offered. */
    failure(s, p[0] == 'p' ? "not-authorized" : "malformed-request");
    return;
  }
  p += 2;
  if (*p == 'a') {
    if (!scram_attr(&p, end, 'a', &authz, &authz_len)) {
      failure(s, "malformed-request");
      return;
    }
  } else if (*p == ',') {
    p++;
  } else {
    failure(s, "malformed-request");
    return;
  }
  bare = p;
  if (!scram_attr(&p, end, 'n', &user, &user_len) ||
      !scram_attr(&p, end, 'r', &cnonce, &cnonce_len) || cnonce_len == 0 ||
      user_len >= sizeof(name) ||
      (name_len = unescape_name(user, user_len, name)) == 0) {
    failure(s, "malformed-request");
    return;
  }
  u = xcm__tk_user(kit, name, name_len);
  if (u == NULL || u->anonymous || u->password == NULL) {
    failure(s, "not-authorized");
    return;
  }
  if (authz != NULL && !authzid_ok(kit, u, authz, authz_len)) {
    failure(s, "invalid-authzid");
    return;
  }
  xcm__buf_init(&snonce, a);
  xcm__buf_init(&salt, a);
  xcm__buf_init(&first, a);
  err = xcm__random(rnd, sizeof(rnd));
  if (err == 0)
    err = encode(rnd, sizeof(rnd), &snonce);
  if (err == 0)
    err = encode(u->salt, sizeof(u->salt), &salt);
  if (err == 0)
    err = salt_password(u, s->salted);
  if (err == 0) {
    s->sasl_nonce = xcm__alloc(a, cnonce_len + snonce.len + 1);
    s->sasl_gs2 = xcm__strndup(a, msg, (size_t)(bare - msg));
    if (s->sasl_nonce == NULL || s->sasl_gs2 == NULL) {
      err = XCM_ENOMEM;
    } else {
      memcpy(s->sasl_nonce, cnonce, cnonce_len);
      memcpy(s->sasl_nonce + cnonce_len, snonce.data, snonce.len);
      s->sasl_nonce[cnonce_len + snonce.len] = '\0';
    }
  }
  if (err == 0)
    err = xcm__buf_append_str(&first, "r=");
  if (err == 0)
    err = xcm__buf_append_str(&first, s->sasl_nonce);
  if (err == 0)
    err = xcm__buf_append_str(&first, ",s=");
  if (err == 0)
    err = xcm__buf_append(&first, salt.data, salt.len);
  if (err == 0)
    err = xcm__buf_append_str(&first, ",i=4096");
  xcm__buf_reset(&s->sasl_msg);
  if (err == 0)
    err = xcm__buf_append(&s->sasl_msg, bare, (size_t)(end - bare));
  if (err == 0)
    err = xcm__buf_append_char(&s->sasl_msg, ',');
  if (err == 0)
    err = xcm__buf_append(&s->sasl_msg, first.data, first.len);
  if (err == 0)
    err = encode((const unsigned char *)first.data, first.len, &salt);
  if (err == 0) {
    s->sasl = XCM_TK_SASL_SCRAM_FINAL_WAIT;
    s->sasl_user = u;
    challenge(s, salt.data, salt.len);
  } else {
    failure(s, "temporary-auth-failure");
  }
  xcm__buf_free(&snonce);
  xcm__buf_free(&salt);
  xcm__buf_free(&first);
}

static void scram_final(xcm_tk_session *s, const char *msg, size_t len) {
  const xcm_allocator *a = s->kit->ctx.alloc;
  const char *p = msg, *end = msg + len, *c, *r, *proof_b64, *pp;
  size_t c_len, r_len, proof_len = 0, without_len;
  unsigned char client_key[SHA1_LEN], stored[SHA1_LEN], sig[SHA1_LEN];
  unsigned char proof[SHA1_LEN + 4], check[SHA1_LEN], server_key[SHA1_LEN];
  xcm_buf gs2, auth, out;
  unsigned diff = 0;
  int err, i;

  pp = NULL;
  for (i = (int)len - 3; i >= 0; i--) {
    if (memcmp(msg + i, ",p=", 3) == 0) {
      pp = msg + i;
      break;
    }
  }
  if (pp == NULL || !scram_attr(&p, end, 'c', &c, &c_len) ||
      !scram_attr(&p, end, 'r', &r, &r_len)) {
    failure(s, "malformed-request");
    return;
  }
  without_len = (size_t)(pp - msg);
  proof_b64 = pp + 3;
  if (mbedtls_base64_decode(proof, sizeof(proof), &proof_len,
                            (const unsigned char *)proof_b64,
                            (size_t)(end - proof_b64)) != 0 ||
      proof_len != SHA1_LEN) {
    failure(s, "malformed-request");
    return;
  }
  xcm__buf_init(&gs2, a);
  xcm__buf_init(&auth, a);
  xcm__buf_init(&out, a);
  err = encode((const unsigned char *)s->sasl_gs2, strlen(s->sasl_gs2), &gs2);
  if (err == 0 &&
      (gs2.len != c_len || memcmp(gs2.data, c, c_len) != 0 ||
       strlen(s->sasl_nonce) != r_len || memcmp(s->sasl_nonce, r, r_len) != 0))
    err = XCM_EAUTH;
  if (err == 0)
    err = xcm__buf_append(&auth, s->sasl_msg.data, s->sasl_msg.len);
  if (err == 0)
    err = xcm__buf_append_char(&auth, ',');
  if (err == 0)
    err = xcm__buf_append(&auth, msg, without_len);
  if (err == 0)
    err = hmac(s->salted, SHA1_LEN, "Client Key", 10, client_key);
  if (err == 0)
    err = mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), client_key,
                     SHA1_LEN, stored);
  if (err == 0)
    err = hmac(stored, SHA1_LEN, auth.data, auth.len, sig);
  if (err == 0) {
    /* ClientKey = proof XOR signature; its hash must be StoredKey. */
    for (i = 0; i < SHA1_LEN; i++)
      proof[i] ^= sig[i];
    err = mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), proof,
                     SHA1_LEN, check);
  }
  for (i = 0; err == 0 && i < SHA1_LEN; i++)
    diff |= (unsigned)(check[i] ^ stored[i]);
  if (err == 0 && diff != 0)
    err = XCM_EAUTH;
  if (err == 0)
    err = hmac(s->salted, SHA1_LEN, "Server Key", 10, server_key);
  if (err == 0)
    err = hmac(server_key, SHA1_LEN, auth.data, auth.len, sig);
  if (err == 0)
    err = encode(sig, SHA1_LEN, &gs2);
  if (err == 0) {
    xcm_buf v;

    xcm__buf_init(&v, a);
    err = xcm__buf_append_str(&v, "v=");
    if (err == 0)
      err = xcm__buf_append(&v, gs2.data, gs2.len);
    if (err == 0)
      err = encode((const unsigned char *)v.data, v.len, &out);
    xcm__buf_free(&v);
  }
  if (err == 0)
    success(s, s->sasl_user, out.data, out.len);
  else
    failure(s, err == XCM_EAUTH ? "not-authorized" : "temporary-auth-failure");
  xcm__buf_free(&gs2);
  xcm__buf_free(&auth);
  xcm__buf_free(&out);
}

/* ---- the exchange -------------------------------------------------- */

void xcm__tk_sasl_reset(xcm_tk_session *s) {
  const xcm_allocator *a = s->kit->ctx.alloc;

  s->sasl = XCM_TK_SASL_NONE;
  xcm__buf_free(&s->sasl_msg);
  xcm__free(a, s->sasl_gs2);
  xcm__free(a, s->sasl_nonce);
  s->sasl_gs2 = s->sasl_nonce = NULL;
  s->sasl_user = NULL;
  memset(s->salted, 0, sizeof(s->salted));
}

static void on_auth(xcm_tk_session *s, const xcm_xml_node *el) {
  const xcm_policy *p = &s->kit->opt.client_policy;
  const char *mech = xcm__xml_node_attr(el, "mechanism");
  xcm_buf data;

  xcm__tk_sasl_reset(s);
  if (s->authed) {
    failure(s, "aborted");
    return;
  }
  if (mech == NULL || !xcm_policy_has_mechanism(p, mech, strlen(mech))) {
    failure(s, "invalid-mechanism");
    return;
  }
  xcm__buf_init(&data, s->kit->ctx.alloc);
  if (strcmp(mech, "ANONYMOUS") == 0) {
    anonymous(s);
  } else if (strcmp(mech, "PLAIN") == 0 || strcmp(mech, "SCRAM-SHA-1") == 0) {
    int scram = mech[0] == 'S';

    if (el->text == NULL || el->text_len == 0) {
      /* No initial response: ask for it with an empty challenge. */
      s->sasl = scram ? XCM_TK_SASL_SCRAM_FIRST_WAIT : XCM_TK_SASL_PLAIN_WAIT;
      challenge(s, "", 0);
    } else if (decode(s, el->text, el->text_len, &data) == 0) {
      if (scram)
        scram_first(s, data.data != NULL ? data.data : "", data.len);
      else
        plain(s, data.data != NULL ? data.data : "", data.len);
    }
  } else {
    failure(s, "invalid-mechanism");
  }
  xcm__buf_free(&data);
}

static void on_response(xcm_tk_session *s, const xcm_xml_node *el) {
  enum xcm_tk_sasl state = s->sasl;
  xcm_buf data;

  if (state == XCM_TK_SASL_NONE) {
    failure(s, "malformed-request");
    return;
  }
  xcm__buf_init(&data, s->kit->ctx.alloc);
  if (decode(s, el->text != NULL ? el->text : "", el->text_len, &data) == 0) {
    const char *d = data.data != NULL ? data.data : "";

    if (state == XCM_TK_SASL_PLAIN_WAIT) {
      s->sasl = XCM_TK_SASL_NONE;
      plain(s, d, data.len);
    } else if (state == XCM_TK_SASL_SCRAM_FIRST_WAIT) {
      s->sasl = XCM_TK_SASL_NONE;
      scram_first(s, d, data.len);
    } else {
      scram_final(s, d, data.len);
      xcm__tk_sasl_reset(s);
    }
  } else {
    xcm__tk_sasl_reset(s);
  }
  xcm__buf_free(&data);
}

void xcm__tk_sasl(xcm_tk_session *s, const xcm_xml_node *el) {
  if (strcmp(el->name, "auth") == 0) {
    on_auth(s, el);
  } else if (strcmp(el->name, "response") == 0) {
    on_response(s, el);
  } else {
    xcm__tk_sasl_reset(s);
    failure(s, "aborted");
  }
}
