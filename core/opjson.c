/*
 * opjson.c - JSON for certificate records and operation results (opjson.h).
 * The CLI prints these with --json; the daemon's control socket answers
 * with them.  Field names are the use case's where it has one
 * (tenant_id, serial_number, certificate_path).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"

json_t *cmk_json_time(int64_t t)
{
	char buf[32];

	if (t <= 0)
		return json_null();
	cmk_format_time(t, buf, sizeof(buf));
	return json_string(buf);
}

/* A JSON string that takes ownership of `p` ("" when memory ran out and p is NULL). */
static json_t *owned_string(char *p)
{
	json_t *s = json_string(p != NULL ? p : "");

	free(p);
	return s;
}

json_t *cmk_json_record(const struct cmk_cert_record *r, bool pem)
{
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "id", json_integer((json_int_t)r->id));
	json_object_set_new(o, "tenant_id", json_string(r->tenant));
	json_object_set_new(o, "type", json_string(r->type));
	json_object_set_new(o, "status", json_string(cmk_status_name(r->status)));
	json_object_set_new(o, "serial_number", json_string(r->serial));
	json_object_set_new(o, "fingerprint_sha256", json_string(r->fingerprint));
	json_object_set_new(o, "subject", json_string(r->subject ? r->subject : ""));
	json_object_set_new(o, "not_before", cmk_json_time(r->not_before));
	json_object_set_new(o, "not_after", cmk_json_time(r->not_after));
	json_object_set_new(o, "renew_at", cmk_json_time(r->renew_at));
	json_object_set_new(o, "created_at", cmk_json_time(r->created_at));
	json_object_set_new(o, "activated_at", cmk_json_time(r->activated_at));
	json_object_set_new(o, "revoked_at", cmk_json_time(r->revoked_at));
	json_object_set_new(o, "supersedes", r->supersedes ? json_integer((json_int_t)r->supersedes) : json_null());
	json_object_set_new(o, "key_sealed", json_boolean(r->sealed_key != NULL));
	json_object_set_new(o, "revocation_pending", json_boolean((r->flags & CMK_CERT_F_REVOKING) != 0));
	json_object_set_new(o, "last_error", r->last_error ? json_string(r->last_error) : json_null());
	json_object_set_new(o, "certificate_path", owned_string(cmk_asprintf("/certs/%s-%s.crt", r->tenant, r->type)));
	json_object_set_new(o, "private_key_path",
			    owned_string(cmk_asprintf("/private/%s-%s.key", r->tenant, r->type)));
	json_object_set_new(o, "ca_chain_path", owned_string(cmk_asprintf("/ca/%s-ca-chain.pem", r->type)));
	if (pem) {
		json_object_set_new(o, "certificate", json_string(r->cert_pem ? r->cert_pem : ""));
		json_object_set_new(o, "ca_chain", json_string(r->chain_pem ? r->chain_pem : ""));
	}
	return o;
}

void cmk_json_step(json_t *steps, const char *step, int rc, int64_t ms, const char *detail)
{
	json_array_append_new(steps, json_pack("{s:s, s:s, s:I, s:s}", "step", step, "result", rc ? "failed" : "ok",
					       "ms", (json_int_t)ms, "detail", detail ? detail : ""));
}

void cmk_json_set_error(json_t *o, int rc, const char *operation)
{
	const char *detail = cmk_errdetail();

	if (o == NULL)
		return;
	json_object_set_new(o, "ok", json_false());
	json_object_set_new(o, "error", json_string(cmk_strerror(rc)));
	json_object_set_new(o, "detail", json_string(detail[0] ? detail : cmk_strerror(rc)));
	json_object_set_new(o, "operation", json_string(operation));
	json_object_set_new(o, "code", json_integer(rc));
}

json_t *cmk_json_error(int rc, const char *operation)
{
	json_t *o = json_object();

	cmk_json_set_error(o, rc, operation);
	return o;
}

/* The first step whose result is "failed", or NULL. */
static const char *failed_step(const json_t *steps)
{
	size_t i;
	json_t *s;

	json_array_foreach(steps, i, s) {
		const char *r = json_string_value(json_object_get(s, "result"));

		if (r != NULL && strcmp(r, "failed") == 0)
			return json_string_value(json_object_get(s, "step"));
	}
	return NULL;
}

json_t *cmk_json_add_result(const struct cmk_op_result *res, int rc, json_t *steps)
{
	json_t *w = json_array(), *o;
	const char *failed;

	for (size_t i = 0; i < res->warnings.count; i++)
		json_array_append_new(w, json_string(res->warnings.items[i]));
	if (steps == NULL)
		steps = json_array();
	o = json_pack("{s:b, s:o, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "ok", rc == 0, "id",
		      res->id ? json_integer((json_int_t)res->id) : json_null(), "status",
		      res->id ? cmk_status_name(res->status) : "none", "type", res->type, "serial_number", res->serial,
		      "fingerprint_sha256", res->fingerprint, "not_after", cmk_json_time(res->not_after), "renew_at",
		      cmk_json_time(res->renew_at), "warnings", w, "steps", steps);
	if (o != NULL && rc != 0) {
		cmk_json_set_error(o, rc, "keystore add");
		failed = failed_step(steps);
		json_object_set_new(o, "failed_step", failed ? json_string(failed) : json_null());
	}
	return o;
}

json_t *cmk_json_op_result(const char *operation, int rc, const struct cmk_op_result *res)
{
	json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:s}", "ok", rc == 0, "operation", operation, "status",
			      res->id ? cmk_status_name(res->status) : "none", "serial_number", res->serial, "type",
			      res->type);

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "id", res->id ? json_integer((json_int_t)res->id) : json_null());
	if (rc != 0)
		cmk_json_set_error(o, rc, operation);
	return o;
}
