/* Writes the certificates the stream tests use into the directory given
 * as argv[1], with mbedTLS's x509write API, so that no test depends on a
 * file downloaded or made by hand, nor on the openssl command:
 *
 *   ca.pem                   a test CA (its key is not written)
 *   server.pem, -key.pem     localhost and example.test, by the CA
 *   second.pem, -key.pem     second.test, by the CA (SNI)
 *   other.pem, -key.pem      other.test, by the CA (wrong host)
 *   expired.pem, -key.pem    localhost, expired on 2021-01-01 00:00:00
 *   future.pem, -key.pem     localhost, valid from 2090-01-01 00:00:00
 *   self.pem, -key.pem       localhost, self-signed (untrusted)
 *   stray-key.pem            a key that matches none of them
 *
 * Keys are ECDSA P-256: made in milliseconds, unlike RSA. */
#include <stdio.h>
#include <string.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static const char *outdir;

static int die(const char *what, int err) {
  fprintf(stderr, "certgen: %s failed (-0x%04x)\n", what, (unsigned)-err);
  return 1;
}

static int write_file(const char *name, const unsigned char *pem) {
  char path[4096];
  FILE *f;

  snprintf(path, sizeof path, "%s/%s", outdir, name);
  f = fopen(path, "w");
  if (f == NULL) {
    perror(path);
    return 1;
  }
  fputs((const char *)pem, f);
  return fclose(f) != 0;
}

static int make_key(mbedtls_pk_context *key, const char *name) {
  unsigned char pem[4096];
  int err;

  mbedtls_pk_init(key);
  err = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
  if (err == 0)
    err = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key),
                              mbedtls_ctr_drbg_random, &drbg);
  if (err != 0)
    return die("key generation", err);
  if (name == NULL)
    return 0;
  err = mbedtls_pk_write_key_pem(key, pem, sizeof pem);
  if (err != 0)
    return die("key export", err);
  return write_file(name, pem);
}

/* subjectAltName with dNSName entries. asn1write writes backwards, from
 * the end of the buffer. */
static int set_san(mbedtls_x509write_cert *crt, const char *const *names) {
  unsigned char buf[512];
  unsigned char *p = buf + sizeof buf;
  size_t len = 0, i, n = 0;
  int r;

  while (names[n] != NULL)
    n++;
  for (i = n; i-- > 0;) {
    size_t one = 0;

    r = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)names[i],
                                      strlen(names[i]));
    if (r < 0)
      return r;
    one += (size_t)r;
    r = mbedtls_asn1_write_len(&p, buf, one);
    if (r < 0)
      return r;
    one += (size_t)r;
    r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2);
    if (r < 0)
      return r;
    len += one + (size_t)r;
  }
  r = mbedtls_asn1_write_len(&p, buf, len);
  if (r < 0)
    return r;
  len += (size_t)r;
  r = mbedtls_asn1_write_tag(&p, buf,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
  if (r < 0)
    return r;
  len += (size_t)r;
  return mbedtls_x509write_crt_set_extension(
      crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
      MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p, len);
}

typedef struct spec {
  const char *file; /* certificate file; the key goes to <base>-key.pem */
  const char *key_file;
  const char *subject;
  const char *from, *to; /* YYYYMMDDhhmmss */
  const char *san[3];
  int is_ca;
  int self_signed;
} spec;

static int make_cert(const spec *sp, int serial_no, mbedtls_pk_context *ca_key,
                     const char *ca_subject, mbedtls_pk_context *key_out) {
  mbedtls_x509write_cert crt;
  mbedtls_mpi serial;
  mbedtls_pk_context key;
  unsigned char pem[8192];
  int err;

  if (make_key(&key, sp->key_file) != 0)
    return 1;
  mbedtls_x509write_crt_init(&crt);
  mbedtls_mpi_init(&serial);
  mbedtls_mpi_lset(&serial, serial_no);
  mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&crt, &key);
  mbedtls_x509write_crt_set_issuer_key(&crt, sp->self_signed ? &key : ca_key);
  err = mbedtls_x509write_crt_set_serial(&crt, &serial);
  if (err == 0)
    err = mbedtls_x509write_crt_set_validity(&crt, sp->from, sp->to);
  if (err == 0)
    err = mbedtls_x509write_crt_set_subject_name(&crt, sp->subject);
  if (err == 0)
    err = mbedtls_x509write_crt_set_issuer_name(
        &crt, sp->self_signed ? sp->subject : ca_subject);
  if (err == 0)
    err = mbedtls_x509write_crt_set_basic_constraints(&crt, sp->is_ca, -1);
  if (err == 0)
    err = mbedtls_x509write_crt_set_subject_key_identifier(&crt);
  if (err == 0 && sp->is_ca)
    err = mbedtls_x509write_crt_set_key_usage(
        &crt, MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN);
  if (err == 0 && sp->san[0] != NULL)
    err = set_san(&crt, sp->san);
  if (err == 0)
    err = mbedtls_x509write_crt_pem(&crt, pem, sizeof pem,
                                    mbedtls_ctr_drbg_random, &drbg);
  mbedtls_x509write_crt_free(&crt);
  mbedtls_mpi_free(&serial);
  if (err != 0)
    return die(sp->file, err);
  if (key_out != NULL)
    *key_out = key;
  else
    mbedtls_pk_free(&key);
  return write_file(sp->file, pem);
}

int main(int argc, char **argv) {
  static const char ca_subject[] = "CN=xcm test CA,O=libxcm tests";
  static const spec ca = {
      "ca.pem",         NULL,   ca_subject, "20200101000000",
      "20991231235959", {NULL}, 1,          1};
  static const spec leaves[] = {
      {"server.pem",
       "server-key.pem",
       "CN=localhost",
       "20200101000000",
       "20991231235959",
       {"localhost", "example.test", NULL},
       0,
       0},
      {"second.pem",
       "second-key.pem",
       "CN=second.test",
       "20200101000000",
       "20991231235959",
       {"second.test", NULL},
       0,
       0},
      {"other.pem",
       "other-key.pem",
       "CN=other.test",
       "20200101000000",
       "20991231235959",
       {"other.test", NULL},
       0,
       0},
      {"expired.pem",
       "expired-key.pem",
       "CN=localhost",
       "20000101000000",
       "20210101000000",
       {"localhost", NULL},
       0,
       0},
      {"future.pem",
       "future-key.pem",
       "CN=localhost",
       "20900101000000",
       "20991231235959",
       {"localhost", NULL},
       0,
       0},
      {"self.pem",
       "self-key.pem",
       "CN=localhost",
       "20200101000000",
       "20991231235959",
       {"localhost", NULL},
       0,
       1},
  };
  mbedtls_pk_context ca_key, stray;
  size_t i;
  int err;

  if (argc != 2) {
    fprintf(stderr, "usage: certgen OUTDIR\n");
    return 2;
  }
  outdir = argv[1];
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  err = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                              (const unsigned char *)"xcm certgen", 11);
  if (err != 0)
    return die("seeding the DRBG", err);
  if (make_cert(&ca, 1, NULL, NULL, &ca_key) != 0)
    return 1;
  for (i = 0; i < sizeof leaves / sizeof leaves[0]; i++)
    if (make_cert(&leaves[i], (int)i + 2, &ca_key, ca_subject, NULL) != 0)
      return 1;
  if (make_key(&stray, "stray-key.pem") != 0)
    return 1;
  mbedtls_pk_free(&stray);
  mbedtls_pk_free(&ca_key);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  return 0;
}
