/*
 * control_api.c - the endpoints of the control socket (ctlapi.h,
 * cmkcertfs(8) CONTROL SOCKET).
 *
 *   POST   /v1/keystores                          keystore add (the use case's request JSON)
 *   DELETE /v1/keystores/{tenant}/{type}          keystore remove: revoke, CRL proof, destroy
 *   POST   /v1/keystores/{tenant}/{type}/renew    renew now
 *   POST   /v1/keystores/{tenant}/{type}/revoke   revoke ({"reason": ...} optional)
 *   GET    /v1/certificates[?tenant=&type=&status=]   list (metadata)
 *   GET    /v1/certificates/{tenant}/{type}       show (metadata, certificate and chain; never the key)
 *   GET    /healthz  /readyz  /metrics
 *
 * Every operation is the library's, exactly as the CLI calls it
 * (cmk_prepare(), cmk_keystore_add(), cmk_renew(), ...), and every answer
 * is the document `cmkcert --json` prints for it (opjson.h), so the two
 * front ends validate and report alike.  What is new here is only the
 * mapping of outcomes to HTTP statuses (status_for()).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/follow.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/openbao.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"
#include "cmkfs.h"
#include "ctlapi.h"
#include "metrics.h"
#include "watch.h"

/* Operations that change the store at once; more wait for a context, up to MAX_WAITING of them. */
#define WORKERS 8
#define MAX_WAITING 32
#define WORKER_WAIT_MS 60000
#define BUSY_RETRY_S 5
/* /readyz asks OpenBao at most this often; probes in between get the last answer. */
#define READY_BAO_CACHE_MS 2000

struct ctl_api {
	struct cmkfs *fs;
	pthread_mutex_t mu;
	pthread_cond_t freed;          /* a worker context came back */
	struct cmk_ctx *ctx[WORKERS];
	bool busy[WORKERS];
	unsigned n_busy, waiting;
	bool stopping;

	/* /readyz: the last OpenBao health answer. */
	pthread_mutex_t ready_mu;
	struct cmk_bao *bao;
	int64_t bao_checked_ms;        /* 0 = never */
	int bao_rc;
	char bao_detail[256];
};

/* ---- replies ------------------------------------------------------------ */

void ctl_reply_clear(struct ctl_reply *rp)
{
	json_decref(rp->json);
	free(rp->text);
	rp->json = NULL;
	rp->text = NULL;
}

void ctl_reply_error(struct ctl_reply *rp, unsigned status, int rc, const char *operation)
{
	json_decref(rp->json);
	rp->status = status;
	rp->json = cmk_json_error(rc, operation);
}

/*
 * The HTTP status for a library result.  Bad input 400, nothing there 404,
 * a conflict with the state of the store or another operation 409, OpenBao
 * or the keystore failing or refusing 502, and 503 for what a retry later
 * may fix on this side: OpenBao sealed, the daemon's configuration, store
 * or audit trail unusable.
 */
static unsigned status_for(int rc)
{
	switch (rc) {
	case CMK_OK:
		return 200;
	case CMK_ERR_INVALID:
		return 400;
	case CMK_ERR_NOTFOUND:
		return 404;
	case CMK_ERR_EXISTS:
	case CMK_ERR_STATE:
	case CMK_ERR_BUSY:
		return 409;
	case CMK_ERR_UNREACHABLE:
	case CMK_ERR_TLS:
	case CMK_ERR_TIMEOUT:
	case CMK_ERR_DENIED:
	case CMK_ERR_REJECTED:
	case CMK_ERR_RATELIMIT:
	case CMK_ERR_SERVER:
	case CMK_ERR_PROTOCOL:
	case CMK_ERR_KEYSTORE:
	case CMK_ERR_VERIFY:
		return 502;
	case CMK_ERR_SEALED:
	case CMK_ERR_CONFIG:
	case CMK_ERR_STORE:
	case CMK_ERR_AUDIT:
		return 503;
	default:
		return 500;
	}
}

/*
 * A step that failed while talking to OpenBao or the keystore makes the
 * whole answer 502 whatever its code (a 404 from OpenBao is not "no such
 * keystore"), except a sealed OpenBao (503) and a certificate OpenBao would
 * not revoke because it already expired (409, as `cmkcert revoke` exits 1).
 */
