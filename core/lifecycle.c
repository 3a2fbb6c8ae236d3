/*
 * lifecycle.c - the certificate lifecycle state machine (DESIGN §8).
 *
 * States of a certificate record and the only transitions allowed:
 *
 *   (none) --issue+seal+store--> pending
 *   pending --connection test accepted--> active        (renew_at set)
 *   pending --connection test refused---> failed
 *   pending --found at start-up (a process died mid-operation)--> failed
 *   active  --a renewed certificate activated--> rotating (same transaction)
 *   active  --reached not_after unrenewed--> expired
 *   active | rotating --revoked in OpenBao and on the CRL--> revoked
 *   rotating --grace period over--> cleaned_up
 *
 * revoked, cleaned_up and expired records keep their metadata for the audit
 * trail; revoked and cleaned_up records have their sealed key destroyed.
 * At most one record per (tenant, type) is active; every change is one
 * durable store transaction, so a crash leaves the previous good state.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/probe.h"
#include "cmkcert/util.h"

#define SERVER_CA_MAX (256 * 1024)
#define PROBE_TIMEOUT_MS 10000
#define STORE_RETRIES 5

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
	*out = ctx;
	return 0;
fail:
	cmk_ctx_free(ctx);
	return rc;
}

void cmk_ctx_free(struct cmk_ctx *ctx)
{
	if (ctx == NULL)
		return;
	cmk_bao_free(ctx->bao);
	cmk_audit_close(ctx->audit);
	cmk_sealer_free(ctx->sealer);
	cmk_store_close(ctx->store);
	cmk_config_free(ctx->cfg);
	free(ctx);
}

int cmk_ctx_bao(struct cmk_ctx *ctx, struct cmk_bao **out)
{
	int rc;

	if (ctx->bao == NULL && (rc = cmk_bao_new(ctx->cfg, &ctx->bao)) != 0)
		return rc;
	*out = ctx->bao;
	return 0;
}

/* ---- small helpers ---------------------------------------------------- */

static void report(cmk_step_fn step, void *arg, const char *name, int rc, int64_t t0, const char *detail)
{
	if (step != NULL)
		step(name, rc, cmk_monotonic_ms() - t0, detail, arg);
}

/* Audit one lifecycle event of a record; an audit failure is logged and returned. */
static int audit_record(struct cmk_ctx *ctx, const char *event, const char *outcome, const char *step,
			const struct cmk_cert_record *rec, const char *detail)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	int rc;

	ev.event = event;
	ev.outcome = outcome;
	ev.step = step;
	ev.actor = ctx->actor;
	ev.detail = detail;
	if (rec != NULL) {
		ev.tenant = rec->tenant;
		ev.type = rec->type;
		ev.serial = rec->serial[0] ? rec->serial : NULL;
		ev.fingerprint = rec->fingerprint[0] ? rec->fingerprint : NULL;
		ev.record_id = rec->id;
	}
	if ((rc = cmk_audit_append(ctx->audit, &ev)) != 0)
		cmk_log(CMK_LOG_ERROR, "audit: %s: %s", event, cmk_errdetail());
	return rc;
}

static int audit_failure(struct cmk_ctx *ctx, const char *tenant, const char *type, const char *step,
			 const char *detail)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;

	ev.event = CMK_AUDIT_ERROR;
	ev.outcome = "failure";
	ev.tenant = tenant;
	ev.type = type;
	ev.step = step;
	ev.actor = ctx->actor;
	ev.detail = detail;
	return cmk_audit_append(ctx->audit, &ev);
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

static double random_unit(void)
{
	uint32_t r = 0;

	if (cmk_random(&r, sizeof(r)) != 0)
		return 0.5;
	return (double)r / 4294967296.0;
}

