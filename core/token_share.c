/*
 * token_share.c - one OpenBao token for every process of a store.
 *
 * A run of the CLI lasts a second; a token lasts an hour or more.  Logging
 * in on every run would create a token (and a lease) per run, which is what
 * wears an OpenBao cluster down.  So the token is kept in the store, sealed
 * (seal.h: CMK_SEAL_TOKEN), with the time it was granted and its TTL; every
 * client of the store starts with it, and whoever logs in again or renews
 * it writes the result back.
 *
 * The token is stored under a name that binds it to where it came from:
 * the SHA-256 of the server address, namespace, auth method, mount, role and
 * credential file.  A configuration that points elsewhere finds nothing
 * under its own name and logs in, so a token never goes to a server it was
 * not issued by.  Method "token" has no login to save: its token comes from
 * a file each time, as before.
 *
 * When the token needs work (none yet, or a third of its TTL left), one
 * process does it: the others wait on <store>/locks/#token.lock and then
 * find the fresh token in the store.  A 403 still makes the client log in
 * once (openbao.c); that new token is written back too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

#define TOKEN_MAX 4096

static bool is_shared(const struct cmk_config *cfg)
{
	return cfg->auth.method != CMK_AUTH_TOKEN;
}

static void field(uint8_t *buf, size_t cap, size_t *len, const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	/* Each field and its terminating NUL; a field that does not fit is cut (the hash still differs). */
	if (*len + n + 1 > cap)
		n = *len < cap ? cap - *len - 1 : 0;
	if (*len >= cap)
		return;
	memcpy(buf + *len, s != NULL ? s : "", n);
	buf[*len + n] = '\0';
	*len += n + 1;
}

/* The name the token of this configuration is stored under. */
static void token_name(const struct cmk_config *cfg, char out[CMK_TOKEN_NAME_LEN + 1])
{
	uint8_t buf[4096], digest[32];
	size_t len = 0;
	const char *cred = cfg->auth.method == CMK_AUTH_KUBERNETES ? cfg->auth.jwt_path : cfg->auth.role_id_path;

	field(buf, sizeof(buf), &len, "cmkcert token v1");
	field(buf, sizeof(buf), &len, cfg->openbao.address);
	field(buf, sizeof(buf), &len, cfg->openbao.namespace_);
	field(buf, sizeof(buf), &len, cmk_auth_method_name(cfg->auth.method));
	field(buf, sizeof(buf), &len, cfg->auth.mount);
	field(buf, sizeof(buf), &len, cfg->auth.role);
	field(buf, sizeof(buf), &len, cred);
	cmk_sha256(buf, len, digest);
	cmk_hex(digest, sizeof(digest), out);
}

static struct cmk_seal_aad token_aad(const char *name)
{
	return (struct cmk_seal_aad){ CMK_SEAL_TOKEN, name, 0, "" };
}

/* Hold the stored token when there is one that opens; *found tells.  Damage is logged, never fatal. */
static int load(struct cmk_ctx *ctx, struct cmk_bao *bao, bool *found)
{
	struct cmk_stored_token st = { 0 };
	struct cmk_bao_token_state ts = { 0 };
	char name[CMK_TOKEN_NAME_LEN + 1];
	struct cmk_seal_aad aad;
	size_t cap, len = 0;
	uint8_t *buf = NULL;
	int rc;

	*found = false;
	token_name(ctx->cfg, name);
	aad = token_aad(name);
	if ((rc = cmk_store_token_get(ctx->store, name, &st)) == CMK_ERR_NOTFOUND)
		return 0;
	if (rc != 0)
		goto out;
	cap = cmk_unseal_size(st.sealed_len);
	if (cap == 0 || cap > TOKEN_MAX || (buf = cmk_locked_alloc(cap + 1)) == NULL) {
		rc = cap == 0 || cap > TOKEN_MAX ? cmk_fail(CMK_ERR_STORE, "the stored OpenBao token is damaged")
						 : CMK_ERR_NOMEM;
		goto out;
	}
	if ((rc = cmk_unseal_into(ctx->sealer, &aad, st.sealed, st.sealed_len, buf, cap, &len)) != 0)
		goto out;
	buf[len] = '\0';
	ts.token = (char *)buf;
	ts.granted_ms = st.granted_ms;
	ts.ttl = st.ttl;
	ts.increment = st.increment;
	ts.renewable = st.renewable;
	if ((rc = cmk_bao_token_import(bao, &ts)) == 0)
		*found = true;
out:
	cmk_locked_free(buf);
	cmk_stored_token_clear(&st);
	if (rc != 0 && rc != CMK_ERR_NOMEM) {
		/* A token that cannot be used is replaced by a login, not reported as a failure. */
		cmk_log(CMK_LOG_WARN, "openbao: the token kept in the store cannot be used (%s); logging in",
			cmk_errdetail());
		rc = 0;
	}
	return rc;
}

