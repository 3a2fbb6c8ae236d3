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

/* A DNS host name: labels of letters, digits and '-' (not at either end), 1..63 each, 253 in all. */
bool cmk_is_valid_hostname(const char *name);

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

#define CMK_BAO_NAME_MAX 128

/*
 * An OpenBao role name as it goes into a request path:
 * ^[A-Za-z0-9._-]{1,128}$ and not "." or "..".  CMK_ERR_INVALID with
 * detail naming `field` otherwise.
 */
int cmk_check_role_name(const char *field, const char *role);

/*
 * An OpenBao mount or namespace path ("pki_client_certs", "team/pki"):
 * segments of [A-Za-z0-9._-] joined by single '/', no leading or trailing
 * '/', no "." or ".." segment, at most 128 characters.  CMK_ERR_INVALID
 * with detail naming `field` otherwise.
 */
int cmk_check_mount_path(const char *field, const char *path);

/* How many bytes of a value cmk_quote() shows before it writes "...". */
#define CMK_QUOTE_SHOWN 64
/* Room for the worst case: every shown byte as \xNN, then "..." and the NUL. */
#define CMK_QUOTE_SIZE (CMK_QUOTE_SHOWN * 4 + 4)

/*
 * Render an untrusted value for a message, without the surrounding quotes:
 * printable ASCII as is, '"' and '\\' escaped with a backslash, every other
 * byte (control characters, non-ASCII) as \xNN, and at most
 * CMK_QUOTE_SHOWN bytes of `s` followed by "..." when it is longer
 * (cmk_escape() with CMK_ESCAPE_QUOTES | CMK_ESCAPE_ASCII).  NULL renders
 * as "".  Only for values that are not secret.
 */
void cmk_quote(const char *s, char out[CMK_QUOTE_SIZE]);

#endif
