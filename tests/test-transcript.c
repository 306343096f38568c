/* The capture loader: every capture loads, and what it gives matches the
 * files' own "NB" headers, counted here a second, simpler way. */
#include "harness.h"
#include "transcript.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The chunk headers of a capture, found by looking at every line on its
 * own. That works for these captures because no payload line starts with
 * '['; the loader itself trusts the byte counts instead. */
#define MAX_SCAN 512

typedef struct header_scan {
  size_t n;
  char conn[MAX_SCAN][16];
  int is_send[MAX_SCAN];
  size_t len[MAX_SCAN];
  size_t more;          /* headers past the MAX_SCAN recorded */
  size_t payload_bytes; /* bytes on lines that are neither header nor note */
} header_scan;

static int scan_headers(const char *path, header_scan *hs) {
  FILE *f = fopen(path, "rb");
  char line[8192];

  memset(hs, 0, sizeof(*hs));
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL) {
    double t;
    char conn[16], dir[8];
    size_t len;
    int used = 0;

    if (sscanf(line, "[ +%lfs] %15s %7s %zuB\n%n", &t, conn, dir, &len,
               &used) == 4 &&
        used == (int)strlen(line)) {
      if (hs->n < MAX_SCAN) {
        memcpy(hs->conn[hs->n], conn, sizeof(conn));
        hs->is_send[hs->n] = strcmp(dir, "SEND") == 0;
        hs->len[hs->n] = len;
        hs->n++;
      } else {
        hs->more++;
      }
    } else if (line[0] != '#' && strncmp(line, "    repr: ", 10) != 0) {
      hs->payload_bytes += strlen(line);
    }
  }
  fclose(f);
  return 0;
}

static int is_capture(const char *name) {
  size_t n = strlen(name);

  return n > 4 && strcmp(name + n - 4, ".txt") == 0;
}

static void check_file(const char *dir, const char *name) {
  char path[4096];
  xcm_transcript t;
  header_scan hs;
  size_t i, payload_bytes = 0;
  int err;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  err = xcm_transcript_load(path, &t);
  if (!CHECK_INT(err, 0)) {
    xcm_test_note("%s", t.error);
    return;
  }
  REQUIRE(scan_headers(path, &hs) == 0);
  CHECK_INT(hs.more, 0);
  CHECK(t.nchunks > 0);
  if (!CHECK_INT(t.nchunks, hs.n))
    xcm_test_note("in %s", name);
  for (i = 0; i < t.nchunks && i < hs.n; i++) {
    const xcm_transcript_chunk *c = &t.chunks[i];

    CHECK_STR(c->conn, hs.conn[i]);
    CHECK_INT(c->is_send, hs.is_send[i]);
    if (!CHECK_INT(c->len, hs.len[i]))
      xcm_test_note("chunk %zu of %s", i, name);
    /* No NUL inside a payload, and one right after it. */
    CHECK_INT(strlen(c->bytes), c->len);
    payload_bytes += c->len + 1;
  }
  /* Every byte that is not a header or a note belongs to some payload. */
  CHECK_INT(payload_bytes, hs.payload_bytes);
  xcm_transcript_free(&t);
}

static void every_capture_loads(void) {
  const char *dir = xcm_transcript_dir();
  DIR *d = opendir(dir);
  struct dirent *e;
  size_t files = 0;

  if (!CHECK(d != NULL)) {
    xcm_test_note("cannot open %s", dir);
    return;
  }
  while ((e = readdir(d)) != NULL) {
    if (!is_capture(e->d_name))
      continue;
    check_file(dir, e->d_name);
    files++;
  }
  closedir(d);
  /* Ten captures shipped with the protocol document. */
  CHECK(files >= 10);
}

/* Chunk counts, from the files as they were checked in. */
static void known_chunk_counts(void) {
  static const struct {
    const char *name;
    size_t chunks;
  } want[] = {
      {"transcript-cm.txt", 47},
      {"transcript-probe-a-dup-names.txt", 38},
      {"transcript-probe-b-cm-tcp-close.txt", 44},
      {"transcript-probe-c-server-closes-client.txt", 20},
      {"transcript-probe-d-failed.txt", 24},
      {"transcript-probe-d2-failed-offline.txt", 31},
      {"transcript-probe-e-unknown-stream.txt", 20},
      {"transcript-probe-e2-no-streamid.txt", 8},
      {"transcript-probe-f-two-stanzas.txt", 16},
      {"transcript-probe-g-handshake.txt", 21},
  };
  size_t i;

  for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    xcm_transcript t;

    if (!CHECK_INT(xcm_transcript_load_named(want[i].name, &t), 0)) {
      xcm_test_note("%s", t.error);
      continue;
    }
    if (!CHECK_INT(t.nchunks, want[i].chunks))
      xcm_test_note("in %s", want[i].name);
    xcm_transcript_free(&t);
  }
}

