/*
 * op_renew.c - story 3: renew before expiry and rotate without interrupting
 * readers; plus the scheduler pass that finds what is due, expires what
 * was not renewed in time and cleans up after the grace period.
 *
 * A renewal holds the (tenant, type) lock for its whole duration.  The old
 * certificate stays active and served until the new one passed the
 * keystore test; the switch (new active, old rotating) is one transaction.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

/*
 * When to try again after `attempts` failures: capped exponential backoff
 * with jitter.  The scale follows the scheduler's check interval (first
 * retry after half of it, never more than 16 intervals apart: 30 s and
 * 16 min with the default 1m), and a retry is never so late that the
 * certificate expires first.
 */
static int64_t retry_at(const struct cmk_config *cfg, int64_t now, int64_t not_after, uint32_t attempts)
{
	int64_t delay = cfg->renewal.check_interval / 2, cap = cfg->renewal.check_interval * 16;

	if (delay < 1)
		delay = 1;
	/* Leave room for several more attempts before not_after. */
	if ((not_after - now) / 4 < cap)
		cap = (not_after - now) / 4;
	if (cap < 1)
		cap = 1;
	for (uint32_t i = 1; i < attempts && delay < cap; i++)
		delay *= 2;
	if (delay > cap)
		delay = cap;
	/* Half fixed, half random: failures of many tenants at once do not retry in lockstep. */
	return now + delay / 2 + (int64_t)(cmk_lc_random_unit() * (double)(delay - delay / 2)) + 1;
}

struct failed_arg {
	uint64_t old_id;
	uint64_t new_id;          /* 0 = no new record was stored */
	const char *error;
	int64_t next;             /* out: when the next attempt is due */
};

/* Record a failed attempt: the new record (if any) becomes failed, the old one is retried later. */
static int record_failure(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct failed_arg *a = arg;
	struct cmk_cert_record old = { 0 }, nw = { 0 };
	int rc;

	if (a->new_id != 0) {
		if ((rc = cmk_store_cert_get(ctx->store, txn, a->new_id, &nw)) != 0)
			goto out;
		if (nw.status == CMK_ST_PENDING && (rc = cmk_lc_transition(txn, &nw, CMK_ST_FAILED, a->error)) != 0)
			goto out;
	}
	if ((rc = cmk_store_cert_get(ctx->store, txn, a->old_id, &old)) != 0)
		goto out;
	if (old.status != CMK_ST_ACTIVE)
		goto out;
	old.attempts++;
	old.renew_at = a->next = retry_at(ctx->cfg, cmk_now(), old.not_after, old.attempts);
	free(old.last_error);
	old.last_error = a->error ? strdup(a->error) : NULL;
	old.updated_at = cmk_now();
	rc = cmk_store_cert_put(txn, &old);
out:
	cmk_cert_record_clear(&old);
	cmk_cert_record_clear(&nw);
	return rc;
}

struct rotate_arg {
	uint64_t old_id, new_id;
	int64_t renew_at;
};

/* The switch: new pending -> active and old active -> rotating, in one transaction. */
static int rotate(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct rotate_arg *a = arg;
	struct cmk_cert_record old = { 0 }, nw = { 0 };
	int rc;

	if ((rc = cmk_store_cert_get(ctx->store, txn, a->old_id, &old)) != 0 ||
	    (rc = cmk_store_cert_get(ctx->store, txn, a->new_id, &nw)) != 0)
		goto out;
	if (old.status != CMK_ST_ACTIVE) {
		rc = cmk_fail(CMK_ERR_STATE, "certificate %" PRIu64 " is no longer active (%s)", old.id,
			      cmk_status_name(old.status));
		goto out;
	}
	if ((rc = cmk_lc_transition(txn, &old, CMK_ST_ROTATING, NULL)) != 0)
		goto out;
	nw.renew_at = a->renew_at;
	rc = cmk_lc_transition(txn, &nw, CMK_ST_ACTIVE, NULL);
out:
	cmk_cert_record_clear(&old);
	cmk_cert_record_clear(&nw);
	return rc;
}

struct pending_arg {
	uint64_t old_id;
	struct cmk_cert_record *rec;
	const struct cmk_lc_key *key;
	int64_t renew_at;           /* != 0: nothing to test (verify none): rotate in the same transaction */
};

