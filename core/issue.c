/*
 * issue.c - obtaining a certificate from OpenBao for a plan (names, key
 * type, ttl) and checking what came back; shared by keystore add and
 * renewal.  In sign mode the key is generated here and only the CSR leaves
 * the host; in issue mode OpenBao makes the key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

void cmk_lc_plan_clear(struct cmk_lc_plan *p)
{
	free(p->cn);
	for (size_t i = 0; i < p->n_sans; i++)
		free(p->sans[i]);
	free(p->sans);
	free(p->alt_csv);
	free(p->subject);
	memset(p, 0, sizeof(*p));
}

static int plan_set(struct cmk_lc_plan *p, char *cn, char **sans, size_t n)
{
	size_t csv_len = 1;

	p->cn = cn;
	p->sans = sans;
	p->n_sans = n;
	for (size_t i = 0; i < n; i++)
		csv_len += strlen(sans[i]) + 1;
	if ((p->alt_csv = calloc(1, csv_len)) == NULL)
		return CMK_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			strcat(p->alt_csv, ",");
		strcat(p->alt_csv, sans[i]);
	}
	return 0;
}

int cmk_lc_plan_names(struct cmk_lc_plan *p, const char *tenant)
{
	char *cn = cmk_template_expand(p->tpl->common_name, tenant);
	char **sans = calloc(p->tpl->n_alt_names + 1, sizeof(char *));
	size_t n = 0;

	if (cn == NULL || sans == NULL)
		goto nomem;
	for (; n < p->tpl->n_alt_names; n++)
		if ((sans[n] = cmk_template_expand(p->tpl->alt_names[n], tenant)) == NULL)
			goto nomem;
	return plan_set(p, cn, sans, n);
nomem:
	free(cn);
	for (size_t i = 0; i < n; i++)
		free(sans[i]);
	free(sans);
	return CMK_ERR_NOMEM;
}

int cmk_lc_plan_from_cert(struct cmk_lc_plan *p, const struct cmk_cert_info *old)
{
	const char *c = strstr(old->subject, "CN=");
	char *cn, **sans;
	size_t n = 0, len;

	/* Keystores grant trust to the subject: a renewal asks for exactly the same CN and names. */
	if (c == NULL)
		return cmk_fail(CMK_ERR_VERIFY, "certificate subject \"%s\" has no CN", old->subject);
	c += 3;
	len = strcspn(c, ",");
	if ((cn = strndup(c, len)) == NULL || (sans = calloc(old->n_dns_names + 1, sizeof(char *))) == NULL) {
		free(cn);
		return CMK_ERR_NOMEM;
	}
	for (size_t i = 0; i < old->n_dns_names; i++) {
		if (strcmp(old->dns_names[i], cn) == 0)
			continue;
		if ((sans[n] = strdup(old->dns_names[i])) == NULL) {
			plan_set(p, cn, sans, n);
			return CMK_ERR_NOMEM;
		}
		n++;
	}
	if ((p->subject = strdup(old->subject)) == NULL) {
		plan_set(p, cn, sans, n);
		return CMK_ERR_NOMEM;
	}
	return plan_set(p, cn, sans, n);
}

const char *cmk_lc_key_origin(const struct cmk_lc_key *k)
{
	switch (k->origin) {
	case CMK_ORIGIN_POOL: return "pool";
	case CMK_ORIGIN_INLINE: return "inline";
	case CMK_ORIGIN_OPENBAO: return "openbao";
	case CMK_ORIGIN_NONE: break;
	}
	return NULL;
}

void cmk_lc_key_done(struct cmk_ctx *ctx, struct cmk_lc_key *k)
{
	if (k->claim.id != 0) {
		/* A certificate may exist for a key whose request was sent and not refused: never hand it out again. */
		bool reusable = !k->sent || k->refused;

		cmk_log(CMK_LOG_DEBUG, "key pool %s: entry %llu not used; %s", k->claim.pool,
			(unsigned long long)k->claim.id, reusable ? "returned" : "discarded");
		if (cmk_pool_release(ctx->store, &k->claim, reusable) == 0 && !reusable)
			cmk_lc_shred(ctx);
	}
	cmk_key_free(k->key);
	memset(k, 0, sizeof(*k));
}

/* OpenBao answered and refused, or the request was refused before it was sent: nothing was issued. */
static bool is_refusal(int rc)
{
	return rc == CMK_ERR_REJECTED || rc == CMK_ERR_DENIED || rc == CMK_ERR_NOTFOUND || rc == CMK_ERR_RATELIMIT ||
	       rc == CMK_ERR_SEALED || rc == CMK_ERR_INVALID;
}

