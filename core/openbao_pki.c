/*
 * openbao_pki.c - the PKI operations on top of the client in openbao.c:
 * check a mount, read a role, issue or sign, revoke, read the CRL and a
 * certificate.  Each builds the path from names checked to be plain path
 * parts, sends the request and hands the answer to openbao_parse.c.
 *
 * In sign mode only the CSR leaves the host; in issue mode OpenBao makes
 * the key, and the answer holding it is wiped as soon as it is parsed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/http.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "openbao_int.h"

int cmk_bao_check_mount(struct cmk_bao *b, const char *mount, char **chain_pem)
{
	struct cmk_http_response resp = { 0 };
	char *path = NULL, *chain = NULL;
	int rc;

	if (chain_pem != NULL)
		*chain_pem = NULL;
	if ((rc = cmk_bao_check_path_part("PKI mount", mount, CMK_BAO_MOUNT_CHARS)) != 0)
		return rc;
	if ((path = cmk_asprintf("%s/cert/ca_chain", mount)) == NULL)
		return CMK_ERR_NOMEM;
	rc = cmk_bao_call_authed(b, "GET", path, NULL, &resp);
	if (rc == CMK_ERR_NOTFOUND)
		rc = cmk_fail(CMK_ERR_NOTFOUND, "PKI mount %s not found", mount);
	/* OpenBao checks the ACL before routing: a mount that does not exist is a 403 for most tokens. */
	if (rc == CMK_ERR_DENIED)
		rc = cmk_fail(CMK_ERR_DENIED, "PKI mount %s does not exist or the token's policies do not cover it (%s)",
			      mount, path);
	if (rc == 0 && resp.status == 200)
		rc = cmk_bao_parse_ca_chain(resp.body, resp.body_len, &chain);
	if (rc == 0 && (chain == NULL || chain[0] == '\0'))
		rc = cmk_fail(CMK_ERR_NOTFOUND, "PKI mount %s has no CA", mount);
	if (rc == 0 && chain_pem != NULL) {
		*chain_pem = chain;
		chain = NULL;
	}
	free(chain);
	free(path);
	cmk_http_response_clear(&resp);
	return rc;
}

int cmk_bao_read_role(struct cmk_bao *b, const char *mount, const char *role, struct cmk_bao_role *out)
{
	struct cmk_http_response resp = { 0 };
	char *path;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = cmk_bao_check_path_part("PKI mount", mount, CMK_BAO_MOUNT_CHARS)) != 0 ||
	    (rc = cmk_bao_check_path_part("role", role, CMK_BAO_ROLE_CHARS)) != 0)
		return rc;
	if ((path = cmk_asprintf("%s/roles/%s", mount, role)) == NULL)
		return CMK_ERR_NOMEM;
	rc = cmk_bao_call_authed(b, "GET", path, NULL, &resp);
	if (rc == CMK_ERR_NOTFOUND)
		rc = cmk_fail(CMK_ERR_NOTFOUND, "role %s not found on %s", role, mount);
	else if (rc == 0)
		rc = cmk_bao_parse_role(resp.body, resp.body_len, out);
	free(path);
	cmk_http_response_clear(&resp);
	return rc;
}

/*
 * The issue or sign request body.  In sign mode the role takes common name
 * and SANs from the CSR; sending them as well would only draw warnings.
 */
static int cert_body(const struct cmk_bao_cert_request *req, bool sign, json_t **out)
{
	json_t *o = json_object();
	char ttl[32];
	bool ok = o != NULL;

	snprintf(ttl, sizeof(ttl), "%" PRId64 "s", req->ttl);
	if (sign) {
		ok = ok && json_object_set_new(o, "csr", json_string(req->csr)) == 0;
	} else {
		ok = ok && json_object_set_new(o, "common_name", json_string(req->common_name)) == 0;
		if (req->alt_names != NULL && req->alt_names[0] != '\0')
			ok = ok && json_object_set_new(o, "alt_names", json_string(req->alt_names)) == 0;
		if (req->key_type != NULL)
			ok = ok && json_object_set_new(o, "key_type", json_string(req->key_type)) == 0;
		if (req->key_bits > 0)
			ok = ok && json_object_set_new(o, "key_bits", json_integer(req->key_bits)) == 0;
		ok = ok && json_object_set_new(o, "private_key_format", json_string("pem")) == 0;
	}
	if (req->ttl > 0)
		ok = ok && json_object_set_new(o, "ttl", json_string(ttl)) == 0;
	ok = ok && json_object_set_new(o, "format", json_string("pem")) == 0;
	if (!ok) {
		json_decref(o);
		return cmk_fail(CMK_ERR_INVALID, "openbao: cannot build the %s request (out of memory or not UTF-8)",
				sign ? "sign" : "issue");
	}
	*out = o;
	return 0;
}