static void main_flow_chunks(void) {
  static const char header[] =
      "<stream:stream xmlns:stream=\"http://etherx.jabber.org/streams\" "
      "xmlns=\"jabber:connectionmanager\" to=\"cm1/worker-1\" "
      "version=\"1.0\">";
  xcm_transcript t;
  size_t i, spaces = 0;

  REQUIRE(xcm_transcript_load_named("transcript-cm.txt", &t) == 0);
  REQUIRE(t.nchunks >= 4);
  CHECK_STR(t.chunks[0].conn, "CM1");
  CHECK_INT(t.chunks[0].is_send, 1);
  CHECK_INT(t.chunks[0].len, 128);
  CHECK_MEM(t.chunks[0].bytes, t.chunks[0].len, header, strlen(header));
  CHECK(t.chunks[0].time > 0.12 && t.chunks[0].time < 0.13);
  CHECK_INT(t.chunks[1].is_send, 0);
  CHECK_INT(t.chunks[1].len, 281);
  CHECK_STR(t.chunks[3].bytes, "<handshake></handshake>");
  /* Openfire's whitespace keepalive: one space, shown with a repr line. */
  for (i = 0; i < t.nchunks; i++) {
    if (t.chunks[i].len == 1) {
      CHECK_STR(t.chunks[i].bytes, " ");
      CHECK_INT(t.chunks[i].is_send, 0);
      spaces++;
    }
  }
  CHECK_INT(spaces, 1);
  xcm_transcript_free(&t);
}

/* Write text to a temporary file and load it. */
static int load_text(const char *text, xcm_transcript *t) {
  char path[] = "/tmp/xcm-transcript-XXXXXX";
  int fd = mkstemp(path), err;
  size_t len = strlen(text);

  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text, len) == (ssize_t)len);
  close(fd);
  err = xcm_transcript_load(path, t);
  unlink(path);
  return err;
}

static void payload_with_newlines(void) {
  xcm_transcript t;

  REQUIRE(load_text("# note\n"
                    "[   +0.500s] C1 SEND 5B\na\n[\nc\n"
                    "[  +12.250s] C2b RECV 2B\n\t\n\n"
                    "    repr: b'\\t\\n'\n"
                    "[   +1.000s] C1 RECV 0B\n\n",
                    &t) == 0);
  REQUIRE(t.nchunks == 3);
  CHECK_MEM(t.chunks[0].bytes, t.chunks[0].len, "a\n[\nc", 5);
  CHECK_STR(t.chunks[1].conn, "C2b");
  CHECK(t.chunks[1].time == 12.25);
  CHECK_MEM(t.chunks[1].bytes, t.chunks[1].len, "\t\n", 2);
  CHECK_INT(t.chunks[2].len, 0);
  xcm_transcript_free(&t);
}

static void malformed_captures(void) {
  static const struct {
    const char *text;
    const char *where; /* expected in the error message */
  } bad[] = {
      {"[   +0.1s] C1 SEND 10B\nshort\n", ":1: payload"},
      {"# a\n[   +0.1s] C1 SEND 3B\nabcd\n", ":2: payload"},
      {"[   +0.1s] C1 RECV 1B\n \n    repr: b'\\t'\n", ":3: repr"},
      {"[   +0.1s] C1 RECV 1B\n \n    repr: b'  '\n", ":3: repr"},
      {"    repr: b' '\n", ":1: repr"},
      {"[   +0.1s] C1 SEND 1B\nx\nstray\n", ":3: expected"},
      {"[   +0.1s] C1 PEEK 1B\nx\n", ":1: header"},
      {"[   +0.1s] C1 SEND B\nx\n", ":1: header"},
      {"[   +0.1s] C1 SEND 1\nx\n", ":1: header"},
      {"[0.1s] C1 SEND 1B\nx\n", ":1: header"},
  };
  size_t i;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    xcm_transcript t;

    if (!CHECK_INT(load_text(bad[i].text, &t), -EINVAL)) {
      xcm_test_note("case %zu loaded", i);
      xcm_transcript_free(&t);
      continue;
    }
    if (!CHECK(strstr(t.error, bad[i].where) != NULL))
      xcm_test_note("case %zu: %s", i, t.error);
    CHECK(t.chunks == NULL && t.data == NULL);
  }
}

static void missing_file(void) {
  xcm_transcript t;

  CHECK_INT(xcm_transcript_load_named("no-such-capture.txt", &t), -ENOENT);
  CHECK(strstr(t.error, "no-such-capture.txt") != NULL);
  xcm_transcript_free(&t);
}

static const xcm_test tests[] = {
    {"every_capture_loads", every_capture_loads},
    {"known_chunk_counts", known_chunk_counts},
    {"main_flow_chunks", main_flow_chunks},
    {"payload_with_newlines", payload_with_newlines},
    {"malformed_captures", malformed_captures},
    {"missing_file", missing_file},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
