/* The configuration of xcmd, the daemon.
 *
 * Two formats come in through xcmd_config_load(): our own INI-like file
 * (doc/config.md has the reference, doc/xcmd.conf.example a full one) and,
 * so that a site can switch without rewriting anything first, the Java
 * connection manager's conf/manager.xml, recognised by its <jive> root.
 * Either way the result is one xcmd_config holding everything xcmd needs
 * to start its workers: the xcm_options each worker's instance gets, the
 * listeners, and the daemon's own settings.
 *
 * Errors are a negative code (XCM_ECONFIG for a bad file, XCMD_EPLACEHOLDER
 * for one still holding a package's placeholders, XCM_ENOMEM, or a
 * negative errno value when the file cannot be read) and a message in err
 * that names the file, the line and the key, ready to print as is:
 *
 *   xcmd.conf:12: key 'idle_timeout' in [limits]: '5x' is not a duration
 *   (use e.g. 30s, 5m)
 *
 * Every field holds its effective value after a successful load, defaults
 * included, so the daemon can print or check them without knowing the
 * defaults itself. */
#ifndef XCMD_CONFIG_H
#define XCMD_CONFIG_H

#include <stddef.h>

#include "xcm/xcm.h"

#define XCMD_MAX_LISTENERS 16

/* The value a packaged configuration carries where only the operator can
 * know the answer (debian/xcmd.conf: [server] domain, [upstream] host,
 * name and secret). A string key set to exactly this, quoted or not, makes
 * an otherwise valid file fail with XCMD_EPLACEHOLDER and a message that
 * names every such key and what to put there; the daemon then exits with
 * XCMD_EXIT_PLACEHOLDER. */
#define XCMD_PLACEHOLDER "CHANGE-ME"

/* xcmd_config_load/parse: the file is valid except that it still holds
 * XCMD_PLACEHOLDER values. (Not an XCM_E* code: it is the daemon's own.) */
#define XCMD_EPLACEHOLDER (-4100)

/* xcmd's exit status then: LSB's "program is not configured", which
 * systemd shows as 6/NOTCONFIGURED and the packaged unit does not restart
 * on (RestartPreventExitStatus=6). */
#define XCMD_EXIT_PLACEHOLDER 6

typedef enum xcmd_log_target {
  XCMD_LOG_STDERR = 0,
  XCMD_LOG_SYSLOG
} xcmd_log_target;

typedef struct xcmd_config {
  /* For every worker's xcm_cm_new(). Its strings are owned by the config.
   * log, log_ud and alloc stay NULL: they are the daemon's to set.
   * log_level repeats the level below. */
  xcm_options opt;

  /* In the order of the file. Strings owned by the config. */
  xcm_listen_options listeners[XCMD_MAX_LISTENERS];
  unsigned nlisteners;
  /* Bit i set: listener i takes its certificate and key from the command
   * line (xcmd_config_set_cert). Only manager.xml sets these bits, since
   * its Java keystore cannot be read; the daemon must refuse to start
   * when a bit is set and no --cert/--key was given. */
  unsigned cert_wanted;

  unsigned workers; /* event-loop threads; 0: one per core */

  xcmd_log_target log_target;
  int log_level;  /* XCM_LOG_ERROR .. XCM_LOG_DEBUG */
  int log_bodies; /* a debugging aid: message bodies in the debug log */

  const char *metrics_host; /* NULL: no metrics listener */
  int metrics_port;

  const char *pid_file; /* NULL: none */
  const char *user;     /* NULL: keep the user xcmd was started as */
  const char *group;    /* NULL: the user's own group, if user is set */
  unsigned drain_ms;    /* how long a graceful shutdown waits */
  /* SIGUSR2: the sessions end spread over this long (xcm_cm_drain). */
  unsigned drain_period_ms;

  int from_manager_xml; /* the file was a Java CM's manager.xml */

  /* What a manager.xml held that could not be carried over, one line each
   * ("manager.xml:57: xmpp.httpbind.enabled: ..."), in the order of the
   * file. The daemon logs them as warnings. Empty for our own format. */
  char **warnings;
  unsigned nwarnings;

  /* Private: every string above points into one of these. */
  char **owned_;
  unsigned nowned_;
  unsigned owned_cap_;
} xcmd_config;

/* Read path and parse it as a manager.xml when its first character (after
 * a byte order mark and white space) is '<', as our format otherwise.
 * Error messages name the file as path was given. On failure out holds
 * nothing to free (xcmd_config_free on it is harmless). */
int xcmd_config_load(const char *path, xcmd_config *out, char *err,
                     size_t errlen);

/* Parse text[0..len) in our format; name_for_errors stands for the file in
 * messages. text need not be NUL-terminated. */
int xcmd_config_parse(const char *text, size_t len, const char *name_for_errors,
                      xcmd_config *out, char *err, size_t errlen);

/* Parse text[0..len) as a Java CM manager.xml (expat; doctypes refused). */
int xcmd_config_parse_manager_xml(const char *text, size_t len,
                                  const char *name_for_errors, xcmd_config *out,
                                  char *err, size_t errlen);

/* Give every listener whose bit is set in cert_wanted the PEM certificate
 * chain cert and its key. Returns how many listeners took them, or
 * XCM_EINVAL (cert or key NULL or empty) or XCM_ENOMEM. */
int xcmd_config_set_cert(xcmd_config *cfg, const char *cert, const char *key);

/* Free what a successful load or parse allocated and zero the struct. */
void xcmd_config_free(xcmd_config *cfg);

#endif