/* The key for a CSR: one from the pool when the pool has one, else a new one. */
static int sign_key(struct cmk_ctx *ctx, const struct cmk_template *tpl, struct cmk_lc_key *k)
{
	int rc;

	if (cmk_pool_target(ctx->cfg, tpl->key_type, tpl->key_bits) > 0) {
		rc = cmk_pool_claim(ctx->store, ctx->sealer, tpl->key_type, tpl->key_bits, &k->claim, &k->key);
		if (rc == 0) {
			k->origin = CMK_ORIGIN_POOL;
			return 0;
		}
		/* The pool is a shortcut: whatever is wrong with it, the operation goes on the slow way. */
		if (rc != CMK_ERR_NOTFOUND)
			cmk_log(CMK_LOG_WARN, "key pool: %s; generating the key now", cmk_errdetail());
		else
			cmk_log(CMK_LOG_INFO, "%s; generating the key now", cmk_errdetail());
	}
	if ((rc = cmk_key_generate(tpl->key_type, tpl->key_bits, &k->key)) == 0)
		k->origin = CMK_ORIGIN_INLINE;
	return rc;
}

int cmk_lc_obtain(struct cmk_ctx *ctx, const struct cmk_lc_plan *p, struct cmk_bao_cert *cert, struct cmk_lc_key *k)
{
	struct cmk_bao_cert_request r = { 0 };
	struct cmk_bao *bao;
	char *csr = NULL;
	int rc;

	if ((rc = cmk_ctx_bao(ctx, &bao)) != 0 || (rc = cmk_lc_ensure_token(ctx, bao)) != 0)
		return rc;
	r.mount = ctx->cfg->openbao.pki_mount;
	r.role = cmk_config_role(ctx->cfg, p->tpl);
	r.ttl = p->tpl->ttl;
	if (ctx->cfg->openbao.mode == CMK_MODE_SIGN) {
		if ((rc = sign_key(ctx, p->tpl, k)) != 0 ||
		    (rc = cmk_csr_create(k->key, p->cn, (const char *const *)p->sans, p->n_sans, &csr)) != 0)
			goto out;
		r.csr = csr;
		k->sent = true;
		rc = cmk_bao_sign(bao, &r, cert);
		k->refused = is_refusal(rc);
	} else {
		r.common_name = p->cn;
		r.alt_names = p->alt_csv;
		r.key_type = cmk_key_type_name(p->tpl->key_type);
		r.key_bits = p->tpl->key_bits;
		rc = cmk_bao_issue(bao, &r, cert);
		if (rc == 0 && cert->private_key == NULL)
			rc = cmk_fail(CMK_ERR_PROTOCOL, "issue answer has no private_key");
		if (rc == 0 && (rc = cmk_key_parse_pem(cert->private_key, strlen(cert->private_key), &k->key)) == 0)
			k->origin = CMK_ORIGIN_OPENBAO;
	}
out:
	free(csr);
	return rc;
}

/*
 * The CA chain of an answer: verified up to its root the first time the
 * store sees it, after that only the leaf's signature by the issuing CA
 * (the rest of the same bytes verified the same way before).
 */
static int check_chain(struct cmk_ctx *ctx, const struct cmk_bao_cert *cert)
{
	uint8_t hash[32];
	int rc;

	cmk_sha256(cert->ca_chain, strlen(cert->ca_chain), hash);
	if (cmk_store_chain_known(ctx->store, hash))
		return cmk_cert_verify_issued_by(cert->certificate, cert->ca_chain);
	if ((rc = cmk_cert_verify_chain(cert->certificate, cert->ca_chain)) == 0 &&
	    cmk_store_chain_note(ctx->store, hash) != 0)
		cmk_log(CMK_LOG_DEBUG, "check: noting the verified CA chain: %s", cmk_errdetail());
	return rc;
}

