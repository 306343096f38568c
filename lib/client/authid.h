/* Who a client says it is in its SASL <auth/>, for XEP-0198 resumption.
 *
 * A resumed session must belong to the user who authenticated the new
 * connection, and the CM only relays SASL: the server checks the
 * password and answers <success/>, and tells nothing of whom it
 * authenticated. So the CM reads the claimed identity from the client's
 * initial response (PLAIN: authzid, else authcid; SCRAM-*: the GS2
 * header's a=, else n=) and trusts it only once the server's <success/>
 * answers that very <auth/> (client/request.h). Other mechanisms
 * (EXTERNAL, DIGEST-MD5, ANONYMOUS, ...) name nobody we can read: such a
 * client cannot resume, and binds a new session instead. */
#ifndef XCM_CLIENT_AUTHID_H
#define XCM_CLIENT_AUTHID_H

#include <stddef.h>

#include "xcm/alloc.h"

/* The bare JID claimed by an <auth/> with mechanism mech and base64 text
 * b64 (b64_len bytes), in the domain when it names only a user:
 * "user@domain", ASCII lowercased, NUL-terminated, allocated with a (the
 * caller frees it). NULL when the mechanism names nobody, the text is
 * not what the mechanism says, or memory ran out. */
char *xcm__authid_from_auth(const xcm_allocator *a, const char *mech,
                            const char *b64, size_t b64_len,
                            const char *domain);

/* Whether the bare part of jid (up to any '/') is bare, ignoring ASCII
 * case (the server's nodeprep lowercases what users type). */
int xcm__authid_matches(const char *bare, const char *jid);

#endif