/* Make sure the client holds a token; every login (or failed login) is audited. */
static int ensure_token(struct cmk_ctx *ctx, struct cmk_bao *bao)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	struct cmk_bao_stats before, after;
	char detail[512];
	int rc;

	cmk_bao_get_stats(bao, &before);
	rc = cmk_bao_ensure_token(bao);
	cmk_bao_get_stats(bao, &after);
	if (rc == 0 && after.logins == before.logins)
		return 0;
	snprintf(detail, sizeof(detail), "%s", rc ? cmk_errdetail() : "");
	ev.event = CMK_AUDIT_LOGIN;
	ev.outcome = rc ? "failure" : "success";
	ev.actor = ctx->actor;
	ev.step = ctx->cfg->auth.method == CMK_AUTH_KUBERNETES ? "kubernetes"
		  : ctx->cfg->auth.method == CMK_AUTH_APPROLE ? "approle" : "token";
	ev.detail = rc ? detail : NULL;
	if (cmk_audit_append(ctx->audit, &ev) != 0 && rc == 0)
		return CMK_ERR_AUDIT;
	if (rc != 0)
		cmk_fail(rc, "%s", detail);
	return rc;
}

/* ---- check (story 1) -------------------------------------------------- */

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

int cmk_check(struct cmk_ctx *ctx, cmk_step_fn step, void *arg)
{
	struct cmk_bao_health h = { 0 };
	struct cmk_bao_token_info ti = { 0 };
	struct cmk_bao *bao;
	char detail[512], *chain = NULL;
	int64_t t0 = cmk_monotonic_ms();
	int rc, first = 0;

	if ((rc = cmk_ctx_bao(ctx, &bao)) != 0) {
		report(step, arg, "client", rc, t0, cmk_errdetail());
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
	report(step, arg, "reach", rc, t0, detail);
	if (rc != 0)
		return rc;

	t0 = cmk_monotonic_ms();
	rc = ensure_token(ctx, bao);
	if (rc == 0)
		rc = cmk_bao_token_lookup(bao, &ti);
	if (rc == 0) {
		char ttl[32];
		cmk_format_duration(ti.ttl, ttl, sizeof(ttl));
		snprintf(detail, sizeof(detail), "%s login ok, token ttl %s%s, policies %s",
			 ctx->cfg->auth.method == CMK_AUTH_KUBERNETES ? "kubernetes"
			 : ctx->cfg->auth.method == CMK_AUTH_APPROLE ? "approle" : "token",
			 ti.ttl ? ttl : "none", ti.renewable ? " renewable" : "", ti.policies);
	} else {
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
	}
	report(step, arg, "authenticate", rc, t0, detail);
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
	report(step, arg, "pki-mount", rc, t0, detail);
	if (rc != 0)
		return rc;

	for (size_t i = 0; i < ctx->cfg->n_templates; i++) {
		const struct cmk_template *tpl = &ctx->cfg->templates[i];
		char name[64];
		int r;

		t0 = cmk_monotonic_ms();
		r = check_role(ctx, bao, tpl, detail, sizeof(detail));
		snprintf(name, sizeof(name), "role:%s", tpl->type);
		report(step, arg, name, r, t0, detail);
		if (r != 0 && first == 0)
			first = r;
	}
	return first;
}

/* ---- keystore requests ------------------------------------------------ */

void cmk_keystore_request_clear(struct cmk_keystore_request *req)
{
	if (req == NULL)
		return;
	for (size_t i = 0; i < req->n_endpoints; i++)
		free(req->endpoints[i]);
	free(req->endpoints);
	free(req->server_ca_pem);
	memset(req, 0, sizeof(*req));
	req->verify = -1;
}

static int copy_name(char *dst, size_t cap, const char *field, const char *src)
{
	if (strlen(src) >= cap)
		return cmk_fail(CMK_ERR_INVALID, "%s: %zu characters, at most %zu", field, strlen(src), cap - 1);
	memcpy(dst, src, strlen(src) + 1);
	return 0;
}

static int check_only_keys(const json_t *obj, const char *where, const char *const *allowed)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		bool ok = false;
		(void)v;
		for (size_t i = 0; allowed[i] != NULL; i++)
			ok = ok || strcmp(key, allowed[i]) == 0;
		if (!ok)
			return cmk_fail(CMK_ERR_INVALID, "%s: unknown field \"%s\"", where, key);
	}
	return 0;
}

