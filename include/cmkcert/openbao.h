/*
 * openbao.h - the OpenBao client (DESIGN §10, reference/openbao-api.md).
 *
 * Rules: 200 and 204 are success; errors are {"errors":[...]} (possibly
 * empty) and are classified by status code, never by text; warnings are
 * returned to the caller as real outcomes; serials are kept verbatim;
 * alt_names go as a comma string; X-Vault-Namespace is never sent to
 * sys/health; 429, 5xx and 503 are retried with capped exponential backoff
 * and jitter honouring Retry-After (at most cfg->openbao.max_retries times);
 * a 403 after the token expired triggers one re-login; the token is renewed
 * before it expires; a 307 is followed once with the same method and body.
 *
 * Outcomes map to codes (detail = the server's error text):
 *   400 -> CMK_ERR_REJECTED   403 -> CMK_ERR_DENIED     404 -> CMK_ERR_NOTFOUND
 *   429 -> CMK_ERR_RATELIMIT  503 -> CMK_ERR_SEALED     5xx -> CMK_ERR_SERVER
 *   transport -> CMK_ERR_UNREACHABLE / CMK_ERR_TLS / CMK_ERR_TIMEOUT
 *   unparsable answer -> CMK_ERR_PROTOCOL
 * The detail reads "<path>: <status>: <server's errors joined by "; ">",
 * e.g. "pki/issue/web: 400: common name x not allowed by this role".
 *
 * A client owns one reused HTTPS connection and serves one thread at a
 * time; give each worker thread its own.  Operations that need a token call
 * cmk_bao_ensure_token() themselves; calling it first (to audit a login)
 * is fine.  Names that go into URL paths (mount, role, serial) are checked
 * to be plain path parts (CMK_ERR_INVALID otherwise) before anything is sent.
 */
#ifndef CMKCERT_OPENBAO_H
#define CMKCERT_OPENBAO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmkcert/config.h"

struct cmk_bao;

/* Warnings from one answer; owned by the struct that holds them. */
struct cmk_bao_warnings {
	char **items;
	size_t count;
};
void cmk_bao_warnings_clear(struct cmk_bao_warnings *w);

struct cmk_bao_stats {
	uint64_t requests;     /* HTTP requests sent, retries included */
	uint64_t retries;
	uint64_t logins;       /* tokens obtained (successful logins, re-logins included) */
};

/*
 * A client for cfg (copied what it needs; cfg may be freed after).
 * CMK_ERR_CONFIG when [openbao] ca_cert cannot be read or the address is
 * not https://.
 */
int cmk_bao_new(const struct cmk_config *cfg, struct cmk_bao **out);
/* Wipes the token and frees. NULL is a no-op. */
void cmk_bao_free(struct cmk_bao *b);

void cmk_bao_get_stats(const struct cmk_bao *b, struct cmk_bao_stats *out);

/* HTTP requests sent by every client of this process since it started, by outcome. */
struct cmk_bao_counts {
	uint64_t success;       /* answered 1xx-3xx (200, 204; a 307 redirect) */
	uint64_t client_error;  /* answered 4xx other than 429 (refused, denied, not found) */
	uint64_t rate_limited;  /* answered 429 */
	uint64_t server_error;  /* answered 5xx (503: sealed or standby) */
	uint64_t no_answer;     /* no answer: unreachable, TLS failure, timeout */
};
void cmk_bao_process_counts(struct cmk_bao_counts *out);

struct cmk_bao_health {
	long status;           /* HTTP status of sys/health */
	bool initialized, sealed, standby;
	char version[64];
};
/* 0 whenever a health answer was received (even 503/501/429: see status/sealed). */
int cmk_bao_health(struct cmk_bao *b, struct cmk_bao_health *out);

/*
 * The files the configuration names for talking to OpenBao can be read:
 * [openbao] ca_cert and the credential file(s) of the [auth] method.  For
 * callers that must refuse a broken configuration before they change or
 * record anything.  CMK_ERR_CONFIG naming the key, the path and the reason.
 */
int cmk_bao_check_files(const struct cmk_config *cfg);

/*
 * Log in with the configured method (reads the JWT / role_id / secret_id /
 * token file now; surrounding whitespace is dropped).  Login answers 400 ->
 * CMK_ERR_REJECTED (unknown role, bad role or secret id), 403 ->
 * CMK_ERR_DENIED (JWT refused), with the server's text; a credential file
 * that does not exist is CMK_ERR_CONFIG naming the [auth] key and the path.
 * The token method asks lookup-self for the token's TTL.
 */
int cmk_bao_login(struct cmk_bao *b);

/*
 * Make sure a usable token is held: log in when none, renew-self when less
 * than a third of its TTL remains (renewable tokens), log in again when it
 * expired or renewal was refused.  A non-renewable token, or one whose
 * last renewal was capped by its max TTL, is replaced by a fresh login when
 * a third of its TTL remains.  A renewal that fails for a transient reason
 * (unreachable, sealed) keeps the still-valid token and returns 0.
 */
int cmk_bao_ensure_token(struct cmk_bao *b);

/*
 * Sharing the token with other processes (the lifecycle keeps it sealed in
 * the store, so that runs of the CLI do not each log in).  The state of a
 * token: `granted_ms` is wall-clock time, so another process can tell how
 * much of `ttl` is left.
 */
