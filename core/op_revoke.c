/*
 * op_revoke.c - story 4: revoke on disconnect or compromise, with proof.
 *
 * For every live certificate of a (tenant, type): revoke it in OpenBao (by
 * serial; by PEM when the role did not store it), fetch the CRL and confirm
 * the serial is on it under the issuing CA's signature (REQ-011), then mark
 * the record revoked and destroy its sealed key in one transaction.  The
 * revocation in OpenBao is idempotent, so an interrupted run is simply
 * repeated; until it completes the record keeps its previous state.
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

static const char *reason_name(enum cmk_revoke_reason r)
{
	switch (r) {
	case CMK_REVOKE_COMPROMISE: return "keyCompromise";
	case CMK_REVOKE_SUPERSEDED: return "superseded";
	case CMK_REVOKE_CESSATION: return "cessationOfOperation";
	default: return "unspecified";
	}
}

int cmk_revoke_reason_parse(const char *s)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "compromise") == 0 || strcmp(s, "keyCompromise") == 0)
		return CMK_REVOKE_COMPROMISE;
	if (strcmp(s, "superseded") == 0)
		return CMK_REVOKE_SUPERSEDED;
	if (strcmp(s, "cessation") == 0 || strcmp(s, "cessationOfOperation") == 0)
		return CMK_REVOKE_CESSATION;
	if (strcmp(s, "unspecified") == 0)
		return CMK_REVOKE_UNSPECIFIED;
	return -1;
}

struct ids {
	uint64_t *v;
	size_t n, cap;
};

static int collect_live(const struct cmk_cert_record *rec, void *arg)
{
	struct ids *ids = arg;

	/* Everything OpenBao issued that is not revoked yet, whatever our state, must be revoked. */
	if (rec->status == CMK_ST_REVOKED || rec->status == CMK_ST_CLEANED_UP)
		return 0;
	if (ids->n == ids->cap) {
		size_t cap = ids->cap ? ids->cap * 2 : 8;
		uint64_t *n = realloc(ids->v, cap * sizeof(*n));
		if (n == NULL)
			return CMK_ERR_NOMEM;
		ids->v = n;
		ids->cap = cap;
	}
	ids->v[ids->n++] = rec->id;
	return 0;
}

struct mark_arg {
	uint64_t id;
	enum cmk_status to;
	const char *note;
};

/*
 * Record the intent before OpenBao is asked: from here on the certificate
 * is no longer served, and a crash before the revocation is confirmed is
 * finished by the next run (cmk_recover) instead of being forgotten.
 */
static int mark_revoking(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	uint64_t *id = arg;
	struct cmk_cert_record rec = { 0 };
	int rc;

	if ((rc = cmk_store_cert_get(ctx->store, txn, *id, &rec)) != 0)
		return rc;
	if (!(rec.flags & CMK_CERT_F_REVOKING)) {
		rec.flags |= CMK_CERT_F_REVOKING;
		rec.updated_at = cmk_now();
		rc = cmk_store_cert_put(txn, &rec);
	}
	cmk_cert_record_clear(&rec);
	return rc;
}

/*
 * All of them in one transaction, before the first is revoked: a crash after
 * revoking some must not leave the others live with no trace of the intent.
 */
static int mark_all_revoking(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct ids *ids = arg;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < ids->n; i++)
		rc = mark_revoking(ctx, txn, &ids->v[i]);
	return rc;
}

static int mark(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct mark_arg *a = arg;
	struct cmk_cert_record rec = { 0 };
	int rc;

	if ((rc = cmk_store_cert_get(ctx->store, txn, a->id, &rec)) != 0)
		return rc;
	if (rec.status == a->to) {
		cmk_cert_record_clear(&rec);
		return 0;
	}
	/* An expired certificate that OpenBao will not put on its CRL is still cleaned up here. */
	if (a->to == CMK_ST_CLEANED_UP && rec.status == CMK_ST_ACTIVE)
		rc = cmk_lc_transition(txn, &rec, CMK_ST_EXPIRED, a->note);
	else if (a->to == CMK_ST_CLEANED_UP && rec.status == CMK_ST_PENDING)
		rc = cmk_lc_transition(txn, &rec, CMK_ST_FAILED, a->note);
	if (rc == 0)
		rc = cmk_lc_transition(txn, &rec, a->to, a->note);
	cmk_cert_record_clear(&rec);
	return rc;
}