int cmk_keystore_request_from_json(const char *text, size_t len, struct cmk_keystore_request *out)
{
	static const char *const top_keys[] = { "tenant_id", "keystore_config", NULL };
	static const char *const cfg_keys[] = { "type", "connection_endpoints", "authentication_method",
						"certificate_required", NULL };
	json_t *root = NULL, *kc, *eps;
	const char *tenant, *type, *method = NULL;
	bool required = true;
	int rc;

	memset(out, 0, sizeof(*out));
	out->verify = -1;
	if ((rc = cmk_json_parse("keystore request", text, len, &root)) != 0)
		return rc;
	rc = CMK_ERR_INVALID;
	if (!json_is_object(root)) {
		cmk_fail(rc, "keystore request: must be a JSON object");
		goto out;
	}
	if ((rc = check_only_keys(root, "keystore request", top_keys)) != 0 ||
	    (rc = cmk_json_str(root, "tenant_id", &tenant)) != 0)
		goto out;
	kc = json_object_get(root, "keystore_config");
	if (!json_is_object(kc)) {
		rc = cmk_fail(CMK_ERR_INVALID, kc ? "field \"keystore_config\" must be an object"
					      : "missing field \"keystore_config\"");
		goto out;
	}
	if ((rc = check_only_keys(kc, "keystore_config", cfg_keys)) != 0 ||
	    (rc = cmk_json_str(kc, "type", &type)) != 0)
		goto out;
	rc = cmk_json_str_opt(kc, "authentication_method", &method);
	if (rc == 0 && strcmp(method, "client_certificate") != 0) {
		rc = cmk_fail(CMK_ERR_INVALID, "keystore_config.authentication_method \"%s\": only "
			      "\"client_certificate\" is supported", method);
		goto out;
	} else if (rc != 0 && rc != CMK_ERR_NOTFOUND) {
		goto out;
	}
	rc = cmk_json_bool_opt(kc, "certificate_required", &required);
	if (rc == 0 && !required) {
		rc = cmk_fail(CMK_ERR_INVALID, "keystore_config.certificate_required is false: nothing to issue");
		goto out;
	} else if (rc != 0 && rc != CMK_ERR_NOTFOUND) {
		goto out;
	}
	eps = json_object_get(kc, "connection_endpoints");
	if (!json_is_array(eps)) {
		rc = cmk_fail(CMK_ERR_INVALID, eps ? "field \"connection_endpoints\" must be an array of strings"
					       : "missing field \"connection_endpoints\"");
		goto out;
	}
	if ((rc = copy_name(out->tenant, sizeof(out->tenant), "tenant_id", tenant)) != 0 ||
	    (rc = copy_name(out->type, sizeof(out->type), "keystore_config.type", type)) != 0)
		goto out;
	if ((out->endpoints = calloc(json_array_size(eps) + 1, sizeof(char *))) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < json_array_size(eps); i++) {
		json_t *e = json_array_get(eps, i);
		if (!json_is_string(e)) {
			rc = cmk_fail(CMK_ERR_INVALID, "connection_endpoints[%zu] must be a string", i);
			goto out;
		}
		if ((out->endpoints[out->n_endpoints++] = strdup(json_string_value(e))) == NULL) {
			rc = CMK_ERR_NOMEM;
			goto out;
		}
	}
	rc = 0;
out:
	if (rc != 0)
		cmk_keystore_request_clear(out);
	json_decref(root);
	return rc;
}

void cmk_op_result_clear(struct cmk_op_result *res)
{
	if (res == NULL)
		return;
	cmk_bao_warnings_clear(&res->warnings);
	memset(res, 0, sizeof(*res));
}

/* ---- keystore add (story 2) ------------------------------------------- */

/* Everything one add needs, validated before any state changes. */
struct add_plan {
	const struct cmk_template *tpl;
	enum cmk_verify verify;
	char *cn;
	char **sans;           /* expanded alt names */
	size_t n_sans;
	char *alt_csv;         /* the same, comma-joined for OpenBao */
};

static void plan_clear(struct add_plan *p)
{
	free(p->cn);
	for (size_t i = 0; i < p->n_sans; i++)
		free(p->sans[i]);
	free(p->sans);
	free(p->alt_csv);
	memset(p, 0, sizeof(*p));
}