static unsigned status_after(int rc, const char *failed_step)
{
	static const char *const upstream[] = { "sign", "issue", "test", "revoke", NULL };

	for (size_t i = 0; failed_step != NULL && upstream[i] != NULL; i++)
		if (strcmp(failed_step, upstream[i]) == 0 && rc != CMK_ERR_SEALED && rc != CMK_ERR_STATE)
			return 502;
	return status_for(rc);
}

/* ---- worker contexts ---------------------------------------------------- */

int ctl_api_new(struct cmkfs *fs, struct ctl_api **out)
{
	struct ctl_api *api = calloc(1, sizeof(*api));
	pthread_condattr_t ca;
	int rc;

	if (api == NULL)
		return CMK_ERR_NOMEM;
	api->fs = fs;
	pthread_mutex_init(&api->mu, NULL);
	pthread_mutex_init(&api->ready_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&api->freed, &ca);
	pthread_condattr_destroy(&ca);
	for (int i = 0; i < WORKERS; i++) {
		if ((rc = cmk_ctx_thread(fs->ctx, &api->ctx[i])) != 0) {
			ctl_api_free(api);
			return rc;
		}
	}
	*out = api;
	return 0;
}

void ctl_api_free(struct ctl_api *api)
{
	if (api == NULL)
		return;
	for (int i = 0; i < WORKERS; i++)
		cmk_ctx_free(api->ctx[i]);
	cmk_bao_free(api->bao);
	pthread_cond_destroy(&api->freed);
	pthread_mutex_destroy(&api->ready_mu);
	pthread_mutex_destroy(&api->mu);
	free(api);
}

void ctl_api_stopping(struct ctl_api *api)
{
	pthread_mutex_lock(&api->mu);
	api->stopping = true;
	pthread_cond_broadcast(&api->freed);
	pthread_mutex_unlock(&api->mu);
}

unsigned ctl_api_busy(struct ctl_api *api)
{
	unsigned n;

	pthread_mutex_lock(&api->mu);
	n = api->n_busy;
	pthread_mutex_unlock(&api->mu);
	return n;
}

/*
 * Borrow a worker context for one operation, acting as the caller.  NULL
 * with the reply filled (503) when the daemon is stopping, too many
 * operations wait already, or none came free within WORKER_WAIT_MS.
 */
static struct cmk_ctx *take_worker(struct ctl_api *api, const struct ctl_peer *peer, struct ctl_reply *rp,
				   const char *operation, int *slot)
{
	int64_t deadline = cmk_monotonic_ms() + WORKER_WAIT_MS;
	struct cmk_ctx *ctx = NULL;

	pthread_mutex_lock(&api->mu);
	if (api->n_busy == WORKERS && api->waiting >= MAX_WAITING) {
		cmk_fail(CMK_ERR_BUSY, "%u operations are running and %u waiting; try again later", api->n_busy,
			 api->waiting);
		goto busy;
	}
	api->waiting++;
	while (!api->stopping && api->n_busy == WORKERS && cmk_monotonic_ms() < deadline) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&api->freed, &api->mu, &ts);
	}
	api->waiting--;
	if (api->stopping) {
		cmk_fail(CMK_ERR_BUSY, "cmkcertfs is stopping");
		goto busy;
	}
	if (api->n_busy == WORKERS) {
		cmk_fail(CMK_ERR_BUSY, "no operation finished within %d s; try again later", WORKER_WAIT_MS / 1000);
		goto busy;
	}
	for (int i = 0; i < WORKERS; i++) {
		if (!api->busy[i]) {
			api->busy[i] = true;
			api->n_busy++;
			ctx = api->ctx[i];
			*slot = i;
			break;
		}
	}
	pthread_mutex_unlock(&api->mu);
	snprintf(ctx->actor, sizeof(ctx->actor), "%s", peer->actor);
	return ctx;
busy:
	pthread_mutex_unlock(&api->mu);
	ctl_reply_error(rp, 503, CMK_ERR_BUSY, operation);
	rp->retry_after = BUSY_RETRY_S;
	return NULL;
}

static void give_worker(struct ctl_api *api, int slot)
{
	pthread_mutex_lock(&api->mu);
	api->busy[slot] = false;
	api->n_busy--;
	pthread_cond_signal(&api->freed);
	pthread_mutex_unlock(&api->mu);
}