static int store_renewal(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct pending_arg *a = arg;
	struct cmk_cert_record old = { 0 };
	int rc;

	if ((rc = cmk_store_cert_get(ctx->store, txn, a->old_id, &old)) != 0)
		return rc;
	if (old.status != CMK_ST_ACTIVE)
		rc = cmk_fail(CMK_ERR_STATE, "certificate %" PRIu64 " is no longer active (%s)", old.id,
			      cmk_status_name(old.status));
	cmk_cert_record_clear(&old);
	if (rc != 0)
		return rc;
	/* A retried transaction starts again from the record as issued. */
	a->rec->status = CMK_ST_PENDING;
	a->rec->activated_at = 0;
	a->rec->renew_at = 0;
	a->rec->supersedes = a->old_id;
	if ((rc = cmk_lc_store_pending(ctx, txn, a->rec, a->key)) != 0 || a->renew_at == 0)
		return rc;
	{
		struct rotate_arg ra = { a->old_id, a->rec->id, a->renew_at };
		if ((rc = rotate(ctx, txn, &ra)) != 0)
			return rc;
	}
	/* rotate() changed the stored copy; this one is what the caller reports. */
	a->rec->status = CMK_ST_ACTIVE;
	a->rec->renew_at = a->renew_at;
	return 0;
}

/* The renewal proper, with the lock held and the old record in hand. */
static int renew_locked(struct cmk_ctx *ctx, const struct cmk_cert_record *old, struct cmk_op_result *res,
			cmk_step_fn step, void *arg)
{
	struct cmk_lc_plan plan = { 0 };
	struct cmk_cert_info old_info = { 0 }, info = { 0 };
	struct cmk_bao_cert cert = { 0 };
	struct cmk_cert_record rec = { 0 };
	struct cmk_keystore_record ks = { 0 };
	struct cmk_lc_key key = { 0 };
	struct failed_arg fail = { old->id, 0, NULL, 0 };
	char detail[512];
	const char *failed_step = NULL;
	int64_t t0 = cmk_monotonic_ms();
	int rc;

	snprintf(res->type, sizeof(res->type), "%s", old->type);
	if ((plan.tpl = cmk_config_template(ctx->cfg, old->type)) == NULL) {
		rc = cmk_fail(CMK_ERR_CONFIG, "no [template:%s] in %s", old->type, ctx->cfg->path);
		failed_step = "validate";
		goto fail;
	}
	rc = cmk_store_keystore_get(ctx->store, NULL, old->tenant, old->type, &ks);
	if (rc == 0)
		rc = cmk_cert_parse(old->cert_pem, &old_info);
	if (rc == 0)
		rc = cmk_lc_plan_from_cert(&plan, &old_info);
	cmk_lc_report(step, arg, "validate", rc, t0, rc ? cmk_errdetail() : plan.cn);
	if (rc != 0) {
		failed_step = "validate";
		goto fail;
	}

	rc = cmk_lc_issue_step(ctx, &plan, step, arg, &cert, &key, &info);
	if (rc != 0) {
		failed_step = cmk_lc_issue_step_name(ctx);
		goto fail;
	}
	res->warnings = cert.warnings;
	memset(&cert.warnings, 0, sizeof(cert.warnings));

	t0 = cmk_monotonic_ms();
	rc = cmk_lc_fill_record(old->tenant, &plan, &cert, &info, &rec);
	if (rc == 0) {
		bool at_once = ks.verify == CMK_VERIFY_NONE;
		struct pending_arg pa = { old->id, &rec, &key,
					  at_once ? cmk_renew_at(ctx->cfg, rec.not_before, rec.not_after,
								 cmk_lc_random_unit()) : 0 };
		struct cmk_lc_note renewed = { CMK_AUDIT_RENEW, "success", "store", NULL, &rec, NULL, NULL, false,
					       cmk_lc_key_origin(&key) };
		struct cmk_lc_note rotated = { CMK_AUDIT_ACTIVATE, "success", "rotate",
					       "connection test skipped (verify none)", &rec, NULL, NULL, false, NULL };
		struct cmk_lc_note *notes[] = { &renewed, &rotated };

		rc = cmk_lc_with_txn_notes(ctx, store_renewal, &pa, notes, at_once ? 2 : 1);
		if (rc == 0)
			key.claim.id = 0;         /* taken from the pool by the record */
		res->renew_at = pa.renew_at;
	}
	cmk_lc_report(step, arg, "store", rc, t0,
		      rc ? cmk_errdetail() : rec.status == CMK_ST_ACTIVE
				 ? "sealed, stored and active (verify none: nothing to test)" : "sealed, stored as pending");
	if (rc != 0) {
		failed_step = "store";
		goto fail;
	}
	fail.new_id = res->id = rec.id;
	res->status = rec.status;
	snprintf(res->serial, sizeof(res->serial), "%s", rec.serial);
	memcpy(res->fingerprint, rec.fingerprint, sizeof(res->fingerprint));
	res->not_after = rec.not_after;

	t0 = cmk_monotonic_ms();
	rc = cmk_lc_test_connection(&ks, cert.certificate, cert.ca_chain, key.key);
	cmk_lc_report(step, arg, "test", rc, t0,
		      rc ? cmk_errdetail() : ks.verify == CMK_VERIFY_NONE ? "skipped (verify none)" : "keystore accepted");
	if (rc != 0) {
		failed_step = "test";
		goto fail;
	}

	t0 = cmk_monotonic_ms();
	if (rec.status != CMK_ST_ACTIVE) {
		struct rotate_arg ra = { old->id, rec.id,
					 cmk_renew_at(ctx->cfg, rec.not_before, rec.not_after, cmk_lc_random_unit()) };
		struct cmk_lc_note note = { CMK_AUDIT_ACTIVATE, "success", "rotate", NULL, &rec, NULL, NULL, false, NULL };
		rc = cmk_lc_with_txn(ctx, rotate, &ra, &note);
		res->renew_at = ra.renew_at;
	}
	cmk_lc_report(step, arg, "activate", rc, t0, rc ? cmk_errdetail() : "active; previous one rotating");
	if (rc != 0) {
		failed_step = "activate";
		goto fail;
	}
	res->status = CMK_ST_ACTIVE;
	goto out;

fail:
	snprintf(detail, sizeof(detail), "%s: %s", failed_step, cmk_errdetail());
	fail.error = detail;
	{
		struct cmk_lc_note note = { fail.new_id != 0 ? CMK_AUDIT_ACTIVATE : CMK_AUDIT_RENEW, "failure",
					    failed_step, detail, fail.new_id != 0 ? &rec : old, NULL, NULL, false, NULL };

		if (cmk_lc_with_txn(ctx, record_failure, &fail, &note) != 0)
			cmk_log(CMK_LOG_ERROR, "renew: recording the failure of %s %s: %s", old->tenant, old->type,
				cmk_errdetail());
		else if (fail.new_id != 0)
			res->status = CMK_ST_FAILED;
	}
	res->renew_at = fail.next;
	cmk_fail(rc, "%s", detail + strlen(failed_step) + 2);
out:
	cmk_keystore_record_clear(&ks);
	cmk_cert_record_clear(&rec);
	cmk_cert_info_clear(&old_info);
	cmk_cert_info_clear(&info);
	cmk_bao_cert_clear(&cert);
	cmk_lc_key_done(ctx, &key);
	cmk_lc_plan_clear(&plan);
	return rc;
}

