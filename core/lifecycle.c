/*
 * lifecycle.c - the certificate lifecycle state machine (DESIGN §8).
 *
 * States of a certificate record and the only transitions allowed:
 *
 *   (none) --issue+seal+store--> pending
 *   pending --connection test accepted--> active        (renew_at set)
 *           (with verify none there is no test: the transaction that stores
 *           the pending record makes it active too, both audit lines in it)
 *   pending --connection test refused---> failed
 *   pending --found at start-up, no operation holds it--> failed ("interrupted")
 *   active  --a renewed certificate activated--> rotating (same transaction)
 *   active  --reached not_after unrenewed--> expired
 *   pending | active | rotating | failed | expired --revoked in OpenBao, on the CRL--> revoked
 *   rotating --grace period over--> cleaned_up
 *   failed | expired --sealed key no longer needed--> cleaned_up
 *
 * revoked and cleaned_up records have their sealed key destroyed; every
 * record keeps its metadata for the audit trail.  At most one record per
 * (tenant, type) is active.  Each transition is one durable store
 * transaction, and each multi-step operation holds the (tenant, type) lock,
 * so a crash at any point leaves the previous good state, and a pending
 * record found without its lock held is an interrupted operation.
 *
 * The operations live beside this file: op_check.c (story 1), op_add.c
 * (story 2); they change state only through cmk_lc_transition().
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/probe.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

#define STORE_RETRIES 6
#define PROBE_TIMEOUT_MS 10000

/* ---- the transition table --------------------------------------------- */

bool cmk_lc_transition_allowed(enum cmk_status from, enum cmk_status to)
{
	switch (to) {
	case CMK_ST_ACTIVE:
	case CMK_ST_FAILED:
		return from == CMK_ST_PENDING;
	case CMK_ST_ROTATING:
	case CMK_ST_EXPIRED:
		return from == CMK_ST_ACTIVE;
	case CMK_ST_REVOKED:
		return from != CMK_ST_REVOKED && from != CMK_ST_CLEANED_UP;
	case CMK_ST_CLEANED_UP:
		return from == CMK_ST_ROTATING || from == CMK_ST_FAILED || from == CMK_ST_EXPIRED;
	case CMK_ST_PENDING:
	default:
		return false;
	}
}

int cmk_lc_transition(struct cmk_txn *txn, struct cmk_cert_record *rec, enum cmk_status to, const char *error)
{
	int64_t now = cmk_now();
	char *err = NULL;

	if (!cmk_lc_transition_allowed(rec->status, to))
		return cmk_fail(CMK_ERR_STATE, "certificate %" PRIu64 " (%s %s) cannot go from %s to %s", rec->id,
				rec->tenant, rec->type, cmk_status_name(rec->status), cmk_status_name(to));
	if (error != NULL && (err = strdup(error)) == NULL)
		return CMK_ERR_NOMEM;
	free(rec->last_error);
	rec->last_error = err;
	rec->status = to;
	rec->updated_at = now;
	switch (to) {
	case CMK_ST_ACTIVE:
		rec->activated_at = now;
		rec->attempts = 0;
		break;
	case CMK_ST_REVOKED:
		rec->revoked_at = now;
		/* A revoked key is never needed again. */
		__attribute__((fallthrough));
	case CMK_ST_CLEANED_UP:
		rec->flags &= ~CMK_CERT_F_REVOKING;     /* nothing left to revoke or serve */
		cmk_freezero(rec->sealed_key, rec->sealed_key_len);
		rec->sealed_key = NULL;
		rec->sealed_key_len = 0;
		rec->renew_at = 0;
		break;
	default:
		rec->renew_at = 0;
		break;
	}
	return cmk_store_cert_put(txn, rec);
}

