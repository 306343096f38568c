/* libFuzzer target: who a SASL <auth/> names (lib/client/authid.h), the
 * identity a XEP-0198 resumption is checked against.
 *
 * Input layout: byte 0 picks the mechanism (bits 0-1: PLAIN,
 * SCRAM-SHA-1, SCRAM-SHA-256, DIGEST-MD5) and bit 2 how the rest is
 * given: base64-encoded here first (so the mechanism's own parser sees
 * the bytes), or as the element's text as is (the decoder sees them).
 *
 * Whatever is named must be a bare JID as the function promises: not
 * empty, no NUL, no '/', no ASCII capital, and it must match itself as a
 * bound JID's bare part, with and without a resource. Anything else
 * aborts. */
#include <mbedtls/base64.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/authid.h"

static const char *const mechs[4] = {"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256",
                                     "DIGEST-MD5"};

static void ensure(int ok, const char *why, const char *got) {
  if (ok)
    return;
  fprintf(stderr, "fuzz-authid: %s: \"%s\"\n", why, got);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char b64[4096], full[4200];
  const char *mech, *text;
  size_t len = 0, i;
  char *got;

  if (size < 1 || size > 2048)
    return 0;
  mech = mechs[data[0] & 3];
  if (data[0] & 4) {
    text = (const char *)data + 1;
    len = size - 1;
  } else {
    if (mbedtls_base64_encode((unsigned char *)b64, sizeof b64, &len, data + 1,
                              size - 1) != 0)
      return 0;
    text = b64;
  }
  got = xcm__authid_from_auth(NULL, mech, text, len, "example.test");
  if (got == NULL)
    return 0;
  ensure(got[0] != '\0', "empty", got);
  ensure(strchr(got, '@') != NULL, "no domain", got);
  for (i = 0; got[i] != '\0'; i++) {
    ensure(got[i] != '/', "a resource", got);
    ensure(!(got[i] >= 'A' && got[i] <= 'Z'), "not lowercased", got);
  }
  ensure(xcm__authid_matches(got, got), "does not match itself", got);
  snprintf(full, sizeof full, "%s/res", got);
  ensure(xcm__authid_matches(got, full), "does not match its full JID", got);
  free(got);
  return 0;
}
