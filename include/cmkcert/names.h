/*
 * names.h - validation of every name that reaches a path, a database key or
 * an OpenBao request (DESIGN §3).
 */
#ifndef CMKCERT_NAMES_H
#define CMKCERT_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMK_TENANT_MAX 40
#define CMK_TYPE_MAX 32
#define CMK_HOST_MAX 253

/* ^[A-Za-z0-9._~-]{1,40}$ and not "." or "..". */
bool cmk_is_valid_tenant(const char *tenant);

/* ^[a-z0-9_]{1,32}$ */
bool cmk_is_valid_type(const char *type);

/* Same checks, returning CMK_ERR_INVALID with detail naming `field` and why. */
int cmk_check_tenant(const char *field, const char *tenant);
int cmk_check_type(const char *field, const char *type);

/*
 * Parse "HOST:PORT" or "[IPv6]:PORT": host a DNS name or IP literal of at
 * most 253 characters, port 1..65535.  CMK_ERR_INVALID with detail
 * naming the endpoint when the port is missing, 0, above 65535 or the host
 * is empty or holds characters a host name cannot have.
 */
int cmk_parse_endpoint(const char *endpoint, char host[CMK_HOST_MAX + 1], uint16_t *port);

/* Split "<tenant>-<type>" at the last '-' into valid parts; false when either part is invalid. */
bool cmk_split_tenant_type(const char *name, size_t len, char tenant[CMK_TENANT_MAX + 1],
			   char type[CMK_TYPE_MAX + 1]);

#endif