static int set_status_txn(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	const struct cmk_lc_set *s = arg;
	struct cmk_cert_record rec = { 0 };
	int rc;

	if ((rc = cmk_store_cert_get(ctx->store, txn, s->id, &rec)) != 0)
		return rc;
	if (rec.status != s->from) {
		rc = cmk_fail(CMK_ERR_STATE, "certificate %" PRIu64 " is %s, expected %s", s->id,
			      cmk_status_name(rec.status), cmk_status_name(s->from));
		goto out;
	}
	if (s->to == CMK_ST_ACTIVE)
		rec.renew_at = s->renew_at;
	rc = cmk_lc_transition(txn, &rec, s->to, s->error);
out:
	cmk_cert_record_clear(&rec);
	return rc;
}

int cmk_lc_set_status(struct cmk_ctx *ctx, const struct cmk_lc_set *s, struct cmk_lc_note *note)
{
	return cmk_lc_with_txn(ctx, set_status_txn, (void *)s, note);
}

static void note_event(struct cmk_ctx *ctx, const struct cmk_lc_note *n, struct cmk_audit_event *ev)
{
	const struct cmk_cert_record *rec = n->rec;

	*ev = (struct cmk_audit_event)CMK_AUDIT_EVENT_INIT;
	ev->event = n->event;
	ev->outcome = n->outcome;
	ev->step = n->step;
	ev->actor = ctx->actor;
	ev->detail = n->detail;
	ev->key_origin = n->key_origin;
	ev->tenant = n->tenant;
	ev->type = n->type;
	if (rec != NULL) {
		ev->tenant = rec->tenant;
		ev->type = rec->type;
		ev->serial = rec->serial[0] ? rec->serial : NULL;
		ev->fingerprint = rec->fingerprint[0] ? rec->fingerprint : NULL;
		ev->record_id = rec->id;
	}
}

int cmk_lc_with_txn_notes(struct cmk_ctx *ctx, cmk_lc_txn_fn fn, void *arg, struct cmk_lc_note *const *notes,
			  size_t n)
{
	for (int attempt = 0;; attempt++) {
		struct cmk_audit_event ev[CMK_LC_NOTES_MAX];
		struct cmk_txn *txn = NULL;
		size_t m = 0;
		int rc = cmk_store_begin(ctx->store, &txn);

		for (size_t i = 0; i < n; i++)
			notes[i]->skip = false;
		if (rc == 0)
			rc = fn(ctx, txn, arg);
		for (size_t i = 0; rc == 0 && i < n && m < CMK_LC_NOTES_MAX; i++)
			if (!notes[i]->skip)
				note_event(ctx, notes[i], &ev[m++]);
		/* Every line in one write and one fsync, anchored by this transaction. */
		if (rc == 0 && m > 0 && (rc = cmk_audit_append_txn(ctx->audit, txn, ev, m)) != 0 && rc != CMK_ERR_BUSY)
			cmk_log(CMK_LOG_ERROR, "audit: %s: %s; the change is not made", ev[0].event, cmk_errdetail());
		if (rc == 0)
			rc = cmk_store_commit(txn);
		else
			cmk_store_abort(txn);
		if (rc != CMK_ERR_BUSY || attempt >= STORE_RETRIES)
			return rc;
		/* A lock conflict with another process: back off a little, then redo the whole transaction. */
		usleep((useconds_t)(5000u << attempt) + (useconds_t)(cmk_lc_random_unit() * 5000));
	}
}

int cmk_lc_with_txn(struct cmk_ctx *ctx, cmk_lc_txn_fn fn, void *arg, struct cmk_lc_note *note)
{
	return cmk_lc_with_txn_notes(ctx, fn, arg, &note, note != NULL ? 1 : 0);
}

/* ---- context ---------------------------------------------------------- */