static int validate_request(struct cmk_ctx *ctx, const struct cmk_keystore_request *req, struct add_plan *p)
{
	char host[CMK_HOST_MAX + 1];
	uint16_t port;
	size_t csv_len = 1;
	int rc;

	if ((rc = cmk_check_tenant("tenant_id", req->tenant)) != 0 ||
	    (rc = cmk_check_type("type", req->type)) != 0)
		return rc;
	if ((p->tpl = cmk_config_template(ctx->cfg, req->type)) == NULL)
		return cmk_fail(CMK_ERR_INVALID, "type \"%s\": no [template:%s] in %s (known types and aliases are "
				"configured there)", req->type, req->type, ctx->cfg->path);
	p->verify = req->verify >= 0 ? (enum cmk_verify)req->verify : p->tpl->verify;
	for (size_t i = 0; i < req->n_endpoints; i++)
		if ((rc = cmk_parse_endpoint(req->endpoints[i], host, &port)) != 0)
			return rc;
	if (p->verify != CMK_VERIFY_NONE && req->n_endpoints == 0)
		return cmk_fail(CMK_ERR_INVALID, "endpoint: at least one keystore endpoint HOST:PORT is needed to "
				"test the connection (verify %s)", cmk_verify_name(p->verify));
	if (req->server_ca_pem != NULL && cmk_pem_cert_count(req->server_ca_pem) <= 0)
		return cmk_fail(CMK_ERR_INVALID, "server CA: no PEM certificate found");

	if ((p->cn = cmk_template_expand(p->tpl->common_name, req->tenant)) == NULL ||
	    (p->sans = calloc(p->tpl->n_alt_names + 1, sizeof(char *))) == NULL)
		return CMK_ERR_NOMEM;
	for (size_t i = 0; i < p->tpl->n_alt_names; i++) {
		if ((p->sans[i] = cmk_template_expand(p->tpl->alt_names[i], req->tenant)) == NULL)
			return CMK_ERR_NOMEM;
		p->n_sans++;
		csv_len += strlen(p->sans[i]) + 1;
	}
	if ((p->alt_csv = calloc(1, csv_len)) == NULL)
		return CMK_ERR_NOMEM;
	for (size_t i = 0; i < p->n_sans; i++) {
		if (i > 0)
			strcat(p->alt_csv, ",");
		strcat(p->alt_csv, p->sans[i]);
	}
	return 0;
}

/* The tenant must not already have a live certificate of this type. */
static int check_not_present(struct cmk_ctx *ctx, const char *tenant, const char *type)
{
	static const enum cmk_status live[] = { CMK_ST_ACTIVE, CMK_ST_PENDING };
	struct cmk_cert_record rec = { 0 };

	for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++) {
		int rc = cmk_store_cert_find(ctx->store, NULL, tenant, type, live[i], &rec);
		if (rc == 0) {
			cmk_cert_record_clear(&rec);
			return cmk_fail(CMK_ERR_EXISTS, "tenant %s already has a%s %s certificate for %s "
					"(remove the keystore or renew instead)", tenant,
					live[i] == CMK_ST_ACTIVE ? "n" : "", cmk_status_name(live[i]), type);
		}
		if (rc != CMK_ERR_NOTFOUND)
			return rc;
	}
	return 0;
}

/*
 * Obtain a certificate and its key: in sign mode the key is generated here
 * and only the CSR leaves the host; in issue mode OpenBao makes the key.
 */
static int obtain(struct cmk_ctx *ctx, const struct add_plan *p, struct cmk_bao_cert *cert, struct cmk_key **key)
{
	struct cmk_bao_cert_request r = { 0 };
	struct cmk_bao *bao;
	char *csr = NULL;
	int rc;

	if ((rc = cmk_ctx_bao(ctx, &bao)) != 0 || (rc = ensure_token(ctx, bao)) != 0)
		return rc;
	r.mount = ctx->cfg->openbao.pki_mount;
	r.role = cmk_config_role(ctx->cfg, p->tpl);
	r.ttl = p->tpl->ttl;
	if (ctx->cfg->openbao.mode == CMK_MODE_SIGN) {
		if ((rc = cmk_key_generate(p->tpl->key_type, p->tpl->key_bits, key)) != 0 ||
		    (rc = cmk_csr_create(*key, p->cn, (const char *const *)p->sans, p->n_sans, &csr)) != 0)
			goto out;
		r.csr = csr;
		rc = cmk_bao_sign(bao, &r, cert);
	} else {
		r.common_name = p->cn;
		r.alt_names = p->alt_csv;
		r.key_type = cmk_key_type_name(p->tpl->key_type);
		r.key_bits = p->tpl->key_bits;
		rc = cmk_bao_issue(bao, &r, cert);
		if (rc == 0 && cert->private_key == NULL)
			rc = cmk_fail(CMK_ERR_PROTOCOL, "issue answer has no private_key");
		if (rc == 0)
			rc = cmk_key_parse_pem(cert->private_key, strlen(cert->private_key), key);
	}
out:
	free(csr);
	return rc;
}