struct cmk_bao_token_state {
	char *token;           /* wiped by cmk_bao_token_state_clear() */
	int64_t granted_ms;    /* milliseconds since the epoch when `ttl` was granted */
	int64_t ttl;           /* seconds, 0 = never expires */
	int64_t increment;     /* what renewals ask for */
	bool renewable;
};
void cmk_bao_token_state_clear(struct cmk_bao_token_state *s);
/* A copy of the token held; CMK_ERR_NOTFOUND when none.  Release with cmk_bao_token_state_clear(). */
int cmk_bao_token_export(const struct cmk_bao *b, struct cmk_bao_token_state *out);
/* Hold a copy of `s` from now on, as old as s->granted_ms says; the token held before is wiped. */
int cmk_bao_token_import(struct cmk_bao *b, const struct cmk_bao_token_state *s);
/* True when cmk_bao_ensure_token() would keep the token held (it is there, and not due for renewal). */
bool cmk_bao_token_fresh(const struct cmk_bao *b);

/* Told after every login (including the one after a 403) and every renewal, from the calling thread. */
enum cmk_bao_token_event { CMK_BAO_TOKEN_LOGGED_IN, CMK_BAO_TOKEN_RENEWED };
typedef void (*cmk_bao_token_fn)(struct cmk_bao *b, enum cmk_bao_token_event ev, void *arg);
void cmk_bao_on_token(struct cmk_bao *b, cmk_bao_token_fn fn, void *arg);

struct cmk_bao_token_info {
	int64_t ttl;           /* remaining seconds, 0 = never expires */
	bool renewable;
	char policies[256];    /* comma-joined */
	char accessor[128];
};
int cmk_bao_token_lookup(struct cmk_bao *b, struct cmk_bao_token_info *out);
int cmk_bao_token_renew(struct cmk_bao *b, int64_t increment, struct cmk_bao_warnings *warnings);

/*
 * Check the PKI mount exists and has a CA: GET <mount>/cert/ca_chain.
 * *chain_pem optional (malloc'd).  CMK_ERR_NOTFOUND "PKI mount <m> not
 * found" / "has no CA"; CMK_ERR_DENIED when the token's policies do not
 * reach the mount (OpenBao answers 403 before it knows whether it exists).
 */
int cmk_bao_check_mount(struct cmk_bao *b, const char *mount, char **chain_pem);

struct cmk_bao_role {
	char key_type[16];     /* "rsa", "ec", "any", "ed25519" */
	int key_bits;
	int64_t ttl, max_ttl;  /* seconds, 0 = mount default */
	bool client_flag;
	bool no_store;
	bool use_csr_common_name, use_csr_sans;
	bool allow_any_name, allow_glob_domains, allow_subdomains, allow_bare_domains;
	char **allowed_domains;
	size_t n_allowed_domains;
};
void cmk_bao_role_clear(struct cmk_bao_role *r);
/* GET <mount>/roles/<role>; CMK_ERR_NOTFOUND "role <r> not found on <mount>".  Release with cmk_bao_role_clear(). */
int cmk_bao_read_role(struct cmk_bao *b, const char *mount, const char *role, struct cmk_bao_role *out);

struct cmk_bao_cert_request {
	const char *mount;
	const char *role;
	const char *common_name;   /* issue mode; omitted in sign mode (it comes from the CSR) */
	const char *alt_names;     /* comma-separated; issue mode only */
	int64_t ttl;               /* seconds, 0 = role default */
	const char *key_type;      /* issue mode: "rsa" | "ec" */
	int key_bits;              /* issue mode */
	const char *csr;           /* sign mode: PEM CSR */
};

struct cmk_bao_cert {
	char *certificate;         /* leaf PEM, no trailing newline (as returned) */
	char *issuing_ca;
	char *ca_chain;            /* ca_chain array joined with "\n" (issuing CA first) */
	char *private_key;         /* issue mode only: PEM; wiped by clear */
	char *private_key_type;
	char *serial_number;       /* verbatim */
	int64_t not_before, expiration;
	struct cmk_bao_warnings warnings;
};
void cmk_bao_cert_clear(struct cmk_bao_cert *c);

/*
 * POST <mount>/issue/<role> with format=pem.  Missing certificate, serial
 * or private_key in the answer -> CMK_ERR_PROTOCOL.  Warnings (TTL
 * truncation) are in out->warnings.  Release with cmk_bao_cert_clear().
 */
int cmk_bao_issue(struct cmk_bao *b, const struct cmk_bao_cert_request *req, struct cmk_bao_cert *out);
/* POST <mount>/sign/<role> with the CSR, ttl and format only (CN and SANs come from the CSR). */
int cmk_bao_sign(struct cmk_bao *b, const struct cmk_bao_cert_request *req, struct cmk_bao_cert *out);

struct cmk_bao_revocation {
	bool revoked;              /* false: 200 with data null (e.g. already expired): see warnings */
	int64_t revocation_time;
	char state[32];
	struct cmk_bao_warnings warnings;
};
void cmk_bao_revocation_clear(struct cmk_bao_revocation *r);
/*
 * POST <mount>/revoke by serial (used when serial != NULL) or by
 * certificate PEM (the only way for no_store roles).  200 with data ->
 * revoked; 200 with data null or 204 -> not revoked, see warnings.
 */
int cmk_bao_revoke(struct cmk_bao *b, const char *mount, const char *serial, const char *cert_pem,
		   struct cmk_bao_revocation *out);

/* GET <mount>/crl/pem (raw PEM, sent without a token). *pem malloc'd.  204 -> CMK_ERR_NOTFOUND. */
int cmk_bao_read_crl(struct cmk_bao *b, const char *mount, char **pem);
/*
 * GET <mount>/cert/<serial> (sent without a token): PEM and revocation
 * time (0 when not revoked; revocation_time may be NULL).  404 ->
 * CMK_ERR_NOTFOUND "certificate <serial> not found on <mount>".
 */
int cmk_bao_read_cert(struct cmk_bao *b, const char *mount, const char *serial, char **pem, int64_t *revocation_time);

#endif