int cmk_ctx_open(const char *config_path, const char *actor, struct cmk_ctx **out)
{
	struct cmk_ctx *ctx;
	int rc;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		return CMK_ERR_NOMEM;
	snprintf(ctx->actor, sizeof(ctx->actor), "%s", actor ? actor : "cmkcert");
	if ((rc = cmk_config_load(config_path, &ctx->cfg)) != 0)
		goto fail;
	if ((rc = cmk_store_open(ctx->cfg->store.path, &ctx->store)) != 0)
		goto fail;
	if ((rc = cmk_sealer_open(ctx->cfg, cmk_store_id(ctx->store), &ctx->sealer)) != 0)
		goto fail;
	if ((rc = cmk_audit_open(ctx->cfg->audit.path, &ctx->audit)) != 0)
		goto fail;
	{
		uint8_t key[32];

		if ((rc = cmk_sealer_audit_key(ctx->sealer, key)) != 0)
			goto fail;
		cmk_audit_bind(ctx->audit, ctx->store, key);
		cmk_wipe(key, sizeof(key));
	}
	*out = ctx;
	return 0;
fail:
	cmk_ctx_free(ctx);
	return rc;
}

int cmk_ctx_thread(struct cmk_ctx *ctx, struct cmk_ctx **out)
{
	struct cmk_ctx *t = malloc(sizeof(*t));

	if (t == NULL)
		return CMK_ERR_NOMEM;
	*t = *ctx;
	t->bao = NULL;
	t->shared = true;
	*out = t;
	return 0;
}

void cmk_ctx_free(struct cmk_ctx *ctx)
{
	if (ctx == NULL)
		return;
	cmk_bao_free(ctx->bao);
	if (ctx->shared) {
		free(ctx);
		return;
	}
	cmk_audit_close(ctx->audit);
	cmk_sealer_free(ctx->sealer);
	cmk_store_close(ctx->store);
	cmk_config_free(ctx->cfg);
	free(ctx);
}

int cmk_ctx_bao(struct cmk_ctx *ctx, struct cmk_bao **out)
{
	int rc;

	if (ctx->bao == NULL) {
		if ((rc = cmk_bao_new(ctx->cfg, &ctx->bao)) != 0)
			return rc;
		/* Start with the token the store's processes share (token_share.c). */
		if ((rc = cmk_lc_token_attach(ctx, ctx->bao)) != 0) {
			cmk_bao_free(ctx->bao);
			ctx->bao = NULL;
			return rc;
		}
	}
	*out = ctx->bao;
	return 0;
}

/* ---- per (tenant, type) operation lock -------------------------------- */

struct cmk_lc_lock {
	int fd;
};

