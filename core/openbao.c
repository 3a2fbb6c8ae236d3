/*
 * openbao.c - the OpenBao client: how a request travels (headers, one 307,
 * retries with capped exponential backoff and full jitter, one re-login on
 * 403), how the token is obtained and kept fresh, and sys/health.  The PKI
 * operations are in openbao_pki.c, what answers mean in openbao_parse.c;
 * the server's behaviour is described in reference/openbao-api.md.
 *
 * A client owns one curl handle and is used by one thread at a time.
 * Request bodies are built with jansson and wiped after sending (login
 * bodies hold a JWT or a secret id).  The token is kept in one place
 * (b->token) and wiped whenever it is replaced.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/http.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "openbao_int.h"

/* Credential files (a service-account JWT, a secret id, a token) are small. */
#define CREDENTIAL_MAX (64 * 1024)

struct cmk_bao {
	struct cmk_http *http;
	char *address;             /* https://host:port, no trailing slash */
	char *namespace_;          /* NULL when unset */
	int max_retries;
	enum cmk_auth_method method;
	char *auth_mount, *auth_role;
	char *jwt_path, *role_id_path, *secret_id_path, *token_path;
	char *token;               /* NULL when none; wiped when replaced */
	int64_t token_ttl;         /* seconds granted at the last login or renewal, 0 = never expires */
	int64_t token_increment;   /* renew-self asks for the TTL first granted */
	int64_t token_since_ms;    /* monotonic time token_ttl was granted */
	int64_t token_granted_ms;  /* the same on the wall clock, in ms since the epoch (for other processes) */
	bool token_renewable;
	struct cmk_bao_stats stats;
	cmk_bao_token_fn on_token; /* told of every new or renewed token */
	void *on_token_arg;
};

enum call_flags {
	CALL_TOKEN = 1 << 0,        /* send X-Vault-Token */
	CALL_RELOGIN = 1 << 1,      /* on 403 log in again once and repeat */
	CALL_NO_NAMESPACE = 1 << 2, /* sys/health refuses X-Vault-Namespace */
	CALL_ANY_STATUS = 1 << 3,   /* every answer goes to the caller; only transport failures are retried */
};

struct call {
	const char *method;
	const char *path;          /* below /v1/ */
	const char *query;         /* NULL or "a=b&c=d" */
	unsigned flags;
};

/* ---- retry policy ---- */

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static cmk_bao_sleep_fn sleep_fn = sleep_ms;

void cmk_bao_set_sleep(cmk_bao_sleep_fn fn)
{
	sleep_fn = fn != NULL ? fn : sleep_ms;
}

int64_t cmk_bao_backoff_ms(int attempt, int64_t retry_after_s, uint32_t random)
{
	int64_t ceiling = CMK_BAO_BACKOFF_BASE_MS;

	if (retry_after_s >= 0)
		return (retry_after_s < CMK_BAO_RETRY_AFTER_CAP_S ? retry_after_s : CMK_BAO_RETRY_AFTER_CAP_S) * 1000;
	for (int i = 0; i < attempt && ceiling < CMK_BAO_BACKOFF_CAP_MS; i++)
		ceiling *= 2;
	if (ceiling > CMK_BAO_BACKOFF_CAP_MS)
		ceiling = CMK_BAO_BACKOFF_CAP_MS;
	/* Full jitter: clients that failed together do not come back together. */
	return (int64_t)((uint64_t)ceiling * random / UINT32_MAX);
}

static uint32_t jitter_random(void)
{
	uint32_t r;

	/* Without a random source the clock's low bits still spread clients apart. */
	if (cmk_random(&r, sizeof(r)) != 0)
		r = (uint32_t)cmk_monotonic_ms() * 2654435761u;
	return r;
}

enum cmk_bao_token_action cmk_bao_token_action(bool have_token, int64_t ttl_s, bool renewable, int64_t age_ms)
{
	int64_t left_ms;

