/* Reading the client policy out of Openfire's configuration iq. */
#ifndef XCM_PROTO_POLICY_H
#define XCM_PROTO_POLICY_H

#include "xcm/policy.h"
#include "xml/reader.h"

/* Fills out from iq, the tree of a configuration push: an iq of type set
 * in jabber:connectionmanager with a <configuration/> child (the tree
 * must reach the <mechanism/> elements, four levels from the iq).
 * Unknown children and compression methods are ignored, and so are
 * mechanism names that break RFC 4422's syntax, repeats, and any beyond
 * XCM_POLICY_MAX_MECHANISMS. Returns how many <mechanism/> elements were
 * left out that way (0 when all were kept: the caller logs the others),
 * or XCM_EPROTO when iq is not a configuration push; out is written only
 * on success, so a bad push leaves the policy in force untouched. */
int xcm__policy_from_config(const xcm_xml_node *iq, xcm_policy *out);

#endif