/* Revoke one record in OpenBao and prove it is on the CRL. */
static int revoke_one(struct cmk_ctx *ctx, const struct cmk_cert_record *rec, struct cmk_bao_revocation *rv)
{
	struct cmk_bao *bao;
	const char *mount = ctx->cfg->openbao.pki_mount;
	char *crl = NULL;
	int rc;

	if ((rc = cmk_ctx_bao(ctx, &bao)) != 0 || (rc = cmk_lc_ensure_token(ctx, bao)) != 0)
		return rc;
	rc = cmk_bao_revoke(bao, mount, rec->serial, NULL, rv);
	if (rc == CMK_ERR_REJECTED && strstr(cmk_errdetail(), "not found") != NULL) {
		/* A no_store role kept no copy: OpenBao can only revoke it from the certificate itself. */
		cmk_bao_revocation_clear(rv);
		rc = cmk_bao_revoke(bao, mount, NULL, rec->cert_pem, rv);
	}
	if (rc != 0)
		return rc;
	if (!rv->revoked)
		return cmk_fail(CMK_ERR_STATE, "OpenBao did not revoke %s: %s", rec->serial,
				rv->warnings.count ? rv->warnings.items[0] : "no revocation in the answer");
	if ((rc = cmk_bao_read_crl(bao, mount, &crl)) != 0)
		return rc;
	rc = cmk_crl_lists(crl, rec->cert_pem, rec->chain_pem, NULL);
	if (rc != 0)
		cmk_fail(rc, "serial %s is not on %s's CRL: %s", rec->serial, mount, cmk_errdetail());
	free(crl);
	return rc;
}

static int revoke_locked(struct cmk_ctx *ctx, const char *tenant, const char *type, enum cmk_revoke_reason reason,
			 struct cmk_op_result *res, cmk_step_fn step, void *arg)
{
	struct cmk_cert_filter f = { .tenant = tenant, .type = type, .status = -1 };
	struct ids ids = { 0 };
	char detail[600];
	int rc, first = 0;

	if ((rc = cmk_store_cert_each(ctx->store, NULL, &f, collect_live, &ids)) < 0)
		goto out;
	if (ids.n == 0) {
		rc = cmk_fail(CMK_ERR_NOTFOUND, "tenant %s has no %s certificate to revoke", tenant, type);
		goto out;
	}
	if ((rc = cmk_lc_with_txn(ctx, mark_all_revoking, &ids, NULL)) != 0)
		goto out;
	for (size_t i = 0; i < ids.n; i++) {
		struct cmk_bao_revocation rv = { 0 };
		struct cmk_cert_record rec = { 0 };
		int64_t t0 = cmk_monotonic_ms();
		struct mark_arg m = { ids.v[i], CMK_ST_REVOKED, NULL };

		if ((rc = cmk_store_cert_get(ctx->store, NULL, ids.v[i], &rec)) != 0)
			break;
		rc = revoke_one(ctx, &rec, &rv);
		if (rc == CMK_ERR_STATE) {
			/* Not revoked (already expired): say so, and still destroy our copy of the key. */
			struct cmk_lc_note note = { CMK_AUDIT_REVOKE, "not_revoked", "revoke", detail, &rec, NULL, NULL,
						    false, NULL };

			snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
			m.to = CMK_ST_CLEANED_UP;
			m.note = detail;
			cmk_lc_with_txn(ctx, mark, &m, &note);
			cmk_fail(CMK_ERR_STATE, "%s", detail);
		} else if (rc == 0) {
			struct cmk_lc_note note = { CMK_AUDIT_REVOKE, "success", "revoke", detail, &rec, NULL, NULL, false, NULL };

			snprintf(detail, sizeof(detail), "reason %s; on the CRL", reason_name(reason));
			m.note = detail;
			rc = cmk_lc_with_txn(ctx, mark, &m, &note);
		} else {
			snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
			cmk_lc_audit(ctx, CMK_AUDIT_REVOKE, "failure", "revoke", &rec, detail);
			cmk_fail(rc, "%s", detail);
		}
		cmk_lc_report(step, arg, "revoke", rc, t0, rc ? cmk_errdetail() : rec.serial);
		res->id = rec.id;
		res->status = rc == 0 ? CMK_ST_REVOKED : rc == CMK_ERR_STATE ? CMK_ST_CLEANED_UP : rec.status;
		snprintf(res->serial, sizeof(res->serial), "%s", rec.serial);
		memcpy(res->fingerprint, rec.fingerprint, sizeof(res->fingerprint));
		snprintf(res->type, sizeof(res->type), "%s", rec.type);
		res->not_after = rec.not_after;
		cmk_bao_revocation_clear(&rv);
		cmk_cert_record_clear(&rec);
		if (rc != 0 && first == 0) {
			first = rc;
			snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
		}
	}
	rc = first;
	if (rc != 0)
		cmk_fail(rc, "%s", detail);
out:
	free(ids.v);
	return rc;
}