	if (!have_token)
		return CMK_BAO_TOKEN_LOGIN;
	if (ttl_s <= 0)
		return CMK_BAO_TOKEN_KEEP;
	left_ms = ttl_s * 1000 - age_ms;
	if (left_ms <= 0)
		return CMK_BAO_TOKEN_LOGIN;
	if (left_ms * 3 >= ttl_s * 1000)
		return CMK_BAO_TOKEN_KEEP;
	return renewable ? CMK_BAO_TOKEN_RENEW : CMK_BAO_TOKEN_LOGIN;
}

/* ---- client ---- */

int cmk_bao_check_path_part(const char *field, const char *s, const char *extra)
{
	size_t len;

	if (s == NULL || *s == '\0')
		return cmk_fail(CMK_ERR_INVALID, "openbao: %s is empty", field);
	for (const char *p = s; *p != '\0'; p++) {
		if (!isalnum((unsigned char)*p) && strchr(extra, *p) == NULL)
			return cmk_fail(CMK_ERR_INVALID, "openbao: %s has a character (0x%02x) not allowed in it", field,
					(unsigned char)*p);
	}
	len = strlen(s);
	if (strstr(s, "..") != NULL || strstr(s, "//") != NULL || s[0] == '/' || s[len - 1] == '/')
		return cmk_fail(CMK_ERR_INVALID, "openbao: %s \"%s\" is not a plain path", field, s);
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s != NULL && (*out = strdup(s)) == NULL)
		return CMK_ERR_NOMEM;
	return 0;
}

int cmk_bao_new(const struct cmk_config *cfg, struct cmk_bao **out)
{
	const char *addr = cfg->openbao.address;
	const char *mount = cfg->auth.mount;
	struct cmk_bao *b;
	size_t len;
	int rc;

	*out = NULL;
	if (addr == NULL || strncmp(addr, "https://", 8) != 0)
		return cmk_fail(CMK_ERR_CONFIG, "openbao: address \"%s\" must start with https://", addr ? addr : "");
	if (cfg->openbao.namespace_ != NULL &&
	    (rc = cmk_bao_check_path_part("namespace", cfg->openbao.namespace_, CMK_BAO_MOUNT_CHARS)) != 0)
		return rc;
	if (mount == NULL)
		mount = cfg->auth.method == CMK_AUTH_APPROLE ? "approle" : "kubernetes";
	if (cfg->auth.method != CMK_AUTH_TOKEN &&
	    (rc = cmk_bao_check_path_part("auth mount", mount, CMK_BAO_MOUNT_CHARS)) != 0)
		return rc;
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return CMK_ERR_NOMEM;
	/* The CA file is named by the configuration: one that cannot be read is a configuration error. */
	if ((rc = cmk_http_new(cfg->openbao.ca_cert, (long)cfg->openbao.timeout, &b->http)) != 0) {
		if (rc == CMK_ERR_NOTFOUND)
			rc = cmk_fail(CMK_ERR_CONFIG, "openbao: [openbao] ca_cert %s cannot be read",
				      cfg->openbao.ca_cert);
		goto fail;
	}
	if ((rc = dup_opt(addr, &b->address)) != 0 ||
	    (rc = dup_opt(cfg->openbao.namespace_, &b->namespace_)) != 0 ||
	    (rc = dup_opt(mount, &b->auth_mount)) != 0 ||
	    (rc = dup_opt(cfg->auth.role, &b->auth_role)) != 0 ||
	    (rc = dup_opt(cfg->auth.jwt_path, &b->jwt_path)) != 0 ||
	    (rc = dup_opt(cfg->auth.role_id_path, &b->role_id_path)) != 0 ||
	    (rc = dup_opt(cfg->auth.secret_id_path, &b->secret_id_path)) != 0 ||
	    (rc = dup_opt(cfg->auth.token_path, &b->token_path)) != 0)
		goto fail;
	len = strlen(b->address);
	while (len > 8 && b->address[len - 1] == '/')
		b->address[--len] = '\0';
	b->method = cfg->auth.method;
	b->max_retries = cfg->openbao.max_retries > 0 ? cfg->openbao.max_retries : 0;
	*out = b;
	return 0;
fail:
	cmk_bao_free(b);
	return rc;
}