/* Lock <store>/locks/<name>.lock; `what` names it in messages. */
static int lock_file(struct cmk_ctx *ctx, const char *name, const char *what, bool wait, struct cmk_lc_lock **out)
{
	struct cmk_lc_lock *l;
	char *dir, *path;
	int fd, rc = 0;

	*out = NULL;
	dir = cmk_asprintf("%s/locks", ctx->cfg->store.path);
	path = cmk_asprintf("%s/locks/%s.lock", ctx->cfg->store.path, name);
	if (dir == NULL || path == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	if ((rc = cmk_mkdirs(dir, 0700)) != 0)
		goto out;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = cmk_fail(CMK_ERR_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
		if (errno == EINTR)
			continue;
		rc = errno == EWOULDBLOCK ? cmk_fail(CMK_ERR_BUSY, "another operation on %s is in progress", what)
					  : cmk_fail(CMK_ERR_IO, "%s: flock: %s", path, strerror(errno));
		close(fd);
		goto out;
	}
	if ((l = malloc(sizeof(*l))) == NULL) {
		close(fd);
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	l->fd = fd;
	*out = l;
out:
	free(dir);
	free(path);
	return rc;
}

int cmk_lc_lock(struct cmk_ctx *ctx, const char *tenant, const char *type, bool wait, struct cmk_lc_lock **out)
{
	char name[CMK_TENANT_MAX + CMK_TYPE_MAX + 2], what[CMK_TENANT_MAX + CMK_TYPE_MAX + 16];

	/* Names are validated before they reach a path. */
	if (!cmk_is_valid_tenant(tenant) || !cmk_is_valid_type(type))
		return cmk_fail(CMK_ERR_INVALID, "lock: invalid tenant or type");
	snprintf(name, sizeof(name), "%s-%s", tenant, type);
	snprintf(what, sizeof(what), "tenant %s %s", tenant, type);
	return lock_file(ctx, name, what, wait, out);
}

int cmk_lc_lock_named(struct cmk_ctx *ctx, const char *name, bool wait, struct cmk_lc_lock **out)
{
	/* Not a tenant's: those are "<tenant>-<type>", and no tenant id starts with '#'. */
	if (name[0] != '#' || strchr(name, '/') != NULL)
		return cmk_fail(CMK_ERR_INVALID, "lock: \"%s\" is not a shared lock's name", name);
	return lock_file(ctx, name, name + 1, wait, out);
}

void cmk_lc_unlock(struct cmk_lc_lock *lock)
{
	if (lock == NULL)
		return;
	close(lock->fd);
	free(lock);
}

/* ---- shared helpers ---------------------------------------------------- */

void cmk_lc_report(cmk_step_fn step, void *arg, const char *name, int rc, int64_t t0, const char *detail)
{
	if (step != NULL)
		step(name, rc, cmk_monotonic_ms() - t0, detail, arg);
}

int cmk_lc_audit(struct cmk_ctx *ctx, const char *event, const char *outcome, const char *step,
		 const struct cmk_cert_record *rec, const char *detail)
{
	struct cmk_lc_note n = { event, outcome, step, detail, rec, NULL, NULL, false, NULL };
	struct cmk_audit_event ev;
	int rc;

	note_event(ctx, &n, &ev);
	if ((rc = cmk_audit_append(ctx->audit, &ev)) != 0)
		cmk_log(CMK_LOG_ERROR, "audit: %s: %s", event, cmk_errdetail());
	return rc;
}

int cmk_lc_audit_failure(struct cmk_ctx *ctx, const char *tenant, const char *type, const char *step,
			 const char *detail)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	int rc;

	ev.event = CMK_AUDIT_ERROR;
	ev.outcome = "failure";
	ev.tenant = tenant;
	ev.type = type;
	ev.step = step;
	ev.actor = ctx->actor;
	ev.detail = detail;
	if ((rc = cmk_audit_append(ctx->audit, &ev)) != 0)
		cmk_log(CMK_LOG_ERROR, "audit: error event: %s", cmk_errdetail());
	return rc;
}

int cmk_lc_shred(struct cmk_ctx *ctx)
{
	struct cmk_shred_stats st;
	int rc;

	if (!cmk_store_shred_pending(ctx->store))
		return 0;
	if ((rc = cmk_store_shred(ctx->store, &st)) != 0) {
		cmk_log(CMK_LOG_WARN, "shred: %s (the next run tries again)", cmk_errdetail());
		return rc;
	}
	cmk_log(CMK_LOG_DEBUG, "shred: %llu destroyed key(s); %u old log file(s) overwritten and removed",
		(unsigned long long)st.keys, st.logs_removed);
	return 0;
}

double cmk_lc_random_unit(void)
{
	uint32_t r = 0;

	if (cmk_random(&r, sizeof(r)) != 0)
		return 0.5;
	return (double)r / 4294967296.0;
}

int64_t cmk_renew_at(const struct cmk_config *cfg, int64_t not_before, int64_t not_after, double jitter_rand)
{
	int64_t lifetime = not_after - not_before;
	int64_t at, jitter;

	if (lifetime <= 0)
		return not_after;
	/* A lifetime shorter than twice renew_before would renew almost at once: use 2/3 of it instead. */
	if (lifetime < 2 * cfg->renewal.renew_before)
		at = not_before + lifetime * 2 / 3;
	else
		at = not_after - cfg->renewal.renew_before;
	/* Jitter spreads renewals of certificates issued together; never more than a tenth of the lifetime. */
	jitter = cfg->renewal.jitter;
	if (jitter > lifetime / 10)
		jitter = lifetime / 10;
	if (jitter_rand > 0 && jitter > 0)
		at -= (int64_t)(jitter_rand * (double)jitter);
	return at;
}

int cmk_lc_test_connection(const struct cmk_keystore_record *ks, const char *cert_pem, const char *chain_pem,
			   const struct cmk_key *key)
{
	if (ks->verify == CMK_VERIFY_NONE)
		return 0;
	for (size_t i = 0; i < ks->n_endpoints; i++) {
		struct cmk_probe_target t = { 0 };
		char host[CMK_HOST_MAX + 1];
		int rc;

		if ((rc = cmk_parse_endpoint(ks->endpoints[i], host, &t.port)) != 0)
			return rc;
		t.host = host;
		t.server_ca_pem = ks->server_ca_pem;
		t.verify = ks->verify;
		t.timeout_ms = PROBE_TIMEOUT_MS;
		if ((rc = cmk_probe(&t, cert_pem, chain_pem, key)) != 0)
			return rc;
	}
	return 0;
}

/* ---- start-up recovery ------------------------------------------------ */

struct pending_ids {
	uint64_t *ids;
	size_t n, cap;
};

static int collect_pending(const struct cmk_cert_record *rec, void *arg)
{
	struct pending_ids *p = arg;

	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		uint64_t *n = realloc(p->ids, cap * sizeof(*n));
		if (n == NULL)
			return CMK_ERR_NOMEM;
		p->ids = n;
		p->cap = cap;
	}
	p->ids[p->n++] = rec->id;
	return 0;
}