int cmk_lc_check_issued(struct cmk_ctx *ctx, const struct cmk_lc_plan *p, const struct cmk_bao_cert *cert,
			const struct cmk_lc_key *k, struct cmk_cert_info *info)
{
	char want[CMK_HOST_MAX + 8];
	int rc;

	if ((rc = cmk_cert_parse(cert->certificate, info)) != 0)
		return rc;
	snprintf(want, sizeof(want), "CN=%s", p->cn);
	if (strstr(info->subject, want) == NULL)
		return cmk_fail(CMK_ERR_VERIFY, "issued certificate subject \"%s\" lacks %s", info->subject, want);
	if (p->subject != NULL && strcmp(p->subject, info->subject) != 0)
		return cmk_fail(CMK_ERR_VERIFY, "renewed certificate subject \"%s\" differs from \"%s\" (keystores "
				"trust the subject; check the PKI role's subject fields)", info->subject, p->subject);
	for (size_t i = 0; i < p->n_sans; i++) {
		bool found = false;
		for (size_t j = 0; j < info->n_dns_names; j++)
			found = found || strcmp(info->dns_names[j], p->sans[i]) == 0;
		if (!found)
			return cmk_fail(CMK_ERR_VERIFY, "issued certificate lacks the alt name %s", p->sans[i]);
	}
	if (strcmp(info->serial, cert->serial_number) != 0)
		return cmk_fail(CMK_ERR_VERIFY, "serial in the answer (%s) differs from the certificate's (%s)",
				cert->serial_number, info->serial);
	if (info->key_type != p->tpl->key_type || info->key_bits != p->tpl->key_bits)
		return cmk_fail(CMK_ERR_VERIFY, "issued key is %s-%d, template %s wants %s-%d",
				cmk_key_type_name(info->key_type), info->key_bits, p->tpl->type,
				cmk_key_type_name(p->tpl->key_type), p->tpl->key_bits);
	if (!info->client_auth)
		return cmk_fail(CMK_ERR_VERIFY, "issued certificate is not valid for TLS client authentication");
	/* A key made here is whole by construction; one from OpenBao is checked as a pair. */
	rc = k->origin == CMK_ORIGIN_OPENBAO ? cmk_cert_matches_key(cert->certificate, k->key)
					     : cmk_cert_has_public_key(cert->certificate, k->key);
	if (rc != 0)
		return cmk_fail(rc, "issued certificate does not match the private key");
	return check_chain(ctx, cert);
}

int cmk_lc_fill_record(const char *tenant, const struct cmk_lc_plan *p, const struct cmk_bao_cert *cert,
		       const struct cmk_cert_info *info, struct cmk_cert_record *rec)
{
	snprintf(rec->tenant, sizeof(rec->tenant), "%s", tenant);
	snprintf(rec->type, sizeof(rec->type), "%s", p->tpl->type);
	rec->status = CMK_ST_PENDING;
	snprintf(rec->serial, sizeof(rec->serial), "%s", cert->serial_number);
	memcpy(rec->fingerprint, info->fingerprint, sizeof(rec->fingerprint));
	rec->not_before = info->not_before;
	rec->not_after = info->not_after;
	rec->created_at = rec->updated_at = cmk_now();
	if (cert->private_key != NULL)
		rec->flags |= CMK_CERT_F_ISSUE_MODE;
	if ((rec->subject = strdup(info->subject)) == NULL || (rec->cert_pem = strdup(cert->certificate)) == NULL ||
	    (rec->chain_pem = strdup(cert->ca_chain)) == NULL)
		return CMK_ERR_NOMEM;
	return 0;
}

int cmk_lc_store_pending(struct cmk_ctx *ctx, struct cmk_txn *txn, struct cmk_cert_record *rec,
			 const struct cmk_lc_key *k)
{
	struct cmk_seal_aad aad;
	char *pem = NULL;
	size_t len = 0;
	int rc;

	if ((rc = cmk_store_cert_next_id(txn, &rec->id)) != 0)
		return rc;
	cmk_freezero(rec->sealed_key, rec->sealed_key_len);
	rec->sealed_key = NULL;
	/* The sealed key is bound to this record's id and serial: it cannot be moved onto another record. */
	aad = (struct cmk_seal_aad){ rec->tenant, rec->type, rec->id, rec->serial };
	if ((rc = cmk_key_write_pem(k->key, &pem, &len)) != 0)
		return rc;
	rc = cmk_seal(ctx->sealer, &aad, (const uint8_t *)pem, len, &rec->sealed_key, &rec->sealed_key_len);
	cmk_freezero(pem, len + 1);
	if (rc != 0 || (rc = cmk_store_cert_put(txn, rec)) != 0)
		return rc;
	/* The key moves from the pool into this record in one step: it is in exactly one of them. */
	rc = cmk_pool_take(txn, &k->claim);
	if (rc == CMK_ERR_NOTFOUND) {
		cmk_log(CMK_LOG_WARN, "%s; the key is still this operation's alone", cmk_errdetail());
		rc = 0;
	}
	return rc;
}

const char *cmk_lc_issue_step_name(const struct cmk_ctx *ctx)
{
	return ctx->cfg->openbao.mode == CMK_MODE_SIGN ? "sign" : "issue";
}

int cmk_lc_issue_step(struct cmk_ctx *ctx, const struct cmk_lc_plan *p, cmk_step_fn step, void *arg,
		      struct cmk_bao_cert *cert, struct cmk_lc_key *k, struct cmk_cert_info *info)
{
	int64_t t0 = cmk_monotonic_ms();
	int rc = cmk_lc_obtain(ctx, p, cert, k);

	if (rc == 0)
		rc = cmk_lc_check_issued(ctx, p, cert, k, info);
	cmk_lc_report(step, arg, cmk_lc_issue_step_name(ctx), rc, t0, rc ? cmk_errdetail() : cert->serial_number);
	return rc;
}
