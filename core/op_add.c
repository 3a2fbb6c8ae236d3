/*
 * op_add.c - story 2: a tenant configures a keystore.  Validate the
 * request, issue (or sign) the certificate from the template, check the
 * answer, seal the key and store the certificate as pending, test the mTLS
 * connection with the new pair, and only then activate it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/openbao.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"

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
	char q[CMK_QUOTE_SIZE];
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		bool ok = false;
		(void)v;
		for (size_t i = 0; allowed[i] != NULL; i++)
			ok = ok || strcmp(key, allowed[i]) == 0;
		if (!ok) {
			cmk_quote(key, q);
			return cmk_fail(CMK_ERR_INVALID, "%s: unknown field \"%s\"", where, q);
		}
	}
	return 0;
}

int cmk_keystore_request_from_json(const char *text, size_t len, struct cmk_keystore_request *out)
{
	static const char *const top_keys[] = { "tenant_id", "keystore_config", NULL };
	static const char *const cfg_keys[] = { "type", "connection_endpoints", "authentication_method",
						"certificate_required", "server_ca", "verify", NULL };
	json_t *root = NULL, *kc, *eps;
	const char *tenant, *type, *method = NULL, *server_ca = NULL, *verify = NULL;
	char q[CMK_QUOTE_SIZE];
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
		cmk_quote(method, q);
		rc = cmk_fail(CMK_ERR_INVALID, "keystore_config.authentication_method \"%s\": only "
			      "\"client_certificate\" is supported", q);
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
	rc = cmk_json_str_opt(kc, "verify", &verify);
	if (rc == 0 && (out->verify = cmk_verify_parse(verify)) < 0) {
		cmk_quote(verify, q);
		rc = cmk_fail(CMK_ERR_INVALID, "keystore_config.verify \"%s\": use tls, kmip or none", q);
		goto out;
	} else if (rc != 0 && rc != CMK_ERR_NOTFOUND) {
		goto out;
	}
	rc = cmk_json_str_opt(kc, "server_ca", &server_ca);
	if (rc == 0 && (out->server_ca_pem = strdup(server_ca)) == NULL) {
		rc = CMK_ERR_NOMEM;
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
/* The tenant id ends up in DNS names: "a~b" is a valid tenant id but yields no valid host name. */
static int check_names(const char *tenant, const struct cmk_lc_plan *p)
{
	if (!cmk_is_valid_hostname(p->cn))
		return cmk_fail(CMK_ERR_INVALID, "tenant_id \"%s\": the certificate name \"%s\" it makes is not a valid "
				"DNS name (a tenant id used in certificates may only hold letters, digits, '-' and '.')",
				tenant, p->cn);
	for (size_t i = 0; i < p->n_sans; i++)
		if (!cmk_is_valid_hostname(p->sans[i]))
			return cmk_fail(CMK_ERR_INVALID, "tenant_id \"%s\": the alt name \"%s\" it makes is not a valid "
					"DNS name", tenant, p->sans[i]);
	return 0;
}

