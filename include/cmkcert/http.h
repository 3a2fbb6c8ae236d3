/*
 * http.h - the libcurl boundary: one HTTPS request at a time on a reused
 * handle, TLS always verified against the given CA file.
 */
#ifndef CMKCERT_HTTP_H
#define CMKCERT_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct cmk_http;

struct cmk_http_response {
	long status;
	char *body;            /* NUL-terminated, may be empty; locked memory (cmk_locked_alloc), wiped by clear */
	size_t body_len;
	int64_t retry_after;   /* seconds from a Retry-After header, -1 when absent */
	char *location;        /* Location header (307), NULL when absent */
	char *content_type;    /* NULL when absent */
};

/*
 * `ca_cert` is the PEM file to verify servers against (required: there is
 * no insecure mode; the system trust store is not used).  `timeout_s`
 * bounds each whole request.  CMK_ERR_NOTFOUND when the CA file cannot be
 * read, CMK_ERR_INVALID for a missing file name or a timeout <= 0.
 */
int cmk_http_new(const char *ca_cert, long timeout_s, struct cmk_http **out);
void cmk_http_free(struct cmk_http *h);

/*
 * Perform `method` on `url` with `headers` (NULL-terminated "Name: value"
 * strings, may be NULL) and an optional body.  Any HTTP status is a
 * success of this function; transport failures return
 * CMK_ERR_UNREACHABLE (resolve/connect/refused/reset before an answer),
 * CMK_ERR_TLS (certificate verification or handshake), CMK_ERR_TIMEOUT,
 * or CMK_ERR_IO, with curl's message in the detail; an URL that is not
 * https:// gives CMK_ERR_INVALID and an answer larger than 8 MiB
 * CMK_ERR_PROTOCOL.  Redirects are never followed (the caller sees the
 * 3xx and its Location).  *resp is overwritten, so clear an earlier
 * answer first; on failure it holds nothing.  A handle serves one thread.
 */
int cmk_http_request(struct cmk_http *h, const char *method, const char *url, const char *const *headers,
		     const char *body, size_t body_len, struct cmk_http_response *resp);

/* Wipe and free the response fields; safe on a zeroed struct. */
void cmk_http_response_clear(struct cmk_http_response *resp);

/*
 * Library-wide init and cleanup (curl_global_init_mem / curl_global_cleanup).
 * Init installs an allocator that wipes every block curl frees and checks
 * that libcurl's TLS library can wipe decrypted records; it is idempotent
 * and cmk_http_new() calls it when main() did not.  Call cleanup once from
 * main(), after the last handle is freed.
 */
int cmk_http_global_init(void);
void cmk_http_global_cleanup(void);

#endif