/* Is the issued certificate what we asked for, for the key we hold, under its chain? */
static int check_issued(const struct add_plan *p, const struct cmk_bao_cert *cert, const struct cmk_key *key,
			struct cmk_cert_info *info)
{
	char want[CMK_HOST_MAX + 8];
	int rc;

	if ((rc = cmk_cert_parse(cert->certificate, info)) != 0)
		return rc;
	snprintf(want, sizeof(want), "CN=%s", p->cn);
	if (strstr(info->subject, want) == NULL)
		return cmk_fail(CMK_ERR_VERIFY, "issued certificate subject \"%s\" lacks %s", info->subject, want);
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
	if ((rc = cmk_cert_matches_key(cert->certificate, key)) != 0)
		return cmk_fail(rc, "issued certificate does not match the private key");
	if ((rc = cmk_cert_verify_chain(cert->certificate, cert->ca_chain)) != 0)
		return rc;
	return 0;
}

/* Run fn in a store transaction, retrying when the store reports a lock conflict. */
typedef int (*txn_fn)(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg);

static int with_txn(struct cmk_ctx *ctx, txn_fn fn, void *arg)
{
	for (int attempt = 0;; attempt++) {
		struct cmk_txn *txn = NULL;
		int rc = cmk_store_begin(ctx->store, &txn);

		if (rc == 0)
			rc = fn(ctx, txn, arg);
		if (rc == 0)
			return cmk_store_commit(txn);
		cmk_store_abort(txn);
		if (rc != CMK_ERR_BUSY || attempt >= STORE_RETRIES)
			return rc;
		usleep(10000u << attempt);
	}
}

struct store_new_arg {
	struct cmk_cert_record *rec;
	const struct cmk_keystore_record *ks;
	const uint8_t *key_pem;
	size_t key_len;
};

/* Allocate the id, seal the key bound to it, store the pending record and the keystore config. */
static int store_new(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct store_new_arg *a = arg;
	struct cmk_cert_record *rec = a->rec;
	struct cmk_seal_aad aad;
	struct cmk_cert_record other = { 0 };
	int rc;

	/* Re-check inside the transaction: a concurrent add of the same (tenant, type) must not win twice. */
	rc = cmk_store_cert_find(ctx->store, txn, rec->tenant, rec->type, CMK_ST_ACTIVE, &other);
	if (rc == 0)
		rc = cmk_store_cert_find(ctx->store, txn, rec->tenant, rec->type, CMK_ST_PENDING, &other);
	if (rc == 0) {
		cmk_cert_record_clear(&other);
		return cmk_fail(CMK_ERR_EXISTS, "tenant %s got a %s certificate meanwhile", rec->tenant, rec->type);
	}
	if (rc != CMK_ERR_NOTFOUND)
		return rc;
	if ((rc = cmk_store_cert_next_id(txn, &rec->id)) != 0)
		return rc;
	free(rec->sealed_key);
	rec->sealed_key = NULL;
	aad = (struct cmk_seal_aad){ rec->tenant, rec->type, rec->id, rec->serial };
	if ((rc = cmk_seal(ctx->sealer, &aad, a->key_pem, a->key_len, &rec->sealed_key, &rec->sealed_key_len)) != 0)
		return rc;
	if ((rc = cmk_store_cert_put(txn, rec)) != 0)
		return rc;
	return cmk_store_keystore_put(txn, a->ks);
}

struct set_status_arg {
	uint64_t id;
	enum cmk_status from, to;
	int64_t renew_at;
	const char *error;
};