/* ---- request helpers ---------------------------------------------------- */

/* The value of query parameter `name`; *present false when absent. */
static const char *query_get(const struct ctl_request *rq, const char *name, bool *present)
{
	*present = false;
	for (size_t i = 0; rq->query != NULL && rq->query[i] != NULL; i += 2) {
		if (strcmp(rq->query[i], name) == 0) {
			*present = true;
			return rq->query[i + 1];
		}
	}
	return NULL;
}

/* Every query parameter is one of `known` (NULL-terminated), given once: else 400. */
static bool query_ok(const struct ctl_request *rq, const char *const *known, struct ctl_reply *rp)
{
	char q[CMK_QUOTE_SIZE];

	for (size_t i = 0; rq->query != NULL && rq->query[i] != NULL; i += 2) {
		bool ok = false;

		for (size_t k = 0; known[k] != NULL; k++)
			ok = ok || strcmp(rq->query[i], known[k]) == 0;
		for (size_t j = 0; ok && j < i; j += 2)
			ok = strcmp(rq->query[i], rq->query[j]) != 0;
		if (!ok) {
			cmk_quote(rq->query[i], q);
			cmk_fail(CMK_ERR_INVALID, "query parameter \"%s\": unknown or given twice", q);
			ctl_reply_error(rp, 400, CMK_ERR_INVALID, rp->operation);
			return false;
		}
	}
	return true;
}

/* ?wait=SECONDS on a change: how long to wait for the mounts (default CMK_FOLLOW_WAIT_DEFAULT_S). */
static bool wait_param(const struct ctl_request *rq, int64_t *wait_ms, struct ctl_reply *rp)
{
	bool present;
	const char *v = query_get(rq, "wait", &present);

	if (cmk_follow_parse_wait(present ? (v != NULL ? v : "") : NULL, wait_ms) == 0)
		return true;
	ctl_reply_error(rp, 400, CMK_ERR_INVALID, rp->operation);
	return false;
}

/*
 * A body that must be empty or a JSON object with only the members in
 * `known`; *out (may be NULL) the parsed object or NULL for an empty body.
 */
static bool body_object(const struct ctl_request *rq, const char *const *known, json_t **out, struct ctl_reply *rp)
{
	json_t *o = NULL, *v;
	const char *key;
	char q[CMK_QUOTE_SIZE];
	int rc = 0;

	*out = NULL;
	if (strspn(rq->body, " \t\r\n") == rq->body_len)
		return true;
	if ((rc = cmk_json_parse("request body", rq->body, rq->body_len, &o)) == 0 && !json_is_object(o))
		rc = cmk_fail(CMK_ERR_INVALID, "request body: must be a JSON object");
	if (rc == 0) {
		json_object_foreach(o, key, v) {
			bool ok = false;

			(void)v;
			for (size_t k = 0; known[k] != NULL; k++)
				ok = ok || strcmp(key, known[k]) == 0;
			if (!ok) {
				cmk_quote(key, q);
				rc = cmk_fail(CMK_ERR_INVALID, "request body: unknown field \"%s\"", q);
				break;
			}
		}
	}
	if (rc != 0) {
		json_decref(o);
		ctl_reply_error(rp, status_for(rc), rc, rp->operation);
		return false;
	}
	*out = o;
	return true;
}

/* Split "/a/b/c" after `prefix` into at most `max` segments; false when there are more or one is empty. */
static bool split_path(const char *path, const char *prefix, char seg[][CMK_QUOTE_SIZE], size_t max, size_t *n)
{
	const char *p = path + strlen(prefix);

	*n = 0;
	if (*p == '\0')
		return true;
	if (*p++ != '/')
		return false;
	while (*n < max) {
		size_t len = strcspn(p, "/");

		if (len == 0 || len >= CMK_QUOTE_SIZE)
			return false;
		memcpy(seg[*n], p, len);
		seg[*n][len] = '\0';
		(*n)++;
		p += len;
		if (*p == '\0')
			return true;
		p++;
	}
	return false;
}

/* The tenant and type of a path, checked as every command checks them; else 400. */
static bool path_names(const char *tenant, const char *type, struct ctl_reply *rp)
{
	int rc;

	if ((rc = cmk_check_tenant("tenant_id", tenant)) != 0 || (rc = cmk_check_type("type", type)) != 0) {
		ctl_reply_error(rp, 400, rc, rp->operation);
		return false;
	}
	snprintf(rp->tenant, sizeof(rp->tenant), "%s", tenant);
	snprintf(rp->type, sizeof(rp->type), "%s", type);
	return true;
}