static int issue_or_sign(struct cmk_bao *b, const struct cmk_bao_cert_request *req, bool sign,
			 struct cmk_bao_cert *out)
{
	struct cmk_http_response resp = { 0 };
	json_t *body = NULL;
	char *path;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = cmk_bao_check_path_part("PKI mount", req->mount, CMK_BAO_MOUNT_CHARS)) != 0 ||
	    (rc = cmk_bao_check_path_part("role", req->role, CMK_BAO_ROLE_CHARS)) != 0)
		return rc;
	if (sign ? req->csr == NULL : req->common_name == NULL)
		return cmk_fail(CMK_ERR_INVALID, "openbao: %s needs %s", sign ? "sign" : "issue",
				sign ? "a CSR" : "a common name");
	if ((path = cmk_asprintf("%s/%s/%s", req->mount, sign ? "sign" : "issue", req->role)) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = cert_body(req, sign, &body)) == 0 &&
	    (rc = cmk_bao_call_authed(b, "POST", path, body, &resp)) == 0 &&
	    (rc = cmk_bao_parse_cert(resp.body, resp.body_len, !sign, out)) == 0) {
		cmk_bao_log_warnings(path, &out->warnings);
		cmk_log(CMK_LOG_INFO, "openbao: %s: serial %s", path, out->serial_number);
	}
	free(path);
	cmk_http_response_clear(&resp);
	return rc;
}

int cmk_bao_issue(struct cmk_bao *b, const struct cmk_bao_cert_request *req, struct cmk_bao_cert *out)
{
	return issue_or_sign(b, req, false, out);
}

int cmk_bao_sign(struct cmk_bao *b, const struct cmk_bao_cert_request *req, struct cmk_bao_cert *out)
{
	return issue_or_sign(b, req, true, out);
}

int cmk_bao_revoke(struct cmk_bao *b, const char *mount, const char *serial, const char *cert_pem,
		   struct cmk_bao_revocation *out)
{
	struct cmk_http_response resp = { 0 };
	json_t *body;
	char *path;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = cmk_bao_check_path_part("PKI mount", mount, CMK_BAO_MOUNT_CHARS)) != 0)
		return rc;
	if (serial != NULL && (rc = cmk_bao_check_path_part("serial", serial, CMK_BAO_SERIAL_CHARS)) != 0)
		return rc;
	if (serial == NULL && cert_pem == NULL)
		return cmk_fail(CMK_ERR_INVALID, "openbao: revoke needs a serial or a certificate");
	if ((path = cmk_asprintf("%s/revoke", mount)) == NULL)
		return CMK_ERR_NOMEM;
	/* By PEM is the only way for certificates from no_store roles (reference §4.3). */
	body = serial != NULL ? json_pack("{s:s}", "serial_number", serial) : json_pack("{s:s}", "certificate", cert_pem);
	if (body == NULL)
		rc = cmk_fail(CMK_ERR_INVALID, "openbao: cannot build the revoke request (out of memory or not UTF-8)");
	else if ((rc = cmk_bao_call_authed(b, "POST", path, body, &resp)) == 0 &&
		 (rc = cmk_bao_parse_revocation(resp.status, resp.body, resp.body_len, out)) == 0)
		cmk_bao_log_warnings(path, &out->warnings);
	free(path);
	cmk_http_response_clear(&resp);
	return rc;
}

int cmk_bao_read_crl(struct cmk_bao *b, const char *mount, char **pem)
{
	struct cmk_http_response resp = { 0 };
	char *path;
	int rc;

	*pem = NULL;
	if ((rc = cmk_bao_check_path_part("PKI mount", mount, CMK_BAO_MOUNT_CHARS)) != 0)
		return rc;
	if ((path = cmk_asprintf("%s/crl/pem", mount)) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = cmk_bao_call_public(b, path, &resp)) != 0)
		goto out;
	/* Raw endpoints answer 204 when there is nothing to give (reference §4.4). */
	if (resp.status == 204 || resp.body_len == 0) {
		rc = cmk_fail(CMK_ERR_NOTFOUND, "PKI mount %s has no CRL", mount);
	} else if (strstr(resp.body, "-----BEGIN X509 CRL-----") == NULL) {
		rc = cmk_fail(CMK_ERR_PROTOCOL, "%s: answer is not a PEM CRL", path);
	} else if ((*pem = strdup(resp.body)) == NULL) {
		/* A copy: the body is in locked pages that only cmk_http_response_clear() releases. */
		rc = CMK_ERR_NOMEM;
	}
out:
	free(path);
	cmk_http_response_clear(&resp);
	return rc;
}

int cmk_bao_read_cert(struct cmk_bao *b, const char *mount, const char *serial, char **pem, int64_t *revocation_time)
{
	struct cmk_http_response resp = { 0 };
	char *path;
	int rc;

	*pem = NULL;
	if ((rc = cmk_bao_check_path_part("PKI mount", mount, CMK_BAO_MOUNT_CHARS)) != 0 ||
	    (rc = cmk_bao_check_path_part("serial", serial, CMK_BAO_SERIAL_CHARS)) != 0)
		return rc;
	if ((path = cmk_asprintf("%s/cert/%s", mount, serial)) == NULL)
		return CMK_ERR_NOMEM;
	rc = cmk_bao_call_public(b, path, &resp);
	if (rc == CMK_ERR_NOTFOUND)
		rc = cmk_fail(CMK_ERR_NOTFOUND, "certificate %s not found on %s", serial, mount);
	else if (rc == 0)
		rc = cmk_bao_parse_cert_read(resp.body, resp.body_len, pem, revocation_time);
	free(path);
	cmk_http_response_clear(&resp);
	return rc;
}