/* Move one record from `from` to `to` (refusing if it is no longer in `from`). */
static int set_status(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct set_status_arg *a = arg;
	struct cmk_cert_record rec = { 0 };
	int64_t now = cmk_now();
	int rc;

	if ((rc = cmk_store_cert_get(ctx->store, txn, a->id, &rec)) != 0)
		return rc;
	if (rec.status != a->from) {
		rc = cmk_fail(CMK_ERR_STATE, "certificate %" PRIu64 " is %s, expected %s", a->id,
			      cmk_status_name(rec.status), cmk_status_name(a->from));
		goto out;
	}
	rec.status = a->to;
	rec.updated_at = now;
	if (a->to == CMK_ST_ACTIVE) {
		rec.activated_at = now;
		rec.renew_at = a->renew_at;
	}
	free(rec.last_error);
	rec.last_error = a->error ? strdup(a->error) : NULL;
	rc = cmk_store_cert_put(txn, &rec);
out:
	cmk_cert_record_clear(&rec);
	return rc;
}

/* Test the new pair against every endpoint; all must accept it. */
static int test_connection(const struct cmk_keystore_request *req, enum cmk_verify verify,
			   const struct cmk_bao_cert *cert, const struct cmk_key *key)
{
	for (size_t i = 0; i < req->n_endpoints; i++) {
		struct cmk_probe_target t = { 0 };
		char host[CMK_HOST_MAX + 1];
		int rc;

		if ((rc = cmk_parse_endpoint(req->endpoints[i], host, &t.port)) != 0)
			return rc;
		t.host = host;
		t.server_ca_pem = req->server_ca_pem;
		t.verify = verify;
		t.timeout_ms = PROBE_TIMEOUT_MS;
		if ((rc = cmk_probe(&t, cert->certificate, cert->ca_chain, key)) != 0)
			return rc;
	}
	return 0;
}

static int fill_records(const struct cmk_keystore_request *req, const struct add_plan *p,
			const struct cmk_bao_cert *cert, const struct cmk_cert_info *info,
			struct cmk_cert_record *rec, struct cmk_keystore_record *ks)
{
	int64_t now = cmk_now();

	snprintf(rec->tenant, sizeof(rec->tenant), "%s", req->tenant);
	snprintf(rec->type, sizeof(rec->type), "%s", p->tpl->type);
	rec->status = CMK_ST_PENDING;
	snprintf(rec->serial, sizeof(rec->serial), "%s", cert->serial_number);
	memcpy(rec->fingerprint, info->fingerprint, sizeof(rec->fingerprint));
	rec->not_before = info->not_before;
	rec->not_after = info->not_after;
	rec->created_at = rec->updated_at = now;
	if ((rec->subject = strdup(info->subject)) == NULL || (rec->cert_pem = strdup(cert->certificate)) == NULL ||
	    (rec->chain_pem = strdup(cert->ca_chain)) == NULL)
		return CMK_ERR_NOMEM;

	memcpy(ks->tenant, rec->tenant, sizeof(ks->tenant));
	memcpy(ks->type, rec->type, sizeof(ks->type));
	ks->endpoints = req->endpoints;
	ks->n_endpoints = req->n_endpoints;
	ks->server_ca_pem = req->server_ca_pem;
	ks->verify = p->verify;
	ks->created_at = now;
	return 0;
}

