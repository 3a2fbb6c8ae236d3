/*
 * openbao_int.h - the parts of the OpenBao client that openbao.c (requests,
 * retries, authentication), openbao_pki.c (PKI operations) and
 * openbao_parse.c (answers) share, and that the unit tests exercise without
 * a server: answer parsers, error classification, the retry delay and the
 * token upkeep decision.  Not installed; not part of the library's contract.
 */
#ifndef CMKCERT_OPENBAO_INT_H
#define CMKCERT_OPENBAO_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmkcert/http.h"
#include "cmkcert/json.h"
#include "cmkcert/openbao.h"

/* Retry policy (reference §6, §9.12): full jitter below a capped exponential ceiling. */
#define CMK_BAO_BACKOFF_BASE_MS 250
#define CMK_BAO_BACKOFF_CAP_MS 10000
#define CMK_BAO_RETRY_AFTER_CAP_S 60

/* The "auth" block of a login or renew-self answer. */
struct cmk_bao_auth {
	char *client_token;        /* wiped by cmk_bao_auth_clear */
	int64_t lease_duration;    /* token TTL in seconds, 0 = never expires */
	bool renewable;
	struct cmk_bao_warnings warnings;
};
void cmk_bao_auth_clear(struct cmk_bao_auth *a);

/*
 * Error answers.  cmk_bao_status_code() gives the code for a final status:
 * 400 and other 4xx -> REJECTED, 403 -> DENIED, 404 -> NOTFOUND,
 * 429 -> RATELIMIT, 503 -> SEALED, other 5xx -> SERVER, anything else
 * (an unexpected 1xx/2xx/3xx) -> PROTOCOL.
 */
int cmk_bao_status_code(long status);

/*
 * The server's words for an error answer: the "errors" list joined by "; ",
 * each multierror text ("1 error occurred:\n\t* permission denied\n\n")
 * reduced to its items, control characters replaced; the status text
 * ("Not Found") when the list is empty or the body is not an error envelope.
 */
void cmk_bao_error_text(long status, const char *body, size_t len, char *buf, size_t size);

/* cmk_fail(cmk_bao_status_code(status), "<path>: <status>: <error text>"). */
int cmk_bao_fail_answer(const char *path, long status, const char *body, size_t len);

/* Status codes worth asking again: 429, 500, 502, 503, 504. */
bool cmk_bao_status_is_retryable(long status);

/*
 * Delay before retry number `attempt` (0 = first retry): Retry-After seconds
 * when the server sent one (>= 0), capped at 60 s; otherwise a uniformly
 * random point (from `random`) in [0, min(10 s, 250 ms * 2^attempt)].
 */
int64_t cmk_bao_backoff_ms(int attempt, int64_t retry_after_s, uint32_t random);

/* What a token needs before the next call. */
enum cmk_bao_token_action {
	CMK_BAO_TOKEN_KEEP,
	CMK_BAO_TOKEN_RENEW,
	CMK_BAO_TOKEN_LOGIN,
};

/*
 * No token, or an expired one: log in.  A token with less than a third of
 * `ttl_s` left: renew it when renewable, else log in before it runs out.
 * ttl_s 0 never expires.  `age_ms` is the time since the TTL was granted.
 */
enum cmk_bao_token_action cmk_bao_token_action(bool have_token, int64_t ttl_s, bool renewable, int64_t age_ms);

/*
 * Parsers of success answers.  Each takes the whole body, fills *out (which
 * it clears first and leaves cleared on failure) and returns 0,
 * CMK_ERR_PROTOCOL naming the answer and the field when the shape is wrong,
 * or CMK_ERR_NOMEM.  Strings inside the parsed JSON that held a token or a
 * private key are wiped before it is released.
 */
int cmk_bao_parse_health(const char *body, size_t len, struct cmk_bao_health *out);
int cmk_bao_parse_auth(const char *body, size_t len, struct cmk_bao_auth *out);
/* lookup-self; *creation_ttl (optional) is the TTL the token was created with. */
int cmk_bao_parse_lookup(const char *body, size_t len, struct cmk_bao_token_info *out, int64_t *creation_ttl);
/* issue (with_key: private_key required) or sign answer. */
int cmk_bao_parse_cert(const char *body, size_t len, bool with_key, struct cmk_bao_cert *out);
/* revoke: 204 or data null -> revoked false (warnings say why). */
int cmk_bao_parse_revocation(long status, const char *body, size_t len, struct cmk_bao_revocation *out);
int cmk_bao_parse_role(const char *body, size_t len, struct cmk_bao_role *out);
/* cert/ca_chain: data.ca_chain (one string); *chain malloc'd, "" when the mount has no CA. */
int cmk_bao_parse_ca_chain(const char *body, size_t len, char **chain);
/* cert/<serial>: data.certificate and revocation_time (0 when not revoked). */
int cmk_bao_parse_cert_read(const char *body, size_t len, char **pem, int64_t *revocation_time);

/*
 * Requests for the operations.  Both return 0 for 200/204 with the answer
 * in *resp (the caller clears it), else the code of the final failure with
 * detail "<path>: <status>: <server's text>" and *resp cleared.
 * cmk_bao_call_authed() makes the token fresh first, sends it, and logs in
 * again once on 403; `body` (NULL = none) is consumed and wiped.
 * cmk_bao_call_public() is a GET without a token, for the paths PKI serves
 * to anyone (cert/<serial>, crl/pem): no token leaves the host for them.
 */
int cmk_bao_call_authed(struct cmk_bao *b, const char *method, const char *path, json_t *body,
			struct cmk_http_response *resp);
int cmk_bao_call_public(struct cmk_bao *b, const char *path, struct cmk_http_response *resp);

/*
 * Names placed into a URL path: letters, digits and `extra` only, no "..",
 * "//" or leading/trailing "/", so nothing needs escaping and nothing climbs
 * out of the mount.  CMK_ERR_INVALID naming `field`.
 */
#define CMK_BAO_MOUNT_CHARS "-_./"
#define CMK_BAO_ROLE_CHARS "-_."
#define CMK_BAO_SERIAL_CHARS ":-"
int cmk_bao_check_path_part(const char *field, const char *s, const char *extra);

/* Log each server warning of an answer to `path`. */
void cmk_bao_log_warnings(const char *path, const struct cmk_bao_warnings *w);

/* How the client waits between retries; tests record the delays instead. NULL restores nanosleep. */
typedef void (*cmk_bao_sleep_fn)(int64_t ms);
void cmk_bao_set_sleep(cmk_bao_sleep_fn fn);

#endif
