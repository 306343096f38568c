/* The API boundary's side of the options: every default and every check
 * of xcm_options and xcm_listen_options lives in options.c, with its
 * error message. The layers below (client, upstream, session, core,
 * xml) receive resolved values and take no default of their own: a
 * field they get holds what it means. */
#ifndef XCM_OPTIONS_H
#define XCM_OPTIONS_H

#include "client/client.h"
#include "upstream/pool.h"
#include "xcm/xcm.h"

/* The caller's options over the defaults (see util/sized.h for what is
 * read of an older or newer caller's struct), checked: 0, or XCM_EINVAL
 * with errbuf naming the field and what it accepts. Strings are
 * borrowed from in. */
int xcm__options_resolve(xcm_options *out, const xcm_options *in, char *errbuf,
                         size_t errlen);
int xcm__listen_options_resolve(xcm_listen_options *out,
                                const xcm_listen_options *in, char *errbuf,
                                size_t errlen);

/* The upstream pool's settings from resolved options (strings borrowed
 * from o), its internal ones (backoff, request timeout, water marks,
 * hold, linger) at their defaults. */
void xcm__pool_options_from(xcm_pool_options *po, const xcm_options *o);
/* Only the internal defaults, for tests of the pool alone. */
void xcm__pool_options_defaults(xcm_pool_options *po);

/* A listener's client settings from resolved options (strings borrowed
 * from o); the TLS, policy and counter fields are the caller's to set. */
void xcm__client_cfg_from(xcm_client_cfg *cfg, const xcm_options *o);
/* The defaults alone, for tests of the client side. */
void xcm__client_cfg_defaults(xcm_client_cfg *cfg);

#endif
