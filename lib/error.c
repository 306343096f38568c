#include "xcm/error.h"

#include <uv.h>

typedef struct {
  int code;
  const char *name;
  const char *text;
} err_entry;

static const err_entry errors[] = {
    {XCM_OK, "XCM_OK", "success"},
    {XCM_ENOMEM, "XCM_ENOMEM", "out of memory"},
    {XCM_EINVAL, "XCM_EINVAL", "invalid argument"},
    {XCM_EXML, "XCM_EXML", "XML stream error"},
    {XCM_ELIMIT, "XCM_ELIMIT", "limit exceeded"},
    {XCM_EPROTO, "XCM_EPROTO", "protocol violation"},
    {XCM_ECLOSED, "XCM_ECLOSED", "closed"},
    {XCM_ENOTFOUND, "XCM_ENOTFOUND", "not found"},
    {XCM_EAUTH, "XCM_EAUTH", "authentication failed"},
    {XCM_ETLS, "XCM_ETLS", "TLS error"},
    {XCM_EZLIB, "XCM_EZLIB", "compression error"},
    {XCM_ETIMEDOUT, "XCM_ETIMEDOUT", "timed out"},
    {XCM_EBUSY, "XCM_EBUSY", "resource temporarily exhausted"},
    {XCM_ECONFIG, "XCM_ECONFIG", "invalid configuration"},
    {XCM_ETOOBIG, "XCM_ETOOBIG", "output does not fit"},
    {XCM_EAGAIN, "XCM_EAGAIN", "taken, but the transport is full for now"},
};

static const err_entry *find(int err) {
  size_t i;

  for (i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
    if (errors[i].code == err)
      return &errors[i];
  return NULL;
}

const char *xcm_strerror(int err) {
  const err_entry *e = find(err);

  if (e != NULL)
    return e->text;
  /* Anything else is a system error carried as a libuv code. */
  return uv_strerror(err);
}

const char *xcm_err_name(int err) {
  const err_entry *e = find(err);

  if (e != NULL)
    return e->name;
  return uv_err_name(err);
}