/* Write the token the client holds into the store. */
static int save(struct cmk_ctx *ctx, struct cmk_bao *bao)
{
	struct cmk_bao_token_state ts = { 0 };
	struct cmk_stored_token st = { 0 };
	char name[CMK_TOKEN_NAME_LEN + 1];
	struct cmk_seal_aad aad;
	int rc;

	token_name(ctx->cfg, name);
	aad = token_aad(name);
	if ((rc = cmk_bao_token_export(bao, &ts)) != 0)
		return rc;
	st.granted_ms = ts.granted_ms;
	st.ttl = ts.ttl;
	st.increment = ts.increment;
	st.renewable = ts.renewable;
	rc = cmk_seal(ctx->sealer, &aad, (const uint8_t *)ts.token, strlen(ts.token), &st.sealed, &st.sealed_len);
	cmk_bao_token_state_clear(&ts);
	if (rc == 0)
		rc = cmk_store_token_put(ctx->store, name, &st, NULL);
	cmk_stored_token_clear(&st);
	return rc;
}

static const char *method_step(const struct cmk_ctx *ctx)
{
	return cmk_auth_method_name(ctx->cfg->auth.method);
}

/* Every new or renewed token goes into the store; every login is audited. */
static void on_token(struct cmk_bao *bao, enum cmk_bao_token_event ev, void *arg)
{
	struct cmk_ctx *ctx = arg;

	if (is_shared(ctx->cfg) && save(ctx, bao) != 0)
		cmk_log(CMK_LOG_WARN, "openbao: keeping the token in the store failed (%s); other runs log in themselves",
			cmk_errdetail());
	if (ev == CMK_BAO_TOKEN_LOGGED_IN) {
		struct cmk_audit_event e = CMK_AUDIT_EVENT_INIT;

		e.event = CMK_AUDIT_LOGIN;
		e.outcome = "success";
		e.actor = ctx->actor;
		e.step = method_step(ctx);
		if (cmk_audit_append(ctx->audit, &e) != 0)
			cmk_log(CMK_LOG_ERROR, "audit: %s: %s", CMK_AUDIT_LOGIN, cmk_errdetail());
	}
}

int cmk_lc_token_attach(struct cmk_ctx *ctx, struct cmk_bao *bao)
{
	bool found;

	cmk_bao_on_token(bao, on_token, ctx);
	if (!is_shared(ctx->cfg))
		return 0;
	return load(ctx, bao, &found);
}

static void audit_failed_login(struct cmk_ctx *ctx, const char *detail)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;

	ev.event = CMK_AUDIT_LOGIN;
	ev.outcome = "failure";
	ev.actor = ctx->actor;
	ev.step = method_step(ctx);
	ev.detail = detail;
	if (cmk_audit_append(ctx->audit, &ev) != 0)
		cmk_log(CMK_LOG_ERROR, "audit: %s: %s", CMK_AUDIT_LOGIN, cmk_errdetail());
}

int cmk_lc_ensure_token(struct cmk_ctx *ctx, struct cmk_bao *bao)
{
	struct cmk_lc_lock *lock = NULL;
	char detail[512];
	bool found;
	int rc;

	if (cmk_bao_token_fresh(bao))
		return 0;
	/* One process logs in or renews; the others wait for it and take its token from the store. */
	if (is_shared(ctx->cfg)) {
		if ((rc = cmk_lc_lock_named(ctx, "#token", true, &lock)) != 0)
			cmk_log(CMK_LOG_WARN, "openbao: %s; going on without it", cmk_errdetail());
		else if ((rc = load(ctx, bao, &found)) != 0)
			goto out;
		if (cmk_bao_token_fresh(bao)) {
			rc = 0;
			goto out;
		}
	}
	/* Logins and renewals reach on_token(), which stores and audits them. */
	if ((rc = cmk_bao_ensure_token(bao)) != 0) {
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
		audit_failed_login(ctx, detail);
		cmk_fail(rc, "%s", detail);
	}
out:
	cmk_lc_unlock(lock);
	return rc;
}