void cmk_bao_free(struct cmk_bao *b)
{
	if (b == NULL)
		return;
	cmk_strfreezero(b->token);
	cmk_http_free(b->http);
	free(b->address);
	free(b->namespace_);
	free(b->auth_mount);
	free(b->auth_role);
	free(b->jwt_path);
	free(b->role_id_path);
	free(b->secret_id_path);
	free(b->token_path);
	free(b);
}

void cmk_bao_get_stats(const struct cmk_bao *b, struct cmk_bao_stats *out)
{
	*out = b->stats;
}

void cmk_bao_log_warnings(const char *path, const struct cmk_bao_warnings *w)
{
	for (size_t i = 0; i < w->count; i++)
		cmk_log(CMK_LOG_WARN, "openbao: %s: server warning: %s", path, w->items[i]);
}

/* ---- one request ---- */

/* Outcomes of every request of the process (cmk_bao_process_counts()); updated atomically. */
static struct cmk_bao_counts process_counts;

static void count_outcome(int rc, long status)
{
	uint64_t *c;

	if (rc != 0)
		c = &process_counts.no_answer;
	else if (status == 429)
		c = &process_counts.rate_limited;
	else if (status >= 500)
		c = &process_counts.server_error;
	else if (status >= 400)
		c = &process_counts.client_error;
	else
		c = &process_counts.success;
	__atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

void cmk_bao_process_counts(struct cmk_bao_counts *out)
{
	out->success = __atomic_load_n(&process_counts.success, __ATOMIC_RELAXED);
	out->client_error = __atomic_load_n(&process_counts.client_error, __ATOMIC_RELAXED);
	out->rate_limited = __atomic_load_n(&process_counts.rate_limited, __ATOMIC_RELAXED);
	out->server_error = __atomic_load_n(&process_counts.server_error, __ATOMIC_RELAXED);
	out->no_answer = __atomic_load_n(&process_counts.no_answer, __ATOMIC_RELAXED);
}

static int send_once(struct cmk_bao *b, const struct call *c, const char *url, const char *body, size_t body_len,
		     struct cmk_http_response *resp)
{
	const char *hdrs[5];
	char *token_hdr = NULL, *ns_hdr = NULL;
	size_t n = 0;
	int rc;

	/* Harmless to the server, required by OpenBao Agent/Proxy (reference §1.2). */
	hdrs[n++] = "X-Vault-Request: true";
	if (body != NULL)
		hdrs[n++] = "Content-Type: application/json";
	if (c->flags & CALL_TOKEN) {
		if (b->token == NULL)
			return cmk_fail(CMK_ERR_INTERNAL, "openbao: %s: no token to send", c->path);
		if ((token_hdr = cmk_asprintf("X-Vault-Token: %s", b->token)) == NULL)
			return CMK_ERR_NOMEM;
		hdrs[n++] = token_hdr;
	}
	if (b->namespace_ != NULL && !(c->flags & CALL_NO_NAMESPACE)) {
		if ((ns_hdr = cmk_asprintf("X-Vault-Namespace: %s", b->namespace_)) == NULL) {
			cmk_strfreezero(token_hdr);
			return CMK_ERR_NOMEM;
		}
		hdrs[n++] = ns_hdr;
	}
	hdrs[n] = NULL;
	b->stats.requests++;
	rc = cmk_http_request(b->http, c->method, url, hdrs, body, body_len, resp);
	count_outcome(rc, rc == 0 ? resp->status : 0);
	cmk_strfreezero(token_hdr);
	free(ns_hdr);
	return rc;
}

/* A standby that cannot forward answers 307 with the active node's URL (reference §1.5). */
static int redirect_target(const char *path, const struct cmk_http_response *resp, char **url)
{
	if (resp->location == NULL || strncmp(resp->location, "https://", 8) != 0)
		return cmk_fail(CMK_ERR_PROTOCOL, "%s: 307 without an https Location", path);
	if ((*url = strdup(resp->location)) == NULL)
		return CMK_ERR_NOMEM;
	cmk_log(CMK_LOG_INFO, "openbao: %s: redirected to %s", path, *url);
	return 0;
}

/*
 * Send a request until it has a final answer.  0 for 200/204 (or any
 * status with CALL_ANY_STATUS) with the answer in *resp; otherwise the
 * code for the last status or transport failure, *resp cleared.
 */
static int bao_call(struct cmk_bao *b, const struct call *c, const char *body, size_t body_len,
		    struct cmk_http_response *resp)
{
	char *url, *redirect = NULL;
	bool relogged = false;
	int attempt = 0, rc;
	int64_t delay;

	url = cmk_asprintf("%s/v1/%s%s%s", b->address, c->path, c->query ? "?" : "", c->query ? c->query : "");
	if (url == NULL)
		return CMK_ERR_NOMEM;
	for (;;) {
		rc = send_once(b, c, redirect ? redirect : url, body, body_len, resp);
		if (rc == 0) {
			long status = resp->status;

			if (status == 200 || status == 204 || (c->flags & CALL_ANY_STATUS))
				break;
			if (status == 307 && redirect == NULL) {
				rc = redirect_target(c->path, resp, &redirect);
				cmk_http_response_clear(resp);
				if (rc != 0)
					break;
				continue;
			}
			/* Our token may have expired since it was checked: one fresh login, then the same call. */
			if (status == 403 && (c->flags & CALL_RELOGIN) && !relogged) {
				relogged = true;
				cmk_http_response_clear(resp);
				cmk_log(CMK_LOG_INFO, "openbao: %s: permission denied, logging in again", c->path);
				if ((rc = cmk_bao_login(b)) != 0)
					break;
				continue;
			}
			rc = cmk_bao_fail_answer(c->path, status, resp->body, resp->body_len);
			if (!cmk_bao_status_is_retryable(status) || attempt >= b->max_retries)
				break;
			delay = cmk_bao_backoff_ms(attempt, resp->retry_after, jitter_random());
		} else {
			if ((rc != CMK_ERR_UNREACHABLE && rc != CMK_ERR_TIMEOUT) || attempt >= b->max_retries)
				break;
			delay = cmk_bao_backoff_ms(attempt, -1, jitter_random());
		}
		cmk_http_response_clear(resp);
		cmk_log(CMK_LOG_WARN, "openbao: %s; retry %d of %d in %" PRId64 " ms", cmk_errdetail(), attempt + 1,
			b->max_retries, delay);
		sleep_fn(delay);
		attempt++;
		b->stats.retries++;
	}
	if (rc != 0)
		cmk_http_response_clear(resp);
	free(redirect);
	free(url);
	return rc;
}

/* Wipe every string of a flat request object, then release it. */
static void drop_body(json_t *body)
{
	const char *key;
	json_t *v;

	json_object_foreach(body, key, v) {
		if (json_is_string(v))
			cmk_wipe((char *)json_string_value(v), json_string_length(v));
	}
	json_decref(body);
}

/* bao_call with `body` (NULL = none) as JSON.  The body is consumed and every copy of it wiped. */
static int send_json(struct cmk_bao *b, const struct call *c, json_t *body, struct cmk_http_response *resp)
{
	char *text = NULL;
	int rc;

	if (body != NULL) {
		text = cmk_json_dump(body);
		drop_body(body);
		if (text == NULL)
			return CMK_ERR_NOMEM;
	}
	rc = bao_call(b, c, text, text ? strlen(text) : 0, resp);
	cmk_strfreezero(text);
	return rc;
}

/* ---- authentication ---- */

static int check_file(const char *what, const char *path)
{
	if (path == NULL)
		return cmk_fail(CMK_ERR_CONFIG, "openbao: %s is not set", what);
	/* Effective ids: what matters is whether this process will be able to open it. */
	if (faccessat(AT_FDCWD, path, R_OK, AT_EACCESS) != 0)
		return cmk_fail(errno == ENOMEM ? CMK_ERR_NOMEM : CMK_ERR_CONFIG, "openbao: %s %s: %s", what, path,
				strerror(errno));
	return 0;
}

int cmk_bao_check_files(const struct cmk_config *cfg)
{
	int rc;

	if ((rc = check_file("[openbao] ca_cert", cfg->openbao.ca_cert)) != 0)
		return rc;
	switch (cfg->auth.method) {
	case CMK_AUTH_KUBERNETES:
		return check_file("[auth] jwt_path", cfg->auth.jwt_path);
	case CMK_AUTH_APPROLE:
		if ((rc = check_file("[auth] role_id_path", cfg->auth.role_id_path)) != 0)
			return rc;
		return check_file("[auth] secret_id_path", cfg->auth.secret_id_path);
	case CMK_AUTH_TOKEN:
		return check_file("[auth] token_path", cfg->auth.token_path);
	}
	return 0;
}

/* Read a credential file, trimmed of surrounding whitespace; it must be one printable word. */
static int read_credential(const char *path, const char *key, char **out)
{
	char *buf = NULL, *start, *end;
	size_t len = 0;
	int rc;

	*out = NULL;
	if (path == NULL)
		return cmk_fail(CMK_ERR_CONFIG, "openbao: [auth] %s is not set", key);
	/* The file is named by the configuration: when it is not there, the configuration is what to fix. */
	if ((rc = cmk_read_file(path, CREDENTIAL_MAX, &buf, &len)) == CMK_ERR_NOTFOUND)
		return cmk_fail(CMK_ERR_CONFIG, "openbao: [auth] %s %s does not exist", key, path);
	if (rc != 0)
		return rc;
	for (start = buf; *start != '\0' && isspace((unsigned char)*start); start++)
		;
	for (end = buf + len; end > start && isspace((unsigned char)end[-1]); end--)
		;
	*end = '\0';
	memmove(buf, start, (size_t)(end - start) + 1);
	/* What lies past the new end is a shifted copy of the credential; callers wipe only up to the NUL. */
	cmk_wipe(buf + (end - start) + 1, len - (size_t)(end - start));
	for (char *p = buf; *p != '\0'; p++) {
		if (*p <= ' ' || *p > '~') {
			cmk_freezero(buf, len + 1);
			return cmk_fail(CMK_ERR_INVALID, "openbao: %s %s holds characters a credential cannot have",
					key, path);
		}
	}
	if (buf[0] == '\0') {
		cmk_freezero(buf, len + 1);
		return cmk_fail(CMK_ERR_INVALID, "openbao: %s %s is empty", key, path);
	}
	*out = buf;
	return 0;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The held token was just granted `ttl` seconds. */
static void start_ttl(struct cmk_bao *b, int64_t ttl, bool renewable)
{
	b->token_ttl = ttl;
	b->token_renewable = renewable;
	b->token_since_ms = cmk_monotonic_ms();
	b->token_granted_ms = wall_ms();
}

static void tell_token(struct cmk_bao *b, enum cmk_bao_token_event ev)
{
	if (b->on_token != NULL)
		b->on_token(b, ev, b->on_token_arg);
}

/* Take ownership of `token`, wiping the one held before. */
static void set_token(struct cmk_bao *b, char *token, int64_t ttl, bool renewable)
{
	cmk_strfreezero(b->token);
	b->token = token;
	b->token_increment = ttl;
	start_ttl(b, ttl, renewable);
}

/* POST auth/<mount>/login with `body` (consumed) and keep the token it grants. */
static int login_with(struct cmk_bao *b, json_t *body)
{
	struct cmk_http_response resp = { 0 };
	struct cmk_bao_auth auth = { 0 };
	struct call c = { .method = "POST" };
	char *path;
	int rc;

	if ((path = cmk_asprintf("auth/%s/login", b->auth_mount)) == NULL) {
		drop_body(body);
		return CMK_ERR_NOMEM;
	}
	c.path = path;
	if ((rc = send_json(b, &c, body, &resp)) == 0 &&
	    (rc = cmk_bao_parse_auth(resp.body, resp.body_len, &auth)) == 0) {
		cmk_bao_log_warnings(path, &auth.warnings);
		set_token(b, auth.client_token, auth.lease_duration, auth.renewable);
		auth.client_token = NULL;
	}
	cmk_bao_auth_clear(&auth);
	cmk_http_response_clear(&resp);
	free(path);
	return rc;
}

static int login_kubernetes(struct cmk_bao *b)
{
	char *jwt = NULL;
	json_t *body;
	int rc;

	if (b->auth_role == NULL)
		return cmk_fail(CMK_ERR_CONFIG, "openbao: [auth] role is not set");
	if ((rc = read_credential(b->jwt_path, "jwt_path", &jwt)) != 0)
		return rc;
	body = json_pack("{s:s, s:s}", "role", b->auth_role, "jwt", jwt);
	cmk_strfreezero(jwt);
	if (body == NULL)
		return cmk_fail(CMK_ERR_NOMEM, "openbao: cannot build the login request");
	return login_with(b, body);
}

static int login_approle(struct cmk_bao *b)
{
	char *role_id = NULL, *secret_id = NULL;
	json_t *body = NULL;
	int rc;

	if ((rc = read_credential(b->role_id_path, "role_id_path", &role_id)) == 0 &&
	    (rc = read_credential(b->secret_id_path, "secret_id_path", &secret_id)) == 0 &&
	    (body = json_pack("{s:s, s:s}", "role_id", role_id, "secret_id", secret_id)) == NULL)
		rc = cmk_fail(CMK_ERR_NOMEM, "openbao: cannot build the login request");
	cmk_strfreezero(role_id);
	cmk_strfreezero(secret_id);
	return rc != 0 ? rc : login_with(b, body);
}

static int lookup_self(struct cmk_bao *b, unsigned flags, struct cmk_bao_token_info *info, int64_t *creation_ttl)
{
	struct cmk_http_response resp = { 0 };
	struct call c = { .method = "GET", .path = "auth/token/lookup-self", .flags = CALL_TOKEN | flags };
	int rc;

	if ((rc = bao_call(b, &c, NULL, 0, &resp)) == 0)
		rc = cmk_bao_parse_lookup(resp.body, resp.body_len, info, creation_ttl);
	cmk_http_response_clear(&resp);
	return rc;
}

/* The token method has no login endpoint: the token comes from a file; lookup-self tells its TTL. */
static int login_token(struct cmk_bao *b)
{
	struct cmk_bao_token_info info;
	int64_t created = 0;
	char *token = NULL;
	int rc;

	if ((rc = read_credential(b->token_path, "token_path", &token)) != 0)
		return rc;
	set_token(b, token, 0, false);
	if ((rc = lookup_self(b, 0, &info, &created)) != 0) {
		set_token(b, NULL, 0, false);
		return rc;
	}
	start_ttl(b, info.ttl, info.renewable);
	b->token_increment = created > 0 ? created : info.ttl;
	return 0;
}

static const char *method_name(enum cmk_auth_method m)
{
	switch (m) {
	case CMK_AUTH_KUBERNETES: return "kubernetes";
	case CMK_AUTH_APPROLE: return "approle";
	case CMK_AUTH_TOKEN: return "token";
	}
	return "?";
}

int cmk_bao_login(struct cmk_bao *b)
{
	int rc;

	switch (b->method) {
	case CMK_AUTH_KUBERNETES: rc = login_kubernetes(b); break;
	case CMK_AUTH_APPROLE: rc = login_approle(b); break;
	case CMK_AUTH_TOKEN: rc = login_token(b); break;
	default: rc = cmk_fail(CMK_ERR_CONFIG, "openbao: unknown auth method %d", (int)b->method); break;
	}
	if (rc != 0) {
		cmk_log(CMK_LOG_WARN, "openbao: %s login failed: %s", method_name(b->method), cmk_errdetail());
		return rc;
	}
	b->stats.logins++;
	cmk_log(CMK_LOG_INFO, "openbao: %s login ok, token ttl %" PRId64 "s%s", method_name(b->method), b->token_ttl,
		b->token_renewable ? ", renewable" : "");
	tell_token(b, CMK_BAO_TOKEN_LOGGED_IN);
	return 0;
}

/* POST auth/token/renew-self asking for `increment` seconds (0 = the server's choice). */
static int renew_self(struct cmk_bao *b, int64_t increment, unsigned flags, struct cmk_bao_warnings *warnings)
{
	struct cmk_http_response resp = { 0 };
	struct cmk_bao_auth auth = { 0 };
	struct call c = { .method = "POST", .path = "auth/token/renew-self", .flags = CALL_TOKEN | flags };
	char inc[32];
	json_t *body;
	int rc;

	snprintf(inc, sizeof(inc), "%" PRId64 "s", increment);
	body = increment > 0 ? json_pack("{s:s}", "increment", inc) : json_object();
	if (body == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = send_json(b, &c, body, &resp)) == 0 &&
	    (rc = cmk_bao_parse_auth(resp.body, resp.body_len, &auth)) == 0) {
		/* Granted less than asked: the token's max TTL is near, renewing again cannot help. */
		start_ttl(b, auth.lease_duration,
			  auth.renewable && !(increment > 0 && auth.lease_duration < increment));
		cmk_bao_log_warnings(c.path, &auth.warnings);
		cmk_log(CMK_LOG_INFO, "openbao: token renewed, ttl %" PRId64 "s", auth.lease_duration);
		tell_token(b, CMK_BAO_TOKEN_RENEWED);
		if (warnings != NULL) {
			*warnings = auth.warnings;
			memset(&auth.warnings, 0, sizeof(auth.warnings));
		}
	}
	cmk_bao_auth_clear(&auth);
	cmk_http_response_clear(&resp);
	return rc;
}

int cmk_bao_ensure_token(struct cmk_bao *b)
{
	int64_t age = cmk_monotonic_ms() - b->token_since_ms;
	int rc;

	switch (cmk_bao_token_action(b->token != NULL, b->token_ttl, b->token_renewable, age)) {
	case CMK_BAO_TOKEN_KEEP:
		return 0;
	case CMK_BAO_TOKEN_LOGIN:
		return cmk_bao_login(b);
	case CMK_BAO_TOKEN_RENEW:
		break;
	}
	if ((rc = renew_self(b, b->token_increment, 0, NULL)) == 0)
		return 0;
	if (rc == CMK_ERR_DENIED || rc == CMK_ERR_REJECTED) {
		cmk_log(CMK_LOG_INFO, "openbao: token renewal refused (%s), logging in again", cmk_errdetail());
		return cmk_bao_login(b);
	}
	/* OpenBao could not be asked; the token still has time left, so keep it and renew next time. */
	cmk_log(CMK_LOG_WARN, "openbao: token renewal failed, keeping the current token: %s", cmk_errdetail());
	return 0;
}

/* ---- sharing the token ---- */

void cmk_bao_on_token(struct cmk_bao *b, cmk_bao_token_fn fn, void *arg)
{
	b->on_token = fn;
	b->on_token_arg = arg;
}

void cmk_bao_token_state_clear(struct cmk_bao_token_state *s)
{
	if (s == NULL)
		return;
	cmk_strfreezero(s->token);
	memset(s, 0, sizeof(*s));
}

int cmk_bao_token_export(const struct cmk_bao *b, struct cmk_bao_token_state *out)
{
	memset(out, 0, sizeof(*out));
	if (b->token == NULL)
		return cmk_fail(CMK_ERR_NOTFOUND, "openbao: no token held");
	if ((out->token = strdup(b->token)) == NULL)
		return CMK_ERR_NOMEM;
	out->granted_ms = b->token_granted_ms;
	out->ttl = b->token_ttl;
	out->increment = b->token_increment;
	out->renewable = b->token_renewable;
	return 0;
}

int cmk_bao_token_import(struct cmk_bao *b, const struct cmk_bao_token_state *s)
{
	int64_t age_ms = wall_ms() - s->granted_ms;
	char *copy;

	if (s->token == NULL || s->token[0] == '\0')
		return cmk_fail(CMK_ERR_INVALID, "openbao: no token to hold");
	if ((copy = strdup(s->token)) == NULL)
		return CMK_ERR_NOMEM;
	set_token(b, copy, s->ttl, s->renewable);
	b->token_increment = s->increment;
	/* Its age counts from when it was granted, in whichever process that was. */
	if (age_ms < 0)
		age_ms = 0;
	b->token_granted_ms = s->granted_ms;
	b->token_since_ms = cmk_monotonic_ms() - age_ms;
	return 0;
}

bool cmk_bao_token_fresh(const struct cmk_bao *b)
{
	return cmk_bao_token_action(b->token != NULL, b->token_ttl, b->token_renewable,
				    cmk_monotonic_ms() - b->token_since_ms) == CMK_BAO_TOKEN_KEEP;
}

int cmk_bao_token_lookup(struct cmk_bao *b, struct cmk_bao_token_info *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = cmk_bao_ensure_token(b)) != 0)
		return rc;
	return lookup_self(b, CALL_RELOGIN, out, NULL);
}

