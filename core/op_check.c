/*
 * op_check.c - story 1: can this host reach OpenBao, authenticate, and
 * issue every template's certificates?  Each step is timed and reported.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

static int check_role(struct cmk_ctx *ctx, struct cmk_bao *bao, const struct cmk_template *tpl, char *detail,
		      size_t len)
{
	const char *role = cmk_config_role(ctx->cfg, tpl);
	const char *want = cmk_key_type_name(tpl->key_type);
	struct cmk_bao_role r = { 0 };
	int rc;

	if ((rc = cmk_bao_read_role(bao, ctx->cfg->openbao.pki_mount, role, &r)) != 0) {
		snprintf(detail, len, "role %s: %s", role, cmk_errdetail());
		return rc;
	}
	if (strcmp(r.key_type, "any") != 0 && strcmp(r.key_type, want) != 0) {
		snprintf(detail, len, "role %s allows key_type %s, template %s needs %s", role, r.key_type, tpl->type,
			 want);
		rc = CMK_ERR_REJECTED;
	} else if (ctx->cfg->openbao.mode == CMK_MODE_ISSUE && strcmp(r.key_type, "any") != 0 &&
		   r.key_bits != 0 && r.key_bits != tpl->key_bits) {
		snprintf(detail, len, "role %s issues %d-bit keys, template %s needs %d", role, r.key_bits, tpl->type,
			 tpl->key_bits);
		rc = CMK_ERR_REJECTED;
	} else if (!r.client_flag) {
		snprintf(detail, len, "role %s does not issue client certificates (client_flag false)", role);
		rc = CMK_ERR_REJECTED;
	} else if (r.max_ttl > 0 && r.max_ttl < tpl->ttl) {
		char a[32], b[32];
		cmk_format_duration(tpl->ttl, a, sizeof(a));
		cmk_format_duration(r.max_ttl, b, sizeof(b));
		snprintf(detail, len, "role %s: template %s ttl %s exceeds max_ttl %s (would be truncated)", role,
			 tpl->type, a, b);
		cmk_log(CMK_LOG_WARN, "check: %s", detail);
	} else {
		snprintf(detail, len, "role %s: key_type %s, client certificates%s", role, r.key_type,
			 r.no_store ? ", no_store" : "");
	}
	cmk_bao_role_clear(&r);
	return rc;
}

int cmk_check(struct cmk_ctx *ctx, bool login, cmk_step_fn step, void *arg)
{
	struct cmk_bao_health h = { 0 };
	struct cmk_bao_token_info ti = { 0 };
	struct cmk_bao_stats before, after;
	struct cmk_bao *bao;
	char detail[512], *chain = NULL;
	int64_t t0 = cmk_monotonic_ms();
	int rc, first = 0;

	if ((rc = cmk_ctx_bao(ctx, &bao)) != 0) {
		cmk_lc_report(step, arg, "client", rc, t0, cmk_errdetail());
		return rc;
	}

	t0 = cmk_monotonic_ms();
	rc = cmk_bao_health(bao, &h);
	if (rc == 0 && (!h.initialized || h.sealed)) {
		rc = cmk_fail(CMK_ERR_SEALED, "OpenBao at %s is %s", ctx->cfg->openbao.address,
			      h.initialized ? "sealed" : "not initialized");
	}
	if (rc == 0)
		snprintf(detail, sizeof(detail), "%s: OpenBao %s, %s", ctx->cfg->openbao.address, h.version,
			 h.standby ? "standby" : "active");
	else
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
	cmk_lc_report(step, arg, "reach", rc, t0, detail);
	if (rc != 0)
		return rc;

	t0 = cmk_monotonic_ms();
	cmk_bao_get_stats(bao, &before);
	rc = login ? cmk_bao_login(bao) : cmk_lc_ensure_token(ctx, bao);
	if (rc == 0)
		rc = cmk_bao_token_lookup(bao, &ti);
	cmk_bao_get_stats(bao, &after);
	if (rc == 0) {
		char ttl[32];
		cmk_format_duration(ti.ttl, ttl, sizeof(ttl));
		/* lookup-self proves the token works either way; say whether it took a login. */
		snprintf(detail, sizeof(detail), "%s %s, token ttl %s%s, policies %s",
			 cmk_auth_method_name(ctx->cfg->auth.method),
			 after.logins > before.logins || ctx->cfg->auth.method == CMK_AUTH_TOKEN
				 ? "login ok" : "token shared by this store's runs ok",
			 ti.ttl ? ttl : "none", ti.renewable ? " renewable" : "", ti.policies);
	} else {
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
	}
	cmk_lc_report(step, arg, "authenticate", rc, t0, detail);
	if (rc != 0)
		return rc;

	t0 = cmk_monotonic_ms();
	rc = cmk_bao_check_mount(bao, ctx->cfg->openbao.pki_mount, &chain);
	if (rc == 0)
		snprintf(detail, sizeof(detail), "%s: CA chain of %d certificate(s)", ctx->cfg->openbao.pki_mount,
			 cmk_pem_cert_count(chain));
	else
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
	free(chain);
	cmk_lc_report(step, arg, "pki-mount", rc, t0, detail);
	if (rc != 0)
		return rc;

	for (size_t i = 0; i < ctx->cfg->n_templates; i++) {
		const struct cmk_template *tpl = &ctx->cfg->templates[i];
		char name[64];
		int r;

		t0 = cmk_monotonic_ms();
		r = check_role(ctx, bao, tpl, detail, sizeof(detail));
		snprintf(name, sizeof(name), "role:%s", tpl->type);
		cmk_lc_report(step, arg, name, r, t0, detail);
		if (r != 0 && first == 0)
			first = r;
	}
	return first;
}

