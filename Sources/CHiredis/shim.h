#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H
// hiredis 0.14 (Debian 12). Only the non-variadic (...Argv) forms are used from Swift.
#include <hiredis/hiredis.h>
#include <sys/time.h>

// REDIS_REPLY_* and REDIS_ERR_* are macros; expose them as constants Swift can see.
static const int chiredis_reply_string = REDIS_REPLY_STRING;
static const int chiredis_reply_array = REDIS_REPLY_ARRAY;
static const int chiredis_reply_integer = REDIS_REPLY_INTEGER;
static const int chiredis_reply_nil = REDIS_REPLY_NIL;
static const int chiredis_reply_status = REDIS_REPLY_STATUS;
static const int chiredis_reply_error = REDIS_REPLY_ERROR;
static const int chiredis_ok = REDIS_OK;
static const int chiredis_err_io = REDIS_ERR_IO;
static const int chiredis_err_eof = REDIS_ERR_EOF;
static const int chiredis_err_protocol = REDIS_ERR_PROTOCOL;
static const int chiredis_err_timeout_errno = 11; /* EAGAIN: a socket timeout */
#endif