int cmk_lc_finish_revocations(struct cmk_ctx *ctx, unsigned *n_done)
{
	struct ids ids = { 0 };
	int rc;

	*n_done = 0;
	/* Through the index of pending revocations: a start-up with none reads no record. */
	if ((rc = cmk_store_cert_revoking(ctx->store, NULL, collect_live, &ids)) < 0)
		goto out;
	rc = 0;
	for (size_t i = 0; i < ids.n; i++) {
		struct cmk_cert_record rec = { 0 };
		struct cmk_lc_lock *lock = NULL;
		struct cmk_op_result res = { 0 };

		if (cmk_store_cert_get(ctx->store, NULL, ids.v[i], &rec) != 0)
			continue;
		/* Held: the revocation is still running elsewhere. */
		if (cmk_lc_lock(ctx, rec.tenant, rec.type, false, &lock) == 0) {
			int r = revoke_locked(ctx, rec.tenant, rec.type, CMK_REVOKE_UNSPECIFIED, &res, NULL, NULL);
			if (r == 0 || r == CMK_ERR_STATE || r == CMK_ERR_NOTFOUND)
				(*n_done)++;
			else if (rc == 0)
				rc = r;
			cmk_lc_unlock(lock);
		}
		cmk_op_result_clear(&res);
		cmk_cert_record_clear(&rec);
	}
out:
	free(ids.v);
	return rc;
}

static int canonical(struct cmk_ctx *ctx, const char *tenant, const char **type)
{
	const struct cmk_template *tpl;
	int rc;

	if ((rc = cmk_check_tenant("tenant_id", tenant)) != 0 || (rc = cmk_check_type("type", *type)) != 0)
		return rc;
	if ((tpl = cmk_config_template(ctx->cfg, *type)) != NULL)
		*type = tpl->type;
	return 0;
}

int cmk_revoke(struct cmk_ctx *ctx, const char *tenant, const char *type, enum cmk_revoke_reason reason,
	       struct cmk_op_result *res, cmk_step_fn step, void *arg)
{
	struct cmk_lc_lock *lock = NULL;
	int rc;

	memset(res, 0, sizeof(*res));
	if ((rc = canonical(ctx, tenant, &type)) != 0)
		return rc;
	/* Revocation waits for a running renewal of the same keystore, then revokes its result too. */
	if ((rc = cmk_lc_lock(ctx, tenant, type, true, &lock)) != 0)
		return rc;
	rc = revoke_locked(ctx, tenant, type, reason, res, step, arg);
	cmk_lc_unlock(lock);
	cmk_lc_shred(ctx);
	return rc;
}

static int forget_keystore(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	const struct cmk_keystore_record *ks = arg;
	int rc = cmk_store_keystore_del(txn, ks->tenant, ks->type);

	(void)ctx;
	return rc == CMK_ERR_NOTFOUND ? 0 : rc;
}

int cmk_keystore_remove(struct cmk_ctx *ctx, const char *tenant, const char *type, struct cmk_op_result *res,
			cmk_step_fn step, void *arg)
{
	struct cmk_keystore_record ks = { 0 };
	struct cmk_lc_lock *lock = NULL;
	int64_t t0;
	int rc;

	memset(res, 0, sizeof(*res));
	if ((rc = canonical(ctx, tenant, &type)) != 0)
		return rc;
	if ((rc = cmk_lc_lock(ctx, tenant, type, true, &lock)) != 0)
		return rc;
	rc = revoke_locked(ctx, tenant, type, CMK_REVOKE_CESSATION, res, step, arg);
	if (rc == CMK_ERR_NOTFOUND)
		rc = 0;           /* nothing left to revoke: still forget the keystore */
	if (rc == 0 || rc == CMK_ERR_STATE) {
		int rc2;

		t0 = cmk_monotonic_ms();
		snprintf(ks.tenant, sizeof(ks.tenant), "%s", tenant);
		snprintf(ks.type, sizeof(ks.type), "%s", type);
		{
			struct cmk_lc_note note = { CMK_AUDIT_DELETE, "success", "keystore_remove", NULL, NULL, tenant,
						    type, false, NULL };
			rc2 = cmk_lc_with_txn(ctx, forget_keystore, &ks, &note);
		}
		cmk_lc_report(step, arg, "forget", rc2, t0, rc2 ? cmk_errdetail() : "keystore connection removed");
		if (rc == 0)
			rc = rc2;
	}
	cmk_lc_unlock(lock);
	cmk_lc_shred(ctx);
	return rc;
}
