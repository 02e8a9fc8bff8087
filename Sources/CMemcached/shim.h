#ifndef CMEMCACHED_SHIM_H
#define CMEMCACHED_SHIM_H
// libmemcached 1.1.4 (Debian 12) and its pool utility.
#include <libmemcached-1.0/memcached.h>
#include <libmemcachedutil-1.0/pool.h>
#endif