/* The step callback: collect the steps as the CLI's --json output lists them. */
struct steps {
	json_t *list;
	char failed[32];
};

static void on_step(const char *step, int rc, int64_t ms, const char *detail, void *arg)
{
	struct steps *s = arg;

	if (rc != 0 && s->failed[0] == '\0')
		snprintf(s->failed, sizeof(s->failed), "%s", step);
	cmk_json_step(s->list, step, rc, ms, detail);
}

/*
 * After a committed change: wait for the store's mounts (this one among
 * them) to show it and add the "mount" field, as `cmkcert --wait` does.
 * 202 when a mount did not show it in time: the change is made, but a
 * reader may not see it yet.
 */
static void follow(struct ctl_api *api, int64_t wait_ms, struct ctl_reply *rp)
{
	struct cmk_follow f = { 0 };

	cmk_follow_mounts(api->fs->ctx, wait_ms > 0, wait_ms, &f);
	if (rp->json != NULL && f.json != NULL)
		json_object_set(rp->json, "mount", f.json);
	if (f.failed) {
		rp->status = 202;
		if (f.error != NULL)
			cmk_log(CMK_LOG_WARN, "control: %s", f.error);
	}
	cmk_follow_clear(&f);
}

/* ---- the endpoints ------------------------------------------------------ */

static void keystore_add(struct ctl_api *api, const struct ctl_request *rq, struct ctl_reply *rp)
{
	static const char *const params[] = { "wait", NULL };
	struct cmk_keystore_request req = { .verify = -1 };
	struct cmk_op_result res = { 0 };
	struct steps s = { 0 };
	struct cmk_ctx *ctx;
	int64_t wait_ms;
	unsigned n;
	int rc, slot;

	rp->operation = "keystore add";
	if (!query_ok(rq, params, rp) || !wait_param(rq, &wait_ms, rp))
		return;
	if ((rc = cmk_keystore_request_from_json(rq->body, rq->body_len, &req)) != 0) {
		ctl_reply_error(rp, status_for(rc), rc, rp->operation);
		return;
	}
	/* Names go into the request's audit line only once they are known to be names. */
	if (cmk_is_valid_tenant(req.tenant))
		snprintf(rp->tenant, sizeof(rp->tenant), "%s", req.tenant);
	if (cmk_is_valid_type(req.type))
		snprintf(rp->type, sizeof(rp->type), "%s", req.type);
	if ((ctx = take_worker(api, rq->peer, rp, rp->operation, &slot)) == NULL)
		goto out;
	if ((s.list = json_array()) == NULL) {
		give_worker(api, slot);
		ctl_reply_error(rp, 500, CMK_ERR_NOMEM, rp->operation);
		goto out;
	}
	/* The request is validated with the configuration's files inside cmk_keystore_add(), as for the CLI. */
	if (cmk_prepare(ctx, false, &n) == 0 && n > 0)
		cmk_log(CMK_LOG_INFO, "control: %u interrupted operation(s) recovered", n);
	rc = cmk_keystore_add(ctx, &req, &res, on_step, &s);
	give_worker(api, slot);
	if (res.type[0] != '\0')
		snprintf(rp->type, sizeof(rp->type), "%s", res.type);
	rp->status = rc == 0 ? 200 : status_after(rc, s.failed[0] ? s.failed : NULL);
	rp->json = cmk_json_add_result(&res, rc, s.list);
	if (rc == 0)
		follow(api, wait_ms, rp);
out:
	cmk_op_result_clear(&res);
	cmk_keystore_request_clear(&req);
}

enum lc_op { OP_REMOVE, OP_RENEW, OP_REVOKE };

