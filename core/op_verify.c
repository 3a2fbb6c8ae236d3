/*
 * op_verify.c - an integrity check of the store an operator (or a test after
 * a crash) can run at any time: every active certificate's sealed key opens
 * and matches its certificate, the certificate chains to its CA chain, and
 * no (tenant, type) has more than one active certificate.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

struct verify_walk {
	struct cmk_ctx *ctx;
	cmk_step_fn step;
	void *arg;
	struct cmk_verify_stats *st;
};

static int check_record(struct cmk_ctx *ctx, const struct cmk_cert_record *rec)
{
	struct cmk_seal_aad aad = { rec->tenant, rec->type, rec->id, rec->serial };
	struct cmk_key *key = NULL;
	uint8_t *pem = NULL;
	size_t len = 0;
	int rc;

	if (rec->sealed_key == NULL)
		return cmk_fail(CMK_ERR_VERIFY, "active certificate has no sealed key");
	if ((rc = cmk_unseal(ctx->sealer, &aad, rec->sealed_key, rec->sealed_key_len, &pem, &len)) != 0)
		return rc;
	rc = cmk_key_parse_pem((const char *)pem, len, &key);
	cmk_freezero(pem, len + 1);
	if (rc == 0 && (rc = cmk_cert_matches_key(rec->cert_pem, key)) != 0)
		cmk_fail(rc, "the sealed key does not match the certificate");
	cmk_key_free(key);
	/* An active certificate past not_after is the scheduler's to expire, not damage: its chain is not checked. */
	if (rc == 0 && rec->not_after > cmk_now())
		rc = cmk_cert_verify_chain(rec->cert_pem, rec->chain_pem);
	return rc;
}

static int verify_one(const struct cmk_cert_record *rec, void *arg)
{
	struct verify_walk *w = arg;
	char name[96], detail[512];
	int64_t t0 = cmk_monotonic_ms();
	int rc;

	snprintf(name, sizeof(name), "%s-%s", rec->tenant, rec->type);
	w->st->active++;
	rc = check_record(w->ctx, rec);
	snprintf(detail, sizeof(detail), "%s", rc ? cmk_errdetail() : rec->serial);
	if (rc != 0)
		w->st->bad++;
	cmk_lc_report(w->step, w->arg, name, rc, t0, detail);
	return 0;
}

int cmk_verify_store(struct cmk_ctx *ctx, struct cmk_verify_stats *st, cmk_step_fn step, void *arg)
{
	struct cmk_cert_filter f = { .status = CMK_ST_ACTIVE };
	struct verify_walk w = { ctx, step, arg, st };
	int rc;

	memset(st, 0, sizeof(*st));
	if ((rc = cmk_recover(ctx, &st->reset)) != 0)
		return rc;
	if ((rc = cmk_store_cert_each(ctx->store, NULL, &f, verify_one, &w)) < 0)
		return rc;
	if (st->bad != 0)
		return cmk_fail(CMK_ERR_VERIFY, "%u of %u active certificates failed the check", st->bad, st->active);
	return 0;
}
