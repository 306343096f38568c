/* One hexadecimal digit's value: for character references (xml/scan.c)
 * and certificate fingerprints (transport/tls.c). Inline: the scanner
 * calls it per digit. */
#ifndef XCM_UTIL_HEX_H
#define XCM_UTIL_HEX_H

/* 0 to 15, or -1 if c is not a hexadecimal digit. */
static inline int xcm__hex_digit(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

#endif