int cmk_recover(struct cmk_ctx *ctx, unsigned *n_reset)
{
	struct cmk_cert_filter f = { .status = CMK_ST_PENDING };
	struct pending_ids p = { 0 };
	unsigned revoked = 0, reaped = 0;
	int rc;

	*n_reset = 0;
	/* Pool keys claimed by runs that died: a certificate may exist for them, so they are discarded. */
	if (cmk_store_pool_reap(ctx->store, &reaped) != 0)
		cmk_log(CMK_LOG_WARN, "recover: key pool: %s", cmk_errdetail());
	else if (reaped > 0)
		cmk_lc_shred(ctx);
	/* A revocation once requested is never dropped; without OpenBao it waits for the next run. */
	if (cmk_lc_finish_revocations(ctx, &revoked) != 0)
		cmk_log(CMK_LOG_WARN, "recover: a requested revocation could not be finished yet: %s", cmk_errdetail());
	*n_reset += revoked;
	if ((rc = cmk_store_cert_each(ctx->store, NULL, &f, collect_pending, &p)) != 0)
		goto out;
	for (size_t i = 0; i < p.n; i++) {
		struct cmk_cert_record rec = { 0 };
		struct cmk_lc_lock *lock = NULL;
		struct cmk_lc_set s = { p.ids[i], CMK_ST_PENDING, CMK_ST_FAILED, 0,
					"interrupted: the operation that created it did not finish" };

		if (cmk_store_cert_get(ctx->store, NULL, p.ids[i], &rec) != 0)
			continue;
		/* A pending record whose lock is held belongs to an operation still running elsewhere. */
		if (cmk_lc_lock(ctx, rec.tenant, rec.type, false, &lock) == 0) {
			struct cmk_lc_note note = { CMK_AUDIT_ERROR, "failure", "recover", s.error, &rec, NULL, NULL, false, NULL };

			if (cmk_lc_set_status(ctx, &s, &note) == 0)
				(*n_reset)++;
			cmk_lc_unlock(lock);
		}
		cmk_cert_record_clear(&rec);
	}
out:
	free(p.ids);
	return rc;
}
