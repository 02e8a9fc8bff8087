#ifndef CCURL_SHIM_H
#define CCURL_SHIM_H
// libcurl 7.88 (Debian 12, OpenSSL flavour).
#include <curl/curl.h>
#endif