int cmk_bao_token_renew(struct cmk_bao *b, int64_t increment, struct cmk_bao_warnings *warnings)
{
	int rc;

	if (b->token == NULL && (rc = cmk_bao_login(b)) != 0)
		return rc;
	return renew_self(b, increment, CALL_RELOGIN, warnings);
}

/* ---- calls for the operations (openbao_pki.c) ---- */

int cmk_bao_call_authed(struct cmk_bao *b, const char *method, const char *path, json_t *body,
			struct cmk_http_response *resp)
{
	struct call c = { .method = method, .path = path, .flags = CALL_TOKEN | CALL_RELOGIN };
	int rc;

	if ((rc = cmk_bao_ensure_token(b)) != 0) {
		if (body != NULL)
			drop_body(body);
		return rc;
	}
	return send_json(b, &c, body, resp);
}

int cmk_bao_call_public(struct cmk_bao *b, const char *path, struct cmk_http_response *resp)
{
	struct call c = { .method = "GET", .path = path };

	return bao_call(b, &c, NULL, 0, resp);
}

int cmk_bao_health(struct cmk_bao *b, struct cmk_bao_health *out)
{
	struct cmk_http_response resp = { 0 };
	/* Ask for distinct codes per state; a standby is fine (standbyok). */
	struct call c = { .method = "GET", .path = "sys/health",
			  .query = "standbyok=true&sealedcode=503&uninitcode=501",
			  .flags = CALL_NO_NAMESPACE | CALL_ANY_STATUS };
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = bao_call(b, &c, NULL, 0, &resp)) != 0)
		return rc;
	/* 429, 501 and 503 carry the same JSON as 200: they are states, not failures. */
	if ((rc = cmk_bao_parse_health(resp.body, resp.body_len, out)) == 0)
		out->status = resp.status;
	else if (resp.status != 200)
		rc = cmk_bao_fail_answer(c.path, resp.status, resp.body, resp.body_len);
	cmk_http_response_clear(&resp);
	return rc;
}

