#include "proto/policy.h"

#include <limits.h>
#include <string.h>

#include "proto/cmproto.h"
#include "xcm/error.h"

static int is(const xcm_xml_node *n, const char *ns, const char *name) {
  return strcmp(n->ns != NULL ? n->ns : "", ns) == 0 &&
         strcmp(n->name, name) == 0;
}

static int has_child(const xcm_xml_node *n, const char *ns, const char *name) {
  const xcm_xml_node *c;

  for (c = n->children; c != NULL; c = c->next)
    if (is(c, ns, name))
      return 1;
  return 0;
}

static int xml_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The element's text without surrounding whitespace, which a
 * pretty-printing server may add. */
static const char *trimmed(const xcm_xml_node *n, size_t *len) {
  const char *s = n->text != NULL ? n->text : "";
  size_t l = n->text != NULL ? n->text_len : 0;

  while (l > 0 && xml_space(s[0])) {
    s++;
    l--;
  }
  while (l > 0 && xml_space(s[l - 1]))
    l--;
  *len = l;
  return s;
}

/* RFC 4422 section 3.1. Anything else is skipped rather than refused:
 * the name is copied into the features every client sees, and one odd
 * entry should not cost the CM the whole configuration. */
static int mechanism_ok(const char *s, size_t len) {
  size_t i;

  if (len == 0 || len > XCM_MECHANISM_MAX_LEN)
    return 0;
  for (i = 0; i < len; i++)
    if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
          s[i] == '-' || s[i] == '_'))
      return 0;
  return 1;
}

int xcm_policy_has_mechanism(const xcm_policy *p, const char *name,
                             size_t len) {
  unsigned i;

  for (i = 0; i < p->nmechanisms && i < XCM_POLICY_MAX_MECHANISMS; i++)
    if (strlen(p->mechanisms[i]) == len &&
        memcmp(p->mechanisms[i], name, len) == 0)
      return 1;
  return 0;
}

/* Returns how many mechanism elements were not kept, so that the caller
 * can say so: a capped list must not shrink without a word. */
static int read_mechanisms(const xcm_xml_node *mechs, xcm_policy *p) {
  const xcm_xml_node *c;
  const char *s;
  size_t len;
  int skipped = 0;

  for (c = mechs->children; c != NULL; c = c->next) {
    if (!is(c, XCM_NS_SASL, "mechanism"))
      continue;
    s = trimmed(c, &len);
    if (p->nmechanisms == XCM_POLICY_MAX_MECHANISMS || !mechanism_ok(s, len) ||
        xcm_policy_has_mechanism(p, s, len)) {
      skipped++;
      continue;
    }
    memcpy(p->mechanisms[p->nmechanisms], s, len);
    p->mechanisms[p->nmechanisms][len] = '\0';
    p->nmechanisms++;
  }
  return skipped;
}

static int offers_zlib(const xcm_xml_node *compression) {
  const xcm_xml_node *c;
  const char *s;
  size_t len;

  for (c = compression->children; c != NULL; c = c->next) {
    if (!is(c, XCM_NS_COMPRESS_FEATURE, "method"))
      continue;
    s = trimmed(c, &len);
    if (len == 4 && memcmp(s, "zlib", 4) == 0)
      return 1;
  }
  return 0;
}

int xcm__policy_from_config(const xcm_xml_node *iq, xcm_policy *out) {
  const xcm_xml_node *config = NULL, *c;
  const char *type;
  xcm_policy p;
  int skipped = 0;

  if (iq == NULL || !is(iq, XCM_NS_CM, "iq"))
    return XCM_EPROTO;
  type = xcm__xml_node_attr(iq, "type");
  if (type == NULL || strcmp(type, "set") != 0)
    return XCM_EPROTO;
  for (c = iq->children; c != NULL && config == NULL; c = c->next)
    if (is(c, XCM_NS_CM_PROTOCOL, "configuration"))
      config = c;
  if (config == NULL)
    return XCM_EPROTO;

  memset(&p, 0, sizeof(p));
  for (c = config->children; c != NULL; c = c->next) {
    if (is(c, XCM_NS_TLS, "starttls"))
      p.tls = has_child(c, XCM_NS_TLS, "required") ? XCM_TLS_REQUIRED
                                                   : XCM_TLS_OPTIONAL;
    else if (is(c, XCM_NS_SASL, "mechanisms"))
      skipped += read_mechanisms(c, &p);
    else if (is(c, XCM_NS_COMPRESS_FEATURE, "compression"))
      p.compression_zlib = p.compression_zlib || offers_zlib(c);
    else if (is(c, XCM_NS_IQ_AUTH_FEATURE, "auth"))
      p.legacy_auth = 1;
    else if (is(c, XCM_NS_IQ_REGISTER_FEATURE, "register"))
      p.registration = 1;
  }
  *out = p;
  return skipped;
}

/* Appends s as snprintf would: out keeps whatever fits and its NUL, and
 * *len counts the whole text so the caller can report the size needed. */
static void put(char *out, size_t cap, size_t *len, const char *s) {
  size_t n = strlen(s), room;

  if (*len < cap) {
    room = cap - *len - 1;
    if (n < room)
      room = n;
    memcpy(out + *len, s, room);
    out[*len + room] = '\0';
  }
  *len += n;
}

int xcm_policy_describe(char *out, size_t cap, const xcm_policy *p) {
  static const char *const tls[] = {"off", "optional", "required"};
  size_t len = 0;
  unsigned i;

  if (out == NULL)
    cap = 0;
  put(out, cap, &len, "tls=");
  put(out, cap, &len,
      (unsigned)p->tls <= XCM_TLS_REQUIRED ? tls[p->tls] : "invalid");
  put(out, cap, &len, " mechanisms=");
  if (p->nmechanisms == 0)
    put(out, cap, &len, "none");
  for (i = 0; i < p->nmechanisms && i < XCM_POLICY_MAX_MECHANISMS; i++) {
    if (i > 0)
      put(out, cap, &len, ",");
    put(out, cap, &len, p->mechanisms[i]);
  }
  put(out, cap, &len,
      p->compression_zlib ? " compression=zlib" : " compression=none");
  put(out, cap, &len, p->legacy_auth ? " auth=yes" : " auth=no");
  put(out, cap, &len, p->registration ? " register=yes" : " register=no");
  return len > INT_MAX ? XCM_ETOOBIG : (int)len;
}