int cmk_keystore_add(struct cmk_ctx *ctx, const struct cmk_keystore_request *req, struct cmk_op_result *res,
		     cmk_step_fn step, void *arg)
{
	struct add_plan plan = { 0 };
	struct cmk_bao_cert cert = { 0 };
	struct cmk_cert_info info = { 0 };
	struct cmk_cert_record rec = { 0 };
	struct cmk_keystore_record ks = { 0 };
	struct cmk_key *key = NULL;
	char *key_pem = NULL;
	size_t key_len = 0;
	int64_t t0 = cmk_monotonic_ms();
	int rc;

	memset(res, 0, sizeof(*res));

	/* 1. Everything that can be checked locally, before any state changes. */
	rc = validate_request(ctx, req, &plan);
	if (rc == 0)
		rc = check_not_present(ctx, req->tenant, plan.tpl->type);
	report(step, arg, "validate", rc, t0, rc ? cmk_errdetail() : plan.cn);
	if (rc != 0)
		goto out;
	snprintf(res->type, sizeof(res->type), "%s", plan.tpl->type);

	/* 2. Issue (or sign) and check the answer. */
	t0 = cmk_monotonic_ms();
	rc = obtain(ctx, &plan, &cert, &key);
	if (rc == 0)
		rc = check_issued(&plan, &cert, key, &info);
	report(step, arg, ctx->cfg->openbao.mode == CMK_MODE_SIGN ? "sign" : "issue", rc, t0,
	       rc ? cmk_errdetail() : cert.serial_number);
	if (rc != 0) {
		char detail[512];
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
		audit_failure(ctx, req->tenant, plan.tpl->type,
			      ctx->cfg->openbao.mode == CMK_MODE_SIGN ? "sign" : "issue", detail);
		cmk_fail(rc, "%s", detail);
		goto out;
	}
	res->warnings = cert.warnings;
	memset(&cert.warnings, 0, sizeof(cert.warnings));
	for (size_t i = 0; i < res->warnings.count; i++)
		cmk_log(CMK_LOG_WARN, "keystore_add: OpenBao warning: %s", res->warnings.items[i]);

	/* 3. Seal the key and store the certificate as pending. */
	t0 = cmk_monotonic_ms();
	if ((rc = cmk_key_write_pem(key, &key_pem, &key_len)) != 0 ||
	    (rc = fill_records(req, &plan, &cert, &info, &rec, &ks)) != 0)
		goto out;
	{
		struct store_new_arg a = { &rec, &ks, (const uint8_t *)key_pem, key_len };
		rc = with_txn(ctx, store_new, &a);
	}
	cmk_freezero(key_pem, key_len + 1);
	key_pem = NULL;
	report(step, arg, "store", rc, t0, rc ? cmk_errdetail() : "sealed, stored as pending");
	if (rc != 0)
		goto out;
	res->id = rec.id;
	res->status = CMK_ST_PENDING;
	snprintf(res->serial, sizeof(res->serial), "%s", rec.serial);
	memcpy(res->fingerprint, rec.fingerprint, sizeof(res->fingerprint));
	res->not_after = rec.not_after;
	if ((rc = audit_record(ctx, CMK_AUDIT_CREATE, "success", "store", &rec, NULL)) != 0)
		goto out;

	/* 4. Test the connection with the new pair, then activate or mark failed. */
	t0 = cmk_monotonic_ms();
	rc = plan.verify == CMK_VERIFY_NONE ? 0 : test_connection(req, plan.verify, &cert, key);
	report(step, arg, "test", rc, t0,
	       rc ? cmk_errdetail() : plan.verify == CMK_VERIFY_NONE ? "skipped (verify none)" : "keystore accepted");
	if (rc != 0) {
		char detail[512];
		struct set_status_arg s = { rec.id, CMK_ST_PENDING, CMK_ST_FAILED, 0, detail };
		int rc2;

		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
		if ((rc2 = with_txn(ctx, set_status, &s)) != 0)
			cmk_log(CMK_LOG_ERROR, "keystore_add: marking %" PRIu64 " failed: %s", rec.id, cmk_errdetail());
		else
			res->status = CMK_ST_FAILED;
		audit_record(ctx, CMK_AUDIT_ACTIVATE, "failure", "test", &rec, detail);
		cmk_fail(rc, "%s", detail);
		goto out;
	}

	t0 = cmk_monotonic_ms();
	{
		struct set_status_arg s = { rec.id, CMK_ST_PENDING, CMK_ST_ACTIVE,
					    cmk_renew_at(ctx->cfg, rec.not_before, rec.not_after, random_unit()), NULL };
		rc = with_txn(ctx, set_status, &s);
		res->renew_at = s.renew_at;
	}
	report(step, arg, "activate", rc, t0, rc ? cmk_errdetail() : "active");
	if (rc != 0)
		goto out;
	res->status = CMK_ST_ACTIVE;
	rc = audit_record(ctx, CMK_AUDIT_ACTIVATE, "success", "activate", &rec,
			  plan.verify == CMK_VERIFY_NONE ? "connection test skipped (verify none)" : NULL);
out:
	ks.endpoints = NULL;            /* borrowed from req */
	ks.server_ca_pem = NULL;
	cmk_keystore_record_clear(&ks);
	cmk_cert_record_clear(&rec);
	cmk_cert_info_clear(&info);
	cmk_bao_cert_clear(&cert);
	cmk_key_free(key);
	cmk_freezero(key_pem, key_len + 1);
	plan_clear(&plan);
	return rc;
}