int cmk_renew(struct cmk_ctx *ctx, const char *tenant, const char *type, struct cmk_op_result *res,
	      cmk_step_fn step, void *arg)
{
	const struct cmk_template *tpl;
	struct cmk_cert_record old = { 0 };
	struct cmk_lc_lock *lock = NULL;
	int rc;

	memset(res, 0, sizeof(*res));
	if ((rc = cmk_check_tenant("tenant_id", tenant)) != 0 || (rc = cmk_check_type("type", type)) != 0)
		return rc;
	if ((tpl = cmk_config_template(ctx->cfg, type)) != NULL)
		type = tpl->type;
	if ((rc = cmk_lc_lock(ctx, tenant, type, false, &lock)) != 0)
		return rc;
	rc = cmk_store_cert_find(ctx->store, NULL, tenant, type, CMK_ST_ACTIVE, &old);
	if (rc == CMK_ERR_NOTFOUND)
		rc = cmk_fail(CMK_ERR_NOTFOUND, "tenant %s has no active %s certificate to renew", tenant, type);
	if (rc == 0)
		rc = renew_locked(ctx, &old, res, step, arg);
	cmk_cert_record_clear(&old);
	cmk_lc_unlock(lock);
	return rc;
}

/* ---- the scheduler pass ---------------------------------------------- */

struct due {
	uint64_t *ids;
	size_t n, cap, max;
};

static int collect(const struct cmk_cert_record *rec, void *arg)
{
	struct due *d = arg;

	if (d->max != 0 && d->n >= d->max)
		return 1;          /* enough for this pass */
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 32;
		uint64_t *n = realloc(d->ids, cap * sizeof(*n));
		if (n == NULL)
			return CMK_ERR_NOMEM;
		d->ids = n;
		d->cap = cap;
	}
	d->ids[d->n++] = rec->id;
	return 0;
}

struct one_arg {
	uint64_t id;
	enum cmk_status from, to;
	int64_t now;
	bool done;
	struct cmk_cert_record rec;      /* as the transaction left it, for the audit line */
	struct cmk_lc_note *note;
};

/* Expire or clean up one record if it is still in `from` and its time has come. */
static int age_one(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct one_arg *a = arg;
	int rc;

	cmk_cert_record_clear(&a->rec);
	if ((rc = cmk_store_cert_get(ctx->store, txn, a->id, &a->rec)) != 0)
		return rc;
	a->done = false;
	a->note->skip = a->rec.status != a->from;
	if (a->rec.status == a->from) {
		rc = cmk_lc_transition(txn, &a->rec, a->to, a->to == CMK_ST_EXPIRED ? "reached not_after unrenewed"
										  : NULL);
		a->done = rc == 0;
	}
	return rc;
}