static void lifecycle_op(struct ctl_api *api, const struct ctl_request *rq, struct ctl_reply *rp, enum lc_op op,
			 const char *tenant, const char *type)
{
	static const char *const params[] = { "wait", NULL };
	static const char *const revoke_fields[] = { "reason", NULL };
	static const char *const no_fields[] = { NULL };
	struct cmk_op_result res = { 0 };
	struct steps s = { 0 };
	struct cmk_ctx *ctx;
	json_t *body = NULL;
	int reason = op == OP_REMOVE ? CMK_REVOKE_CESSATION : CMK_REVOKE_UNSPECIFIED;
	int64_t wait_ms;
	unsigned n;
	int rc, slot;

	rp->operation = op == OP_REMOVE ? "keystore remove" : op == OP_RENEW ? "renew" : "revoke";
	if (!path_names(tenant, type, rp) || !query_ok(rq, params, rp) || !wait_param(rq, &wait_ms, rp) ||
	    !body_object(rq, op == OP_REVOKE ? revoke_fields : no_fields, &body, rp))
		return;
	if (body != NULL && json_object_get(body, "reason") != NULL) {
		const char *r = json_string_value(json_object_get(body, "reason"));
		char q[CMK_QUOTE_SIZE];

		if ((reason = cmk_revoke_reason_parse(r)) < 0) {
			cmk_quote(r, q);
			cmk_fail(CMK_ERR_INVALID, "reason \"%s\": use compromise, superseded, cessation or unspecified",
				 r != NULL ? q : "(not a string)");
			ctl_reply_error(rp, 400, CMK_ERR_INVALID, rp->operation);
			json_decref(body);
			return;
		}
	}
	json_decref(body);
	if ((s.list = json_array()) == NULL || (ctx = take_worker(api, rq->peer, rp, rp->operation, &slot)) == NULL) {
		if (s.list == NULL)
			ctl_reply_error(rp, 500, CMK_ERR_NOMEM, rp->operation);
		json_decref(s.list);
		return;
	}
	/* As the CLI: refuse a configuration whose OpenBao files are gone before anything is recorded. */
	if ((rc = cmk_prepare(ctx, true, &n)) != 0) {
		give_worker(api, slot);
		ctl_reply_error(rp, status_for(rc), rc, rp->operation);
		json_decref(s.list);
		return;
	}
	if (n > 0)
		cmk_log(CMK_LOG_INFO, "control: %u interrupted operation(s) recovered", n);
	if (op == OP_RENEW)
		rc = cmk_renew(ctx, tenant, type, &res, on_step, &s);
	else if (op == OP_REVOKE)
		rc = cmk_revoke(ctx, tenant, type, (enum cmk_revoke_reason)reason, &res, on_step, &s);
	else
		rc = cmk_keystore_remove(ctx, tenant, type, &res, on_step, &s);
	give_worker(api, slot);
	if (op == OP_RENEW && rc != CMK_ERR_INVALID && rc != CMK_ERR_NOTFOUND && rc != CMK_ERR_BUSY)
		metrics_renewal(rc == 0);
	if (res.type[0] != '\0')
		snprintf(rp->type, sizeof(rp->type), "%s", res.type);
	rp->status = rc == 0 ? 200 : status_after(rc, s.failed[0] ? s.failed : NULL);
	rp->json = cmk_json_op_result(rp->operation, rc, &res);
	if (rp->json != NULL)
		json_object_set(rp->json, "steps", s.list);
	json_decref(s.list);
	if (rc == 0)
		follow(api, wait_ms, rp);
	cmk_op_result_clear(&res);
}

struct list_arg {
	json_t *arr;
};

static int list_one(const struct cmk_cert_record *r, void *arg)
{
	struct list_arg *a = arg;

	return json_array_append_new(a->arr, cmk_json_record(r, false)) == 0 ? 0 : CMK_ERR_NOMEM;
}

static void certificates(struct ctl_api *api, const struct ctl_request *rq, struct ctl_reply *rp)
{
	static const char *const params[] = { "tenant", "type", "status", NULL };
	struct cmk_cert_filter f = { .status = -1 };
	struct list_arg a = { 0 };
	const char *status;
	char q[CMK_QUOTE_SIZE];
	bool present;
	int rc;

	rp->operation = "list";
	if (!query_ok(rq, params, rp))
		return;
	f.tenant = query_get(rq, "tenant", &present);
	if (present && f.tenant == NULL)
		f.tenant = "";
	f.type = query_get(rq, "type", &present);
	if (present && f.type == NULL)
		f.type = "";
	status = query_get(rq, "status", &present);
	if (present && (status == NULL || (f.status = cmk_status_parse(status)) < 0)) {
		cmk_quote(status, q);
		cmk_fail(CMK_ERR_INVALID, "status \"%s\": use pending, active, rotating, failed, revoked, cleaned_up "
			 "or expired", q);
		ctl_reply_error(rp, 400, CMK_ERR_INVALID, rp->operation);
		return;
	}
	if (f.tenant != NULL && cmk_is_valid_tenant(f.tenant))
		snprintf(rp->tenant, sizeof(rp->tenant), "%s", f.tenant);
	if ((a.arr = json_array()) == NULL) {
		ctl_reply_error(rp, 500, CMK_ERR_NOMEM, rp->operation);
		return;
	}
	if ((rc = cmk_cert_list(api->fs->ctx, &f, list_one, &a)) != 0) {
		json_decref(a.arr);
		ctl_reply_error(rp, status_for(rc), rc, rp->operation);
		return;
	}
	rp->status = 200;
	rp->json = a.arr;
}

