/* XML output: escaping caller strings into an xcm_buf.
 *
 * Every function appends to b and returns 0, XCM_ENOMEM, or XCM_EINVAL
 * when the input holds something no escaping can put into an XML 1.0
 * document (a control character other than tab, line feed and carriage
 * return, a byte sequence that is not UTF-8, a surrogate, U+FFFE or
 * U+FFFF). On any error b is left exactly as it was, so a builder can
 * return without leaving half an element behind.
 *
 * Whatever the input, the output is well-formed: stream ids, JIDs and
 * language tags reach these functions from clients, and one unescaped
 * quote would let a client write markup into another stream. */
#ifndef XCM_XML_WRITER_H
#define XCM_XML_WRITER_H

#include <stddef.h>

#include "util/buf.h"

/* Character data: escapes & < > and carriage return (which an XML
 * parser would otherwise turn into a line feed). */
int xcm__xml_escape_text(xcm_buf *b, const char *s, size_t len);

/* An attribute value for either quote style: escapes & < > " ' and
 * tab, line feed and carriage return, which attribute-value
 * normalisation would otherwise turn into spaces. */
int xcm__xml_escape_attr(xcm_buf *b, const char *s, size_t len);

/* Appends ` name="value"` with value escaped. name is the caller's own
 * constant and is written as is; value is NUL-terminated. */
int xcm__xml_attr(xcm_buf *b, const char *name, const char *value);

/* 1 if s[0..len) may appear in an XML document once escaped, else 0. */
int xcm__xml_chars_valid(const char *s, size_t len);

#endif