static int age(struct cmk_ctx *ctx, uint64_t id, enum cmk_status from, enum cmk_status to, const char *event,
	       bool *done)
{
	struct cmk_lc_note note = { event, "success", "scheduler",
				    to == CMK_ST_EXPIRED ? "certificate expired before it could be renewed; no longer served"
							 : "grace period over; sealed key destroyed", NULL, NULL, NULL, false, NULL };
	struct one_arg a = { id, from, to, cmk_now(), false, { 0 }, &note };
	int rc;

	note.rec = &a.rec;
	rc = cmk_lc_with_txn(ctx, age_one, &a, &note);
	*done = rc == 0 && a.done;
	cmk_cert_record_clear(&a.rec);
	return rc;
}

void cmk_run_one(struct cmk_ctx *ctx, uint64_t id, int64_t now, struct cmk_pass_stats *st)
{
	struct cmk_cert_record rec = { 0 };
	struct cmk_lc_lock *lock = NULL;
	struct cmk_op_result res = { 0 };
	bool done = false;
	int rc;

	if (cmk_store_cert_get(ctx->store, NULL, id, &rec) != 0)
		return;
	if (cmk_lc_lock(ctx, rec.tenant, rec.type, false, &lock) != 0) {
		st->busy++;
		goto out;
	}
	if (rec.not_after <= now) {
		if (age(ctx, id, CMK_ST_ACTIVE, CMK_ST_EXPIRED, CMK_AUDIT_EXPIRE, &done) == 0 && done)
			st->expired++;
		goto out;
	}
	/* Re-read under the lock: another process may have renewed it meanwhile. */
	cmk_cert_record_clear(&rec);
	if (cmk_store_cert_get(ctx->store, NULL, id, &rec) != 0 || rec.status != CMK_ST_ACTIVE ||
	    rec.renew_at == 0 || rec.renew_at > now)
		goto out;
	rc = renew_locked(ctx, &rec, &res, NULL, NULL);
	if (rc == 0) {
		st->renewed++;
	} else {
		st->failed++;
		cmk_log(CMK_LOG_WARN, "renew %s %s: %s", rec.tenant, rec.type, cmk_errdetail());
	}
out:
	cmk_op_result_clear(&res);
	cmk_cert_record_clear(&rec);
	cmk_lc_unlock(lock);
}

void cmk_cleanup_due(struct cmk_ctx *ctx, int64_t now, struct cmk_pass_stats *st)
{
	/*
	 * Rotating certificates stay readable for the grace period; failed and
	 * expired ones keep their key as long, for a person to look at.  After
	 * it, each key is destroyed (and shredded below).
	 */
	static const enum cmk_status aging[] = { CMK_ST_ROTATING, CMK_ST_FAILED, CMK_ST_EXPIRED };

	for (size_t s = 0; s < sizeof(aging) / sizeof(aging[0]); s++) {
		struct cmk_cert_filter f = { .status = (int)aging[s] };
		struct due d = { 0 };

		if (cmk_store_cert_each(ctx->store, NULL, &f, collect, &d) < 0) {
			free(d.ids);
			continue;
		}
		for (size_t i = 0; i < d.n; i++) {
			struct cmk_cert_record rec = { 0 };
			bool done = false;

			if (cmk_store_cert_get(ctx->store, NULL, d.ids[i], &rec) != 0)
				continue;
			/* updated_at is when it entered its state. */
			if (rec.updated_at + ctx->cfg->renewal.grace_period <= now && rec.sealed_key != NULL &&
			    age(ctx, rec.id, aging[s], CMK_ST_CLEANED_UP, CMK_AUDIT_DELETE, &done) == 0 && done)
				st->cleaned++;
			cmk_cert_record_clear(&rec);
		}
		free(d.ids);
	}
	cmk_lc_shred(ctx);
}

int cmk_due_ids(struct cmk_ctx *ctx, int64_t now, size_t max, uint64_t **ids, size_t *n)
{
	struct due d = { .max = max };
	int rc = cmk_store_cert_due(ctx->store, NULL, now, collect, &d);

	if (rc < 0) {
		free(d.ids);
		return rc;
	}
	*ids = d.ids;
	*n = d.n;
	return 0;
}

int cmk_run_due(struct cmk_ctx *ctx, int64_t now, unsigned max_ops, struct cmk_pass_stats *stats)
{
	uint64_t *ids = NULL;
	size_t n = 0;
	int rc;

	memset(stats, 0, sizeof(*stats));
	if ((rc = cmk_due_ids(ctx, now, max_ops, &ids, &n)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		cmk_run_one(ctx, ids[i], now, stats);
	cmk_cleanup_due(ctx, now, stats);
	free(ids);
	return 0;
}