static void certificate(struct ctl_api *api, const struct ctl_request *rq, struct ctl_reply *rp, const char *tenant,
			const char *type)
{
	static const char *const params[] = { NULL };
	struct cmk_cert_record r = { 0 };
	int rc;

	rp->operation = "show";
	if (!path_names(tenant, type, rp) || !query_ok(rq, params, rp))
		return;
	if ((rc = cmk_cert_current(api->fs->ctx, tenant, type, &r)) != 0) {
		ctl_reply_error(rp, status_for(rc), rc, rp->operation);
		return;
	}
	rp->status = 200;
	rp->json = cmk_json_record(&r, true);
	cmk_cert_record_clear(&r);
}

static void healthz(struct ctl_api *api, struct ctl_reply *rp)
{
	(void)api;
	rp->operation = "healthz";
	rp->status = 200;
	rp->json = json_pack("{s:b, s:s, s:i}", "ok", 1, "status", "live", "pid", (int)getpid());
}

/* OpenBao answers sys/health, initialized and unsealed; asked at most every READY_BAO_CACHE_MS. */
static int openbao_ready(struct ctl_api *api, char *detail, size_t len)
{
	int64_t now = cmk_monotonic_ms();
	int rc;

	pthread_mutex_lock(&api->ready_mu);
	if (api->bao_checked_ms == 0 || now - api->bao_checked_ms >= READY_BAO_CACHE_MS) {
		struct cmk_bao_health h = { 0 };

		rc = api->bao != NULL ? 0 : cmk_bao_new(api->fs->ctx->cfg, &api->bao);
		if (rc == 0)
			rc = cmk_bao_health(api->bao, &h);
		if (rc == 0 && (!h.initialized || h.sealed))
			rc = cmk_fail(CMK_ERR_SEALED, "OpenBao at %s is %s", api->fs->ctx->cfg->openbao.address,
				      h.initialized ? "sealed" : "not initialized");
		if (rc == 0)
			snprintf(api->bao_detail, sizeof(api->bao_detail), "%s: OpenBao %s, %s",
				 api->fs->ctx->cfg->openbao.address, h.version, h.standby ? "standby" : "active");
		else
			snprintf(api->bao_detail, sizeof(api->bao_detail), "%s", cmk_errdetail());
		api->bao_rc = rc;
		api->bao_checked_ms = cmk_monotonic_ms();
	}
	rc = api->bao_rc;
	snprintf(detail, len, "%s", api->bao_detail);
	pthread_mutex_unlock(&api->ready_mu);
	return rc;
}

static json_t *check_json(bool ok, const char *detail)
{
	return json_pack("{s:b, s:s}", "ok", ok, "detail", detail);
}

static void readyz(struct ctl_api *api, struct ctl_reply *rp)
{
	struct cmkfs *fs = api->fs;
	char detail[300];
	uint64_t seq = 0;
	bool mount_ok, store_ok, bao_ok;
	json_t *checks = json_object();

	rp->operation = "readyz";
	mount_ok = fs->se != NULL && !fuse_session_exited(fs->se) && watch_is_current(fs);
	snprintf(detail, sizeof(detail), "%s: %s", fs->mountpoint,
		 mount_ok ? "serving, following the store"
			  : fs->se == NULL || fuse_session_exited(fs->se) ? "not serving"
									   : "not following the store");
	json_object_set_new(checks, "mount", check_json(mount_ok, detail));
	store_ok = cmk_store_change_last(fs->ctx->store, &seq) == 0;
	if (store_ok)
		snprintf(detail, sizeof(detail), "%s: open, change %" PRIu64, fs->ctx->cfg->store.path, seq);
	else
		snprintf(detail, sizeof(detail), "%s: %s", fs->ctx->cfg->store.path, cmk_errdetail());
	json_object_set_new(checks, "store", check_json(store_ok, detail));
	bao_ok = openbao_ready(api, detail, sizeof(detail)) == 0;
	json_object_set_new(checks, "openbao", check_json(bao_ok, detail));
	rp->status = mount_ok && store_ok && bao_ok ? 200 : 503;
	rp->json = json_pack("{s:b, s:o}", "ok", rp->status == 200, "checks", checks);
}