static int validate_request(struct cmk_ctx *ctx, const struct cmk_keystore_request *req, struct cmk_lc_plan *p)
{
	char host[CMK_HOST_MAX + 1];
	uint16_t port;
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
	/* A configuration naming files that are not there is refused here, before anything is recorded. */
	if ((rc = cmk_bao_check_files(ctx->cfg)) != 0)
		return rc;

	if ((rc = cmk_lc_plan_names(p, req->tenant)) != 0)
		return rc;
	return check_names(req->tenant, p);
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

struct store_new_arg {
	struct cmk_cert_record *rec;
	const struct cmk_keystore_record *ks;
	const struct cmk_lc_key *key;
	int64_t renew_at;           /* != 0: there is no test to wait for (verify none): activate at once */
};

/*
 * Allocate the id, seal the key bound to it, store the pending record and
 * the keystore config; with nothing to test, make it active in the same
 * transaction (the state machine's pending -> active, without a second
 * durable commit that nothing happens between).
 */
static int store_new(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg)
{
	struct store_new_arg *a = arg;
	struct cmk_cert_record *rec = a->rec;
	struct cmk_cert_record other = { 0 };
	int rc;

	/* A retried transaction starts again from the record as issued. */
	rec->status = CMK_ST_PENDING;
	rec->activated_at = 0;
	rec->renew_at = 0;
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
	if ((rc = cmk_lc_store_pending(ctx, txn, rec, a->key)) != 0 || (rc = cmk_store_keystore_put(txn, a->ks)) != 0)
		return rc;
	if (a->renew_at == 0)
		return 0;
	rec->renew_at = a->renew_at;
	return cmk_lc_transition(txn, rec, CMK_ST_ACTIVE, NULL);
}

static int fill_records(const struct cmk_keystore_request *req, const struct cmk_lc_plan *p,
			const struct cmk_bao_cert *cert, const struct cmk_cert_info *info,
			struct cmk_cert_record *rec, struct cmk_keystore_record *ks)
{
	int rc;

	if ((rc = cmk_lc_fill_record(req->tenant, p, cert, info, rec)) != 0)
		return rc;

	memcpy(ks->tenant, rec->tenant, sizeof(ks->tenant));
	memcpy(ks->type, rec->type, sizeof(ks->type));
	ks->endpoints = req->endpoints;
	ks->n_endpoints = req->n_endpoints;
	ks->server_ca_pem = req->server_ca_pem;
	ks->verify = p->verify;
	ks->created_at = rec->created_at;
	return 0;
}

int cmk_keystore_add(struct cmk_ctx *ctx, const struct cmk_keystore_request *req, struct cmk_op_result *res,
		     cmk_step_fn step, void *arg)
{
	struct cmk_lc_plan plan = { 0 };
	struct cmk_bao_cert cert = { 0 };
	struct cmk_cert_info info = { 0 };
	struct cmk_cert_record rec = { 0 };
	struct cmk_keystore_record ks = { 0 };
	struct cmk_lc_lock *lock = NULL;
	struct cmk_lc_key key = { 0 };
	int64_t t0 = cmk_monotonic_ms();
	int rc;

	memset(res, 0, sizeof(*res));

	/* 1. Everything that can be checked locally, before any state changes. */
	rc = validate_request(ctx, req, &plan);
	if (rc == 0)
		rc = cmk_lc_lock(ctx, req->tenant, plan.tpl->type, false, &lock);
	if (rc == 0)
		rc = check_not_present(ctx, req->tenant, plan.tpl->type);
	cmk_lc_report(step, arg, "validate", rc, t0, rc ? cmk_errdetail() : plan.cn);
	if (rc != 0)
		goto out;
	snprintf(res->type, sizeof(res->type), "%s", plan.tpl->type);

	/* 2. Issue (or sign) and check the answer. */
	rc = cmk_lc_issue_step(ctx, &plan, step, arg, &cert, &key, &info);
	if (rc != 0) {
		char detail[512];
		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
		cmk_lc_audit_failure(ctx, req->tenant, plan.tpl->type, cmk_lc_issue_step_name(ctx), detail);
		cmk_fail(rc, "%s", detail);
		goto out;
	}
	res->warnings = cert.warnings;
	memset(&cert.warnings, 0, sizeof(cert.warnings));
	for (size_t i = 0; i < res->warnings.count; i++)
		cmk_log(CMK_LOG_WARN, "keystore_add: OpenBao warning: %s", res->warnings.items[i]);

	/* 3. Seal the key and store the certificate as pending (active at once when there is no test). */
	t0 = cmk_monotonic_ms();
	if ((rc = fill_records(req, &plan, &cert, &info, &rec, &ks)) != 0)
		goto out;
	{
		bool at_once = plan.verify == CMK_VERIFY_NONE;
		struct store_new_arg a = { &rec, &ks, &key,
					   at_once ? cmk_renew_at(ctx->cfg, rec.not_before, rec.not_after,
								  cmk_lc_random_unit()) : 0 };
		struct cmk_lc_note created = { CMK_AUDIT_CREATE, "success", "store", NULL, &rec, NULL, NULL, false,
					       cmk_lc_key_origin(&key) };
		struct cmk_lc_note activated = { CMK_AUDIT_ACTIVATE, "success", "activate",
						 "connection test skipped (verify none)", &rec, NULL, NULL, false, NULL };
		struct cmk_lc_note *notes[] = { &created, &activated };

		rc = cmk_lc_with_txn_notes(ctx, store_new, &a, notes, at_once ? 2 : 1);
		if (rc == 0)
			key.claim.id = 0;         /* taken from the pool by the record */
		res->renew_at = a.renew_at;
		cmk_lc_report(step, arg, "store", rc, t0,
			      rc ? cmk_errdetail() : at_once ? "sealed, stored and active (verify none: nothing to test)"
						       : "sealed, stored as pending");
	}
	if (rc != 0)
		goto out;
	res->id = rec.id;
	res->status = rec.status;
	snprintf(res->serial, sizeof(res->serial), "%s", rec.serial);
	memcpy(res->fingerprint, rec.fingerprint, sizeof(res->fingerprint));
	res->not_after = rec.not_after;

	/* 4. Test the connection with the new pair, then activate or mark failed. */
	t0 = cmk_monotonic_ms();
	rc = cmk_lc_test_connection(&ks, cert.certificate, cert.ca_chain, key.key);
	cmk_lc_report(step, arg, "test", rc, t0,
	       rc ? cmk_errdetail() : plan.verify == CMK_VERIFY_NONE ? "skipped (verify none)" : "keystore accepted");
	if (rc != 0) {
		char detail[512];
		struct cmk_lc_set s = { rec.id, CMK_ST_PENDING, CMK_ST_FAILED, 0, detail };
		struct cmk_lc_note note = { CMK_AUDIT_ACTIVATE, "failure", "test", detail, &rec, NULL, NULL, false, NULL };

		snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
		if (cmk_lc_set_status(ctx, &s, &note) != 0)
			cmk_log(CMK_LOG_ERROR, "keystore_add: marking %" PRIu64 " failed: %s", rec.id, cmk_errdetail());
		else
			res->status = CMK_ST_FAILED;
		cmk_fail(rc, "%s", detail);
		goto out;
	}

	t0 = cmk_monotonic_ms();
	if (rec.status != CMK_ST_ACTIVE) {
		struct cmk_lc_set s = { rec.id, CMK_ST_PENDING, CMK_ST_ACTIVE,
					cmk_renew_at(ctx->cfg, rec.not_before, rec.not_after, cmk_lc_random_unit()), NULL };
		struct cmk_lc_note note = { CMK_AUDIT_ACTIVATE, "success", "activate", NULL, &rec, NULL, NULL, false,
					    NULL };
		rc = cmk_lc_set_status(ctx, &s, &note);
		res->renew_at = s.renew_at;
	}
	cmk_lc_report(step, arg, "activate", rc, t0,
		      rc ? cmk_errdetail() : "active");
	if (rc != 0)
		goto out;
	res->status = CMK_ST_ACTIVE;
out:
	ks.endpoints = NULL;            /* borrowed from req */
	ks.n_endpoints = 0;
	ks.server_ca_pem = NULL;
	cmk_keystore_record_clear(&ks);
	cmk_cert_record_clear(&rec);
	cmk_cert_info_clear(&info);
	cmk_bao_cert_clear(&cert);
	cmk_lc_key_done(ctx, &key);
	cmk_lc_plan_clear(&plan);
	cmk_lc_unlock(lock);
	return rc;
}
