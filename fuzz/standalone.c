/* A main() for a libFuzzer target built without libFuzzer (gcc): runs
 * LLVMFuzzerTestOneInput once on every file named, or on every file in
 * a directory named, and prints TAP, so the seeds (and any crash kept
 * as a regression) run in the ordinary test suite, under valgrind too. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path, int n) {
  FILE *fp = fopen(path, "rb");
  uint8_t *buf;
  long len;

  if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0) {
    printf("not ok %d - %s (unreadable)\n", n, path);
    if (fp != NULL)
      fclose(fp);
    return 1;
  }
  rewind(fp);
  /* One byte more, so that an empty file is not a NULL buffer. */
  buf = malloc((size_t)len + 1);
  if (buf == NULL || fread(buf, 1, (size_t)len, fp) != (size_t)len) {
    printf("not ok %d - %s (unreadable)\n", n, path);
    free(buf);
    fclose(fp);
    return 1;
  }
  fclose(fp);
  LLVMFuzzerTestOneInput(buf, (size_t)len);
  free(buf);
  printf("ok %d - %s\n", n, path);
  return 0;
}

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
  char *paths[4096];
  int n = 0, i, failed = 0;

  for (i = 1; i < argc; i++) {
    struct stat st;
    DIR *d;
    struct dirent *e;

    if (stat(argv[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
      if (n < 4096)
        paths[n++] = strdup(argv[i]);
      continue;
    }
    d = opendir(argv[i]);
    while (d != NULL && (e = readdir(d)) != NULL) {
      char p[4096];

      if (e->d_name[0] == '.' || n >= 4096)
        continue;
      snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
      paths[n++] = strdup(p);
    }
    if (d != NULL)
      closedir(d);
  }
  qsort(paths, (size_t)n, sizeof paths[0], cmp);
  printf("1..%d\n", n);
  for (i = 0; i < n; i++) {
    failed |= run_file(paths[i], i + 1);
    free(paths[i]);
  }
  return failed;
}
