/* libFuzzer target for xcmd's configuration (cmd/xcmd/config.h).
 *
 * The input is a whole file: our INI-like format through
 * xcmd_config_parse(), and, when it starts with '<', the Java CM's
 * manager.xml through xcmd_config_parse_manager_xml() as well (the load
 * function picks the same way).
 *
 * Besides ASan and UBSan, the target checks what the header promises and
 * aborts when a promise is broken: a failure leaves a message naming the
 * file and nothing to free; a success holds the required keys, one to
 * XCMD_MAX_LISTENERS listeners on real ports, and no half-configured
 * TLS. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* Abort with a message libFuzzer shows beside the stack. */
#define ENSURE(c)                                                              \
  do {                                                                         \
    if (!(c))                                                                  \
      broken(#c, __LINE__);                                                    \
  } while (0)

static void broken(const char *what, int line) {
  fprintf(stderr, "fuzz-config.c:%d: broken promise: %s\n", line, what);
  abort();
}

static unsigned touch(const char *s) {
  unsigned sum = 0;

  ENSURE(s != NULL);
  while (*s != '\0')
    sum += (unsigned char)*s++;
  return sum;
}

static void check_result(int rc, xcmd_config *cfg, const char *err, int xml) {
  unsigned i, sink = 0;

  if (rc != 0) {
    /* The message is ready to print: it names the file. */
    ENSURE(rc == XCM_ECONFIG || rc == XCM_ENOMEM ||
           (rc == XCMD_EPLACEHOLDER && !xml));
    ENSURE(strncmp(err, "fuzz.conf", 9) == 0);
    ENSURE(cfg->opt.domain == NULL && cfg->nlisteners == 0 &&
           cfg->owned_ == NULL && cfg->warnings == NULL);
    xcmd_config_free(cfg);
    return;
  }
  ENSURE(cfg->from_manager_xml == xml);
  sink += touch(cfg->opt.domain) + touch(cfg->opt.name) +
          touch(cfg->opt.secret) + touch(cfg->opt.server_host) +
          touch(cfg->opt.resource_prefix);
  ENSURE(cfg->opt.server_port >= 1 && cfg->opt.server_port <= 65535);
  ENSURE(cfg->opt.connections >= 1 && cfg->opt.connections <= 64);
  ENSURE(cfg->opt.max_stanza_preauth <= cfg->opt.max_stanza);
  ENSURE(cfg->opt.log_level == cfg->log_level);
  ENSURE(cfg->nlisteners >= 1 && cfg->nlisteners <= XCMD_MAX_LISTENERS);
  for (i = 0; i < cfg->nlisteners; i++) {
    const xcm_listen_options *lo = &cfg->listeners[i];
    sink += touch(lo->host);
    ENSURE(lo->port >= 1 && lo->port <= 65535);
    ENSURE((lo->cert_file == NULL) == (lo->key_file == NULL));
    if (!xml)
      ENSURE(!lo->direct_tls || lo->cert_file != NULL);
  }
  ENSURE(xml || cfg->cert_wanted == 0);
  ENSURE(xml || cfg->nwarnings == 0);
  for (i = 0; i < cfg->nwarnings; i++)
    ENSURE(strncmp(cfg->warnings[i], "fuzz.conf", 9) == 0);
  if (cfg->metrics_port != 0)
    sink += touch(cfg->metrics_host);
  /* The daemon's next step with a manager.xml. */
  rc = xcmd_config_set_cert(cfg, "/c.pem", "/k.pem");
  ENSURE(rc >= 0 && (rc > 0) == (cfg->cert_wanted != 0));
  for (i = 0; i < cfg->nlisteners; i++)
    if (cfg->cert_wanted & (1u << i))
      ENSURE(strcmp(cfg->listeners[i].cert_file, "/c.pem") == 0);
  xcmd_config_free(cfg);
  ENSURE(sink != 1); /* keeps the reads */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  xcmd_config cfg;
  char err[256];
  int rc;

  err[0] = '\0';
  rc = xcmd_config_parse(text, size, "fuzz.conf", &cfg, err, sizeof(err));
  check_result(rc, &cfg, err, 0);
  if (size > 0 && text[0] == '<') {
    err[0] = '\0';
    rc = xcmd_config_parse_manager_xml(text, size, "fuzz.conf", &cfg, err,
                                       sizeof(err));
    check_result(rc, &cfg, err, 1);
  }
  return 0;
}