static void metrics(struct ctl_api *api, struct ctl_reply *rp)
{
	rp->operation = "metrics";
	if ((rp->text = metrics_render(api->fs, &rp->text_len)) == NULL) {
		ctl_reply_error(rp, 503, CMK_ERR_STORE, rp->operation);
		return;
	}
	rp->status = 200;
}

/* ---- routing ------------------------------------------------------------ */

static bool method_is(const struct ctl_request *rq, const char *m)
{
	return strcmp(rq->method, m) == 0;
}

static void not_allowed(struct ctl_reply *rp, const struct ctl_request *rq, const char *allow)
{
	char q[CMK_QUOTE_SIZE];

	cmk_quote(rq->method, q);
	cmk_fail(CMK_ERR_INVALID, "%s: method %s not allowed (use %s)", rq->path, q, allow);
	ctl_reply_error(rp, 405, CMK_ERR_INVALID, rp->operation);
	rp->allow = allow;
}

void ctl_api_handle(struct ctl_api *api, const struct ctl_request *rq, struct ctl_reply *rp)
{
	char seg[3][CMK_QUOTE_SIZE], q[CMK_QUOTE_SIZE];
	bool get = method_is(rq, "GET") || method_is(rq, "HEAD");
	size_t n = 0;

	if (strcmp(rq->path, "/healthz") == 0 || strcmp(rq->path, "/readyz") == 0 || strcmp(rq->path, "/metrics") == 0) {
		rp->operation = rq->path + 1;
		if (!get)
			not_allowed(rp, rq, "GET");
		else if (rq->path[1] == 'h')
			healthz(api, rp);
		else if (rq->path[1] == 'r')
			readyz(api, rp);
		else
			metrics(api, rp);
		return;
	}
	/* Everything under /v1/ is recorded in the audit trail, whatever its outcome. */
	rp->audit = true;
	if (strncmp(rq->path, "/v1/keystores", 13) == 0 && split_path(rq->path, "/v1/keystores", seg, 3, &n) &&
	    (n == 0 || n == 2 || (n == 3 && (strcmp(seg[2], "renew") == 0 || strcmp(seg[2], "revoke") == 0)))) {
		enum lc_op op = n == 2 ? OP_REMOVE : n == 3 && strcmp(seg[2], "renew") == 0 ? OP_RENEW : OP_REVOKE;
		const char *want = n == 2 ? "DELETE" : "POST";

		rp->operation = n == 0 ? "keystore add" : op == OP_REMOVE ? "keystore remove" : op == OP_RENEW ? "renew"
															 : "revoke";
		if (!method_is(rq, want))
			not_allowed(rp, rq, want);
		else if (n == 0)
			keystore_add(api, rq, rp);
		else
			lifecycle_op(api, rq, rp, op, seg[0], seg[1]);
		return;
	}
	if (strncmp(rq->path, "/v1/certificates", 16) == 0 && split_path(rq->path, "/v1/certificates", seg, 2, &n) &&
	    n != 1) {
		rp->operation = n == 0 ? "list" : "show";
		if (!get)
			not_allowed(rp, rq, "GET");
		else if (n == 0)
			certificates(api, rq, rp);
		else
			certificate(api, rq, rp, seg[0], seg[1]);
		return;
	}
	rp->operation = "control";
	cmk_quote(rq->path, q);
	cmk_fail(CMK_ERR_NOTFOUND, "no endpoint %s (see cmkcertfs(8), CONTROL SOCKET)", q);
	ctl_reply_error(rp, 404, CMK_ERR_NOTFOUND, rp->operation);
}
