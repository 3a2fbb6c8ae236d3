/*
 * test_openbao.c - the OpenBao client.
 *
 * First group: the parsers on every answer shape of the reference samples
 * (tests/unit/data/openbao), the retry delay and the token upkeep decision,
 * without a server.  Second group: the client against a scripted HTTPS
 * server, checking what goes on the wire (paths, headers, bodies) and how
 * status codes, redirects, retries and re-logins play out.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmkcert/error.h"
#include "cmkcert/http.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/openbao.h"
#include "cmkcert/util.h"
#include "data/openbao/script_server.h"
#include "openbao_int.h"

#define MOUNT "pki_client_certs"
#define ROLE "openkcm-client-cert-role"
#define K8S_TOKEN "s.Hm7WqHqJ5Dk3u1pXv6b2c9Zr"
#define JWT "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpjbWsifQ.c2lnbmF0dXJl"

/* ---- helpers ---- */

static char *fixture(const char *name, size_t *len)
{
	char path[512], *text = NULL;

	snprintf(path, sizeof(path), "%s/openbao/%s", script_server_data_dir(), name);
	if (cmk_read_file(path, 1 << 20, &text, len) != 0)
		fail_msg("cannot read fixture %s: %s", path, cmk_errdetail());
	return text;
}

/* ---- error answers ---- */

struct error_case {
	const char *file;
	long status;
	int code;
	const char *text;
};

static void test_error_answers(void **state)
{
	static const struct error_case cases[] = {
		{ "error-pki-cn-not-allowed.json", 400, CMK_ERR_REJECTED,
		  "common name evil.example.org not allowed by this role" },
		{ "error-approle-invalid-creds.json", 400, CMK_ERR_REJECTED, "invalid role or secret ID" },
		{ "error-k8s-invalid-role.json", 400, CMK_ERR_REJECTED, "invalid role name \"dev-role\"" },
		{ "error-namespace-restricted-sys.json", 400, CMK_ERR_REJECTED, "operation unavailable in namespaces" },
		{ "error-pki-revoke-serial-not-found.json", 400, CMK_ERR_REJECTED,
		  "certificate with serial 39:dd:2e:90:b7:23:1f:8d:d3:7d:31:c5:1b:da:84:d0:5b:65:31:58 not found." },
		{ "error-generic.json", 400, CMK_ERR_REJECTED, "message; another message" },
		{ "error-permission-denied.json", 403, CMK_ERR_DENIED, "permission denied" },
		{ "error-permission-denied-acl.json", 403, CMK_ERR_DENIED, "permission denied" },
		{ "error-k8s-namespace-not-authorized.json", 403, CMK_ERR_DENIED, "namespace not authorized" },
		{ "error-empty-404.json", 404, CMK_ERR_NOTFOUND, "Not Found" },
		{ "error-unsupported-path.json", 404, CMK_ERR_NOTFOUND, "unsupported path" },
		{ "error-multierror-two.json", 500, CMK_ERR_SERVER, "permission denied; unsupported path" },
		{ "error-rate-limited.json", 429, CMK_ERR_RATELIMIT,
		  "request path \"pki/issue/web-server\": rate limit quota exceeded" },
		{ "error-sealed.json", 503, CMK_ERR_SEALED, "Vault is sealed" },
		{ "error-standby-no-leader.json", 503, CMK_ERR_SEALED, "no active Vault instance found" },
	};
	char text[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		char *body = fixture(cases[i].file, &len);

		cmk_bao_error_text(cases[i].status, body, len, text, sizeof(text));
		if (strcmp(text, cases[i].text) != 0)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].file, text, cases[i].text);
		assert_int_equal(cmk_bao_fail_answer("p", cases[i].status, body, len), cases[i].code);
		free(body);
	}
}

static void test_error_detail_names_path(void **state)
{
	size_t len;
	char *body = fixture("error-pki-cn-not-allowed.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_fail_answer(MOUNT "/issue/" ROLE, 400, body, len), CMK_ERR_REJECTED);
	assert_string_equal(cmk_errdetail(),
			    MOUNT "/issue/" ROLE ": 400: common name evil.example.org not allowed by this role");
	free(body);
}

static void test_error_without_envelope(void **state)
{
	char text[128];
	const char *esc = "{\"errors\":[\"bad\\u001b[31m\\nthing\"]}";

	(void)state;
	cmk_bao_error_text(502, "<html>proxy error</html>", 24, text, sizeof(text));
	assert_string_equal(text, "Bad Gateway");
	cmk_bao_error_text(500, "", 0, text, sizeof(text));
	assert_string_equal(text, "Internal Server Error");
	cmk_bao_error_text(404, "{\"errors\":[]}", 13, text, sizeof(text));
	assert_string_equal(text, "Not Found");
	/* A server's text never brings control characters into logs. */
	cmk_bao_error_text(400, esc, strlen(esc), text, sizeof(text));
	assert_string_equal(text, "bad [31m thing");
	/* Truncated, still a string. */
	cmk_bao_error_text(400, "{\"errors\":[\"0123456789\"]}", 25, text, 5);
	assert_string_equal(text, "0123");
}

static void test_status_codes(void **state)
{
	(void)state;
	assert_int_equal(cmk_bao_status_code(405), CMK_ERR_REJECTED);
	assert_int_equal(cmk_bao_status_code(413), CMK_ERR_REJECTED);
	assert_int_equal(cmk_bao_status_code(500), CMK_ERR_SERVER);
	assert_int_equal(cmk_bao_status_code(501), CMK_ERR_SERVER);
	assert_int_equal(cmk_bao_status_code(502), CMK_ERR_SERVER);
	assert_int_equal(cmk_bao_status_code(202), CMK_ERR_PROTOCOL);
	assert_int_equal(cmk_bao_status_code(301), CMK_ERR_PROTOCOL);
	assert_true(cmk_bao_status_is_retryable(429));
	assert_true(cmk_bao_status_is_retryable(503));
	assert_true(cmk_bao_status_is_retryable(504));
	assert_false(cmk_bao_status_is_retryable(501));
	assert_false(cmk_bao_status_is_retryable(400));
	assert_false(cmk_bao_status_is_retryable(403));
}

/* ---- success answers ---- */

static void test_parse_issue(void **state)
{
	struct cmk_bao_cert c;
	size_t len;
	char *body = fixture("pki-issue-response.code-derived.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_cert(body, len, true, &c), 0);
	/* PEM exactly as returned: no trailing newline added. */
	assert_string_equal(c.certificate, "-----BEGIN CERTIFICATE-----\nMIIDzDCCAragAwIBAgIUOd0ukLcjH43TfTHFG9qE0FtlMVgwCwYJKoZIhvcNAQEL\n"
					   "...\numkqeYeO30g1uYvDuWLXVA==\n-----END CERTIFICATE-----");
	assert_string_equal(c.ca_chain, c.issuing_ca);
	assert_non_null(strstr(c.private_key, "-----BEGIN RSA PRIVATE KEY-----"));
	assert_string_equal(c.private_key_type, "rsa");
	assert_string_equal(c.serial_number, "39:dd:2e:90:b7:23:1f:8d:d3:7d:31:c5:1b:da:84:d0:5b:65:31:58");
	assert_int_equal(c.not_before, 1755921570);
	assert_int_equal(c.expiration, 1756008000);
	assert_int_equal(c.warnings.count, 0);
	cmk_bao_cert_clear(&c);
	assert_null(c.private_key);
	free(body);
}

static void test_parse_issue_chain_serial_warning(void **state)
{
	struct cmk_bao_cert c;
	size_t len;
	char *body = fixture("pki-issue-19-octet-serial.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_cert(body, len, true, &c), 0);
	assert_string_equal(c.serial_number, "7f:3a:01:9c:44:e2:5b:80:0d:12:6e:af:b3:c9:21:05:77:68:4d");
	assert_string_equal(c.ca_chain, "-----BEGIN CERTIFICATE-----\nMIIBintermediate\n-----END CERTIFICATE-----\n"
					"-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----");
	assert_string_equal(c.private_key_type, "ec");
	assert_int_equal(c.warnings.count, 1);
	assert_string_equal(c.warnings.items[0],
			    "TTL \"8760h0m0s\" is longer than permitted maxTTL \"720h0m0s\", so maxTTL is being used");
	cmk_bao_cert_clear(&c);
	free(body);
}

/* The docs' sample (a lease, "warnings": "", PEM ending in a newline) still parses, verbatim. */
static void test_parse_issue_docs_sample(void **state)
{
	struct cmk_bao_cert c;
	size_t len;
	char *body = fixture("pki-issue-response.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_cert(body, len, true, &c), 0);
	assert_int_equal(c.warnings.count, 0);
	assert_int_equal(c.certificate[strlen(c.certificate) - 1], '\n');
	assert_int_equal(c.expiration, 0);
	cmk_bao_cert_clear(&c);
	free(body);
}

static void test_parse_sign(void **state)
{
	struct cmk_bao_cert c;
	size_t len;
	char *body = fixture("pki-sign-response.code-derived.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_cert(body, len, false, &c), 0);
	assert_null(c.private_key);
	assert_null(c.private_key_type);
	assert_string_equal(c.serial_number, "39:dd:2e:90:b7:23:1f:8d:d3:7d:31:c5:1b:da:84:d0:5b:65:31:58");
	assert_int_equal(c.expiration, 1756008000);
	cmk_bao_cert_clear(&c);
	/* An issue answer must carry the key OpenBao made. */
	assert_int_equal(cmk_bao_parse_cert(body, len, true, &c), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "private_key"));
	assert_null(c.certificate);
	free(body);
}

static void test_parse_revocation(void **state)
{
	struct cmk_bao_revocation r;
	size_t len;
	char *body = fixture("pki-revoke-response.code-derived.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_revocation(200, body, len, &r), 0);
	assert_true(r.revoked);
	assert_int_equal(r.revocation_time, 1755921600);
	assert_string_equal(r.state, "revoked");
	assert_int_equal(r.warnings.count, 0);
	cmk_bao_revocation_clear(&r);
	free(body);

	/* Expired: 200 with data null and a warning is an outcome, not an error. */
	body = fixture("pki-revoke-expired-response.code-derived.json", &len);
	assert_int_equal(cmk_bao_parse_revocation(200, body, len, &r), 0);
	assert_false(r.revoked);
	assert_int_equal(r.warnings.count, 1);
	assert_non_null(strstr(r.warnings.items[0], "already expired; refusing to add to CRL"));
	cmk_bao_revocation_clear(&r);
	free(body);

	assert_int_equal(cmk_bao_parse_revocation(204, "", 0, &r), 0);
	assert_false(r.revoked);
	assert_int_equal(r.warnings.count, 0);
}

static void test_parse_auth(void **state)
{
	struct cmk_bao_auth a;
	size_t len;
	char *body = fixture("k8s-login-response.code-derived.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_auth(body, len, &a), 0);
	assert_string_equal(a.client_token, K8S_TOKEN);
	assert_int_equal(a.lease_duration, 3600);
	assert_true(a.renewable);
	cmk_bao_auth_clear(&a);
	free(body);

	body = fixture("approle-login-response.json", &len);
	assert_int_equal(cmk_bao_parse_auth(body, len, &a), 0);
	assert_string_equal(a.client_token, "5b1a0318-679c-9c45-e5c6-d1b9a9035d49");
	assert_int_equal(a.lease_duration, 1200);
	cmk_bao_auth_clear(&a);
	free(body);

	body = fixture("token-renew-self-response.json", &len);
	assert_int_equal(cmk_bao_parse_auth(body, len, &a), 0);
	assert_int_equal(a.lease_duration, 3600);
	assert_int_equal(a.warnings.count, 0);
	cmk_bao_auth_clear(&a);
	free(body);

	body = fixture("token-renew-self-capped.json", &len);
	assert_int_equal(cmk_bao_parse_auth(body, len, &a), 0);
	assert_int_equal(a.lease_duration, 1200);
	assert_int_equal(a.warnings.count, 1);
	assert_non_null(strstr(a.warnings.items[0], "TTL value is capped accordingly"));
	cmk_bao_auth_clear(&a);
	free(body);
}

static void test_parse_lookup(void **state)
{
	struct cmk_bao_token_info ti;
	int64_t created = 0;
	size_t len;
	char *body = fixture("token-lookup-self-response.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_lookup(body, len, &ti, &created), 0);
	assert_int_equal(ti.ttl, 2764790);
	assert_int_equal(created, 2764800);
	assert_true(ti.renewable);
	assert_string_equal(ti.policies, "default,testgroup2-policy");
	assert_string_equal(ti.accessor, "8609694a-cdbc-db9b-d345-e782dbb562ed");
	free(body);
}

static void test_parse_lookup_long_policy_list(void **state)
{
	struct cmk_bao_token_info ti;
	char body[2048];
	int n;

	(void)state;
	n = snprintf(body, sizeof(body), "{\"data\":{\"ttl\":5,\"policies\":[");
	for (int i = 0; i < 40; i++)
		n += snprintf(body + n, sizeof(body) - (size_t)n, "%s\"policy-number-%02d\"", i ? "," : "", i);
	snprintf(body + n, sizeof(body) - (size_t)n, "]}}");
	assert_int_equal(cmk_bao_parse_lookup(body, strlen(body), &ti, NULL), 0);
	assert_true(strlen(ti.policies) < sizeof(ti.policies));
	assert_memory_equal(ti.policies, "policy-number-00,policy-number-01,", 34);
	assert_string_equal(ti.policies + strlen(ti.policies) - 4, ",...");
}

static void test_parse_role(void **state)
{
	struct cmk_bao_role r;
	size_t len;
	char *body = fixture("pki-role-read-response.code-derived.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_role(body, len, &r), 0);
	assert_string_equal(r.key_type, "rsa");
	assert_int_equal(r.key_bits, 2048);
	assert_int_equal(r.ttl, 0);
	assert_int_equal(r.max_ttl, 0);
	assert_true(r.client_flag);
	assert_false(r.no_store);
	assert_true(r.use_csr_common_name);
	assert_true(r.allow_subdomains);
	assert_false(r.allow_any_name);
	assert_int_equal(r.n_allowed_domains, 1);
	assert_string_equal(r.allowed_domains[0], "example.com");
	cmk_bao_role_clear(&r);
	free(body);

	/* The docs show ttl as "6h"; the server sends integers, and a string means something is off. */
	body = fixture("pki-role-read-response.json", &len);
	assert_int_equal(cmk_bao_parse_role(body, len, &r), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "\"ttl\""));
	assert_null(r.allowed_domains);
	free(body);

	body = "{\"data\":{\"key_type\":\"ec\",\"key_bits\":256,\"ttl\":3600,\"max_ttl\":86400,\"client_flag\":false,"
	       "\"allowed_domains\":null}}";
	assert_int_equal(cmk_bao_parse_role(body, strlen(body), &r), 0);
	assert_int_equal(r.ttl, 3600);
	assert_int_equal(r.max_ttl, 86400);
	assert_false(r.client_flag);
	assert_int_equal(r.n_allowed_domains, 0);
	cmk_bao_role_clear(&r);
}

static void test_parse_ca_chain_and_cert_read(void **state)
{
	char *chain = NULL, *pem = NULL;
	int64_t when = -1;
	size_t len;
	char *body = fixture("pki-cert-ca_chain.code-derived.json", &len);

	(void)state;
	assert_int_equal(cmk_bao_parse_ca_chain(body, len, &chain), 0);
	assert_string_equal(chain, "-----BEGIN CERTIFICATE-----\nMIIDUTCCAjmgAwIBAgIJAKM+z4MSfw2mMA0GCSqGSIb3DQEBCwUAMBsxGTAXBgNV\n"
				   "...\nG/7g4koczXLoUM3OQXd5Aq2cs4SS1vODrYmgbioFsQ3eDHd1fg==\n-----END CERTIFICATE-----");
	free(chain);
	free(body);

	body = fixture("pki-cert-read-response.json", &len);
	assert_int_equal(cmk_bao_parse_cert_read(body, len, &pem, &when), 0);
	assert_int_equal(when, 1667400107);
	assert_non_null(strstr(pem, "BEGIN CERTIFICATE"));
	free(pem);
	free(body);

	body = fixture("pki-cert-read-not-revoked.code-derived.json", &len);
	assert_int_equal(cmk_bao_parse_cert_read(body, len, &pem, &when), 0);
	assert_int_equal(when, 0);
	free(pem);
	free(body);
}

static void test_parse_health(void **state)
{
	static const struct {
		const char *file;
		bool initialized, sealed, standby;
		const char *version;
	} cases[] = {
		{ "health-active-response.json", true, false, false, "0.9.2" },
		{ "health-sealed.json", true, true, true, "2.6.2" },
		{ "health-standby-response.json", true, false, true, "2.6.2" },
		{ "health-uninitialized-response.json", false, true, true, "2.6.2" },
	};
	struct cmk_bao_health h;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		char *body = fixture(cases[i].file, &len);

		assert_int_equal(cmk_bao_parse_health(body, len, &h), 0);
		assert_int_equal(h.initialized, cases[i].initialized);
		assert_int_equal(h.sealed, cases[i].sealed);
		assert_int_equal(h.standby, cases[i].standby);
		assert_string_equal(h.version, cases[i].version);
		free(body);
	}
}

static void test_malformed_answers(void **state)
{
	struct cmk_bao_cert c;
	struct cmk_bao_auth a;
	struct cmk_bao_health h;
	struct cmk_bao_revocation r;
	const char *s;

	(void)state;
	s = "{\"data\": {\"certificate\": \"x\"";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	s = "[1, 2]";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	assert_int_equal(cmk_bao_parse_cert("", 0, false, &c), CMK_ERR_PROTOCOL);
	s = "{\"data\": null, \"warnings\": null}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	s = "{\"data\": {\"serial_number\": \"01:02\"}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "\"certificate\""));
	s = "{\"data\": {\"certificate\": \"c\"}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "\"serial_number\""));
	s = "{\"data\": {\"certificate\": \"c\", \"serial_number\": 12}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	s = "{\"data\": {\"certificate\": \"c\", \"serial_number\": \"01\", \"ca_chain\": [\"a\", 2]}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	s = "{\"data\": {\"certificate\": \"c\", \"serial_number\": \"01\", \"expiration\": \"soon\"}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	s = "{\"data\": {\"certificate\": \"c\", \"serial_number\": \"01\"}, \"warnings\": {\"a\": 1}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	s = "{\"data\": \"not an object\"}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	/* Duplicate keys could smuggle a second value past a reader. */
	s = "{\"data\": {\"certificate\": \"c\", \"serial_number\": \"01\", \"serial_number\": \"02\"}}";
	assert_int_equal(cmk_bao_parse_cert(s, strlen(s), false, &c), CMK_ERR_PROTOCOL);
	assert_null(c.certificate);

	s = "{\"auth\": null, \"data\": null}";
	assert_int_equal(cmk_bao_parse_auth(s, strlen(s), &a), CMK_ERR_PROTOCOL);
	s = "{\"auth\": {\"client_token\": \"s.abc\"}}";
	assert_int_equal(cmk_bao_parse_auth(s, strlen(s), &a), CMK_ERR_PROTOCOL);
	/* A token goes into a header line: a newline in it would add a header. */
	s = "{\"auth\": {\"client_token\": \"s.abc\\r\\nX-Evil: 1\", \"lease_duration\": 60}}";
	assert_int_equal(cmk_bao_parse_auth(s, strlen(s), &a), CMK_ERR_PROTOCOL);
	assert_null(a.client_token);
	/* Detail never quotes the answer (it may hold the token). */
	assert_null(strstr(cmk_errdetail(), "s.abc"));

	s = "{\"initialized\": \"yes\", \"sealed\": false}";
	assert_int_equal(cmk_bao_parse_health(s, strlen(s), &h), CMK_ERR_PROTOCOL);
	s = "{\"sealed\": false}";
	assert_int_equal(cmk_bao_parse_health(s, strlen(s), &h), CMK_ERR_PROTOCOL);

	s = "{\"data\": {\"state\": \"revoked\"}}";
	assert_int_equal(cmk_bao_parse_revocation(200, s, strlen(s), &r), CMK_ERR_PROTOCOL);
	assert_int_equal(cmk_bao_parse_revocation(200, "", 0, &r), CMK_ERR_PROTOCOL);
}

/* ---- policies ---- */

static void test_backoff(void **state)
{
	(void)state;
	/* Full jitter: the delay spans [0, ceiling]. */
	assert_int_equal(cmk_bao_backoff_ms(0, -1, 0), 0);
	assert_int_equal(cmk_bao_backoff_ms(0, -1, UINT32_MAX), 250);
	assert_int_equal(cmk_bao_backoff_ms(1, -1, UINT32_MAX), 500);
	assert_int_equal(cmk_bao_backoff_ms(2, -1, UINT32_MAX / 2 + 1), 500);
	assert_int_equal(cmk_bao_backoff_ms(5, -1, UINT32_MAX), 8000);
	/* Capped at 10 s, however many attempts. */
	assert_int_equal(cmk_bao_backoff_ms(6, -1, UINT32_MAX), 10000);
	assert_int_equal(cmk_bao_backoff_ms(1000, -1, UINT32_MAX), 10000);
	/* Retry-After is honoured as given, up to 60 s. */
	assert_int_equal(cmk_bao_backoff_ms(0, 7, 0), 7000);
	assert_int_equal(cmk_bao_backoff_ms(3, 0, UINT32_MAX), 0);
	assert_int_equal(cmk_bao_backoff_ms(0, 600, 0), 60000);
}

static void test_token_action(void **state)
{
	(void)state;
	assert_int_equal(cmk_bao_token_action(false, 3600, true, 0), CMK_BAO_TOKEN_LOGIN);
	assert_int_equal(cmk_bao_token_action(true, 3600, true, 0), CMK_BAO_TOKEN_KEEP);
	/* Exactly a third left: still fine. */
	assert_int_equal(cmk_bao_token_action(true, 3600, true, 2400 * 1000), CMK_BAO_TOKEN_KEEP);
	assert_int_equal(cmk_bao_token_action(true, 3600, true, 2401 * 1000), CMK_BAO_TOKEN_RENEW);
	assert_int_equal(cmk_bao_token_action(true, 3600, false, 2401 * 1000), CMK_BAO_TOKEN_LOGIN);
	assert_int_equal(cmk_bao_token_action(true, 3600, true, 3600 * 1000), CMK_BAO_TOKEN_LOGIN);
	/* A token without TTL (root) never needs anything. */
	assert_int_equal(cmk_bao_token_action(true, 0, false, INT64_C(1) << 40), CMK_BAO_TOKEN_KEEP);
}

/* ---- the client against a scripted server ---- */

static struct script_server srv;
static char creds[64];
static struct cmk_config cfg;
static struct cmk_bao *bao;
static json_t *queue;
static int64_t delays[16];
static size_t n_delays;
static char logs[65536];

static void record_sleep(int64_t ms)
{
	if (n_delays < sizeof(delays) / sizeof(delays[0]))
		delays[n_delays] = ms;
	n_delays++;
}

static void capture_log(enum cmk_log_level level, const char *msg, void *arg)
{
	size_t used = strlen(logs);

	(void)level;
	(void)arg;
	snprintf(logs + used, sizeof(logs) - used, "%s\n", msg);
}

static void write_cred(const char *name, const char *text)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%s", creds, name);
	assert_int_equal(cmk_write_file_atomic(path, text, strlen(text), 0600), 0);
}

static char *cred_path(const char *name)
{
	return cmk_asprintf("%s/%s", creds, name);
}

static int client_group_setup(void **state)
{
	(void)state;
	if (cmk_http_global_init() != 0 || script_server_start(&srv) != 0)
		return -1;
	snprintf(creds, sizeof(creds), "/tmp/cmk-creds-XXXXXX");
	if (mkdtemp(creds) == NULL)
		return -1;
	cmk_bao_set_sleep(record_sleep);
	cmk_set_log(capture_log, NULL, CMK_LOG_DEBUG);
	return 0;
}

static int client_group_teardown(void **state)
{
	static const char *const files[] = { "sa.jwt", "role_id", "secret_id", "token" };
	char path[128];

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", creds, files[i]);
		unlink(path);
	}
	rmdir(creds);
	script_server_stop(&srv);
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	cmk_bao_set_sleep(NULL);
	cmk_http_global_cleanup();
	return 0;
}

/* Each test: a kubernetes client with 3 retries, an empty queue, no delays or logs yet. */
static int client_setup(void **state)
{
	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.openbao.address = srv.url;
	cfg.openbao.ca_cert = srv.ca;
	cfg.openbao.timeout = 5;
	cfg.openbao.pki_mount = MOUNT;
	cfg.openbao.role = ROLE;
	cfg.openbao.max_retries = 3;
	cfg.auth.method = CMK_AUTH_KUBERNETES;
	cfg.auth.mount = "kubernetes";
	cfg.auth.role = "cmk-api-server-role";
	cfg.auth.jwt_path = cred_path("sa.jwt");
	/* As Kubernetes writes it: with a trailing newline that must not reach the server. */
	write_cred("sa.jwt", JWT "\n");
	queue = json_array();
	n_delays = 0;
	logs[0] = '\0';
	bao = NULL;
	return 0;
}

static int client_teardown(void **state)
{
	(void)state;
	cmk_bao_free(bao);
	bao = NULL;
	free(cfg.auth.jwt_path);
	free(cfg.auth.role_id_path);
	free(cfg.auth.secret_id_path);
	free(cfg.auth.token_path);
	json_decref(queue);
	/* Whatever happened, no secret reached the log. */
	assert_null(strstr(logs, K8S_TOKEN));
	assert_null(strstr(logs, JWT));
	assert_null(strstr(logs, "PRIVATE KEY"));
	return 0;
}

/* Queue an answer: `status` with body `text` (NULL = none) and extra `headers` ({"Name": "value"} or NULL). */
static void answer(int status, const char *text, const char *headers)
{
	json_t *e = json_pack("{s:i}", "status", status);

	if (text != NULL)
		json_object_set_new(e, "body", json_string(text));
	if (headers != NULL)
		json_object_set_new(e, "headers", json_loads(headers, 0, NULL));
	json_array_append_new(queue, e);
}

static void answer_file(int status, const char *name)
{
	size_t len;
	char *text = fixture(name, &len);

	answer(status, text, NULL);
	free(text);
}

static void answer_raw(const char *entry)
{
	json_array_append_new(queue, json_loads(entry, 0, NULL));
}

/* Hand the queued answers to the server (the queue starts empty again) and make the client. */
static void go(void)
{
	char *text = json_dumps(queue, 0);

	assert_int_equal(script_server_queue(&srv, text), 0);
	free(text);
	json_array_clear(queue);
	if (bao == NULL)
		assert_int_equal(cmk_bao_new(&cfg, &bao), 0);
}

static void assert_stats(uint64_t requests, uint64_t retries, uint64_t logins)
{
	struct cmk_bao_stats st;

	cmk_bao_get_stats(bao, &st);
	assert_int_equal(st.requests, requests);
	assert_int_equal(st.retries, retries);
	assert_int_equal(st.logins, logins);
}

/* The n-th request the server saw (0-based), as parsed JSON; NULL when there were fewer. */
static json_t *request(size_t n)
{
	char *all = script_server_requests(&srv), *line = all, *nl;
	json_t *v = NULL;

	for (size_t i = 0; line != NULL && *line != '\0'; i++, line = nl + 1) {
		nl = strchr(line, '\n');
		if (i == n) {
			assert_int_equal(cmk_json_parse("request log", line, (size_t)(nl - line), &v), 0);
			break;
		}
	}
	free(all);
	return v;
}

static size_t request_count(void)
{
	char *all = script_server_requests(&srv);
	size_t n = 0;

	for (char *p = all; *p != '\0'; p++)
		n += *p == '\n';
	free(all);
	return n;
}

/* Header `name` (lower case) of a logged request, NULL when absent. */
static const char *header(const json_t *req, const char *name)
{
	return json_string_value(json_object_get(json_object_get(req, "headers"), name));
}

static void assert_request(const json_t *req, const char *method, const char *path)
{
	assert_non_null(req);
	assert_string_equal(json_string_value(json_object_get(req, "method")), method);
	assert_string_equal(json_string_value(json_object_get(req, "path")), path);
	assert_string_equal(header(req, "x-vault-request"), "true");
}

/* The JSON body of a logged request. */
static json_t *request_body(const json_t *req)
{
	const char *text = json_string_value(json_object_get(req, "body"));
	json_t *v = NULL;

	assert_int_equal(cmk_json_parse("request body", text, strlen(text), &v), 0);
	return v;
}

static const char *field(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

static void issue_request(struct cmk_bao_cert_request *req)
{
	memset(req, 0, sizeof(*req));
	req->mount = MOUNT;
	req->role = ROLE;
	req->common_name = "tenant-acme-thales.keystore.internal";
	req->alt_names = "tenant-acme.internal,acme.keystore.internal";
	req->ttl = 8760 * 3600;
	req->key_type = "rsa";
	req->key_bits = 4096;
}

static void test_issue_with_kubernetes_login(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;
	json_t *r, *body;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "pki-issue-19-octet-serial.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), 0);
	assert_string_equal(c.serial_number, "7f:3a:01:9c:44:e2:5b:80:0d:12:6e:af:b3:c9:21:05:77:68:4d");
	assert_int_equal(c.warnings.count, 1);
	cmk_bao_cert_clear(&c);
	assert_stats(2, 0, 1);

	r = request(0);
	assert_request(r, "POST", "/v1/auth/kubernetes/login");
	assert_null(header(r, "x-vault-token"));
	assert_string_equal(header(r, "content-type"), "application/json");
	body = request_body(r);
	assert_string_equal(field(body, "role"), "cmk-api-server-role");
	assert_string_equal(field(body, "jwt"), JWT);
	json_decref(body);
	json_decref(r);

	r = request(1);
	assert_request(r, "POST", "/v1/" MOUNT "/issue/" ROLE);
	assert_string_equal(header(r, "x-vault-token"), K8S_TOKEN);
	assert_null(header(r, "x-vault-namespace"));
	body = request_body(r);
	assert_string_equal(field(body, "common_name"), "tenant-acme-thales.keystore.internal");
	assert_string_equal(field(body, "alt_names"), "tenant-acme.internal,acme.keystore.internal");
	assert_string_equal(field(body, "ttl"), "31536000s");
	assert_string_equal(field(body, "key_type"), "rsa");
	assert_int_equal(json_integer_value(json_object_get(body, "key_bits")), 4096);
	assert_string_equal(field(body, "format"), "pem");
	assert_string_equal(field(body, "private_key_format"), "pem");
	json_decref(body);
	json_decref(r);
	/* The TTL truncation warning reaches the operator. */
	assert_non_null(strstr(logs, "maxTTL"));
}

static void test_sign_sends_only_the_csr(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;
	json_t *r, *body;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "pki-sign-response.code-derived.json");
	go();
	issue_request(&req);
	req.csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----";
	assert_int_equal(cmk_bao_sign(bao, &req, &c), 0);
	assert_null(c.private_key);
	cmk_bao_cert_clear(&c);

	r = request(1);
	assert_request(r, "POST", "/v1/" MOUNT "/sign/" ROLE);
	body = request_body(r);
	assert_string_equal(field(body, "csr"), req.csr);
	assert_string_equal(field(body, "ttl"), "31536000s");
	assert_string_equal(field(body, "format"), "pem");
	assert_null(json_object_get(body, "common_name"));
	assert_null(json_object_get(body, "alt_names"));
	assert_null(json_object_get(body, "key_type"));
	assert_null(json_object_get(body, "private_key_format"));
	json_decref(body);
	json_decref(r);
}

static void test_namespace_never_on_health(void **state)
{
	struct cmk_bao_health h;
	struct cmk_bao_role role;
	json_t *r;

	(void)state;
	cfg.openbao.namespace_ = "tenants/eu";
	answer_file(200, "health-active-response.json");
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "pki-role-read-response.code-derived.json");
	go();
	assert_int_equal(cmk_bao_health(bao, &h), 0);
	assert_int_equal(cmk_bao_read_role(bao, MOUNT, ROLE, &role), 0);
	cmk_bao_role_clear(&role);

	r = request(0);
	assert_request(r, "GET", "/v1/sys/health?standbyok=true&sealedcode=503&uninitcode=501");
	assert_null(header(r, "x-vault-namespace"));
	assert_null(header(r, "x-vault-token"));
	json_decref(r);
	r = request(1);
	assert_string_equal(header(r, "x-vault-namespace"), "tenants/eu");
	json_decref(r);
	r = request(2);
	assert_request(r, "GET", "/v1/" MOUNT "/roles/" ROLE);
	assert_string_equal(header(r, "x-vault-namespace"), "tenants/eu");
	json_decref(r);
}

static void test_health_states_are_answers(void **state)
{
	struct cmk_bao_health h;

	(void)state;
	answer_file(503, "health-sealed.json");
	answer_file(501, "health-uninitialized-response.json");
	answer_file(400, "error-namespace-restricted-sys.json");
	go();
	assert_int_equal(cmk_bao_health(bao, &h), 0);
	assert_int_equal(h.status, 503);
	assert_true(h.sealed);
	assert_int_equal(cmk_bao_health(bao, &h), 0);
	assert_int_equal(h.status, 501);
	assert_false(h.initialized);
	/* Not a health body: the status decides. */
	assert_int_equal(cmk_bao_health(bao, &h), CMK_ERR_REJECTED);
	assert_string_equal(cmk_errdetail(), "sys/health: 400: operation unavailable in namespaces");
	/* No retries for states, no login for health. */
	assert_stats(3, 0, 0);
}

static void test_sealed_retried_then_succeeds(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(503, "error-sealed.json");
	answer_file(502, "error-generic.json");
	answer_file(200, "pki-issue-response.code-derived.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), 0);
	cmk_bao_cert_clear(&c);
	assert_stats(4, 2, 1);
	assert_int_equal(n_delays, 2);
	assert_in_range(delays[0], 0, 250);
	assert_in_range(delays[1], 0, 500);
	/* The same request went again. */
	for (size_t i = 1; i < 4; i++) {
		json_t *r = request(i);
		assert_request(r, "POST", "/v1/" MOUNT "/issue/" ROLE);
		json_decref(r);
	}
}

static void test_sealed_after_every_retry(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_raw("{\"status\": 503, \"body\": \"{\\\"errors\\\":[\\\"Vault is sealed\\\"]}\", \"times\": 4}");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_SEALED);
	assert_string_equal(cmk_errdetail(), MOUNT "/issue/" ROLE ": 503: Vault is sealed");
	assert_null(c.certificate);
	/* First try plus max_retries, with growing ceilings. */
	assert_stats(5, 3, 1);
	assert_int_equal(n_delays, 3);
	assert_in_range(delays[0], 0, 250);
	assert_in_range(delays[1], 0, 500);
	assert_in_range(delays[2], 0, 1000);
}

static void test_rate_limit_honours_retry_after(void **state)
{
	struct cmk_bao_role role;
	size_t len;
	char *body = fixture("error-rate-limited.json", &len);

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer(429, body, "{\"Retry-After\": \"2\"}");
	answer(429, body, "{\"Retry-After\": \"3600\"}");
	answer(429, body, NULL);
	answer(429, body, "{\"Retry-After\": \"1\"}");
	free(body);
	go();
	assert_int_equal(cmk_bao_read_role(bao, MOUNT, ROLE, &role), CMK_ERR_RATELIMIT);
	assert_non_null(strstr(cmk_errdetail(), "429: request path \"pki/issue/web-server\": rate limit quota exceeded"));
	assert_int_equal(n_delays, 3);
	assert_int_equal(delays[0], 2000);
	assert_int_equal(delays[1], 60000);
	assert_in_range(delays[2], 0, 1000);
}

static void test_server_error_after_every_retry(void **state)
{
	struct cmk_bao_role role;

	(void)state;
	cfg.openbao.max_retries = 1;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer(500, "{\"errors\":[\"1 error occurred:\\n\\t* internal error\\n\\n\"]}", NULL);
	answer(504, "", NULL);
	go();
	assert_int_equal(cmk_bao_read_role(bao, MOUNT, ROLE, &role), CMK_ERR_SERVER);
	assert_string_equal(cmk_errdetail(), MOUNT "/roles/" ROLE ": 504: Gateway Timeout");
	assert_stats(3, 1, 1);
}

static void test_rejection_is_not_retried(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(400, "error-pki-cn-not-allowed.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_REJECTED);
	assert_string_equal(cmk_errdetail(),
			    MOUNT "/issue/" ROLE ": 400: common name evil.example.org not allowed by this role");
	assert_stats(2, 0, 1);
	assert_int_equal(n_delays, 0);
}

static void test_forbidden_logs_in_again_once(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;
	json_t *r;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(403, "error-permission-denied.json");
	answer(200, "{\"auth\":{\"client_token\":\"s.SecondLoginToken00000000\",\"lease_duration\":3600,"
		    "\"renewable\":true},\"data\":null,\"warnings\":null}", NULL);
	answer_file(200, "pki-issue-response.code-derived.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), 0);
	cmk_bao_cert_clear(&c);
	assert_stats(4, 0, 2);
	r = request(2);
	assert_request(r, "POST", "/v1/auth/kubernetes/login");
	json_decref(r);
	r = request(3);
	assert_request(r, "POST", "/v1/" MOUNT "/issue/" ROLE);
	assert_string_equal(header(r, "x-vault-token"), "s.SecondLoginToken00000000");
	json_decref(r);
	assert_null(strstr(logs, "s.SecondLoginToken"));
}

static void test_forbidden_twice_is_denied(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(403, "error-permission-denied-acl.json");
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(403, "error-permission-denied-acl.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_DENIED);
	assert_string_equal(cmk_errdetail(), MOUNT "/issue/" ROLE ": 403: permission denied");
	assert_stats(4, 0, 2);
}

static void test_login_failures(void **state)
{
	(void)state;
	answer_file(400, "error-k8s-invalid-role.json");
	answer_file(403, "error-k8s-namespace-not-authorized.json");
	go();
	assert_int_equal(cmk_bao_login(bao), CMK_ERR_REJECTED);
	assert_string_equal(cmk_errdetail(), "auth/kubernetes/login: 400: invalid role name \"dev-role\"");
	/* A refused login is not retried with the same JWT, and not retried as a re-login either. */
	assert_int_equal(cmk_bao_login(bao), CMK_ERR_DENIED);
	assert_string_equal(cmk_errdetail(), "auth/kubernetes/login: 403: namespace not authorized");
	assert_stats(2, 0, 0);
}

static void test_missing_jwt_file(void **state)
{
	(void)state;
	free(cfg.auth.jwt_path);
	cfg.auth.jwt_path = cred_path("absent.jwt");
	go();
	/* The file is named by the configuration: that is what to fix. */
	assert_int_equal(cmk_bao_login(bao), CMK_ERR_CONFIG);
	assert_non_null(strstr(cmk_errdetail(), "jwt_path"));
	assert_non_null(strstr(cmk_errdetail(), "absent.jwt"));
	assert_stats(0, 0, 0);
}

static void test_approle_login(void **state)
{
	json_t *r, *body;

	(void)state;
	cfg.auth.method = CMK_AUTH_APPROLE;
	cfg.auth.mount = "approle";
	cfg.auth.role_id_path = cred_path("role_id");
	cfg.auth.secret_id_path = cred_path("secret_id");
	write_cred("role_id", "  db02de05-fa39-4855-059b-67221c5c2f63\n");
	write_cred("secret_id", "6a174c20-f6de-a53c-74d2-6018fcceff64\n");
	answer_file(200, "approle-login-response.json");
	answer_file(400, "error-approle-invalid-creds.json");
	go();
	assert_int_equal(cmk_bao_login(bao), 0);
	assert_int_equal(cmk_bao_login(bao), CMK_ERR_REJECTED);
	assert_string_equal(cmk_errdetail(), "auth/approle/login: 400: invalid role or secret ID");
	r = request(0);
	assert_request(r, "POST", "/v1/auth/approle/login");
	body = request_body(r);
	assert_string_equal(field(body, "role_id"), "db02de05-fa39-4855-059b-67221c5c2f63");
	assert_string_equal(field(body, "secret_id"), "6a174c20-f6de-a53c-74d2-6018fcceff64");
	json_decref(body);
	json_decref(r);
	assert_null(strstr(logs, "6a174c20"));
}

static void test_token_method_looks_up_itself(void **state)
{
	struct cmk_bao_token_info ti;
	json_t *r;

	(void)state;
	cfg.auth.method = CMK_AUTH_TOKEN;
	cfg.auth.token_path = cred_path("token");
	write_cred("token", "s.FileToken0000000000000\n");
	answer_file(200, "token-lookup-self-response.json");
	answer_file(200, "token-lookup-self-response.json");
	go();
	assert_int_equal(cmk_bao_token_lookup(bao, &ti), 0);
	assert_int_equal(ti.ttl, 2764790);
	assert_string_equal(ti.policies, "default,testgroup2-policy");
	/* One lookup to log in, one for the caller. */
	assert_stats(2, 0, 1);
	r = request(0);
	assert_request(r, "GET", "/v1/auth/token/lookup-self");
	assert_string_equal(header(r, "x-vault-token"), "s.FileToken0000000000000");
	json_decref(r);
	assert_null(strstr(logs, "s.FileToken"));
}

static void test_token_renewed_before_expiry(void **state)
{
	struct timespec pause = { 2, 200000000 };
	json_t *r, *body;

	(void)state;
	answer(200, "{\"auth\":{\"client_token\":\"s.ShortLived00000000000000\",\"lease_duration\":3,"
		    "\"renewable\":true},\"data\":null}", NULL);
	answer_file(403, "error-permission-denied.json");
	answer(200, "{\"auth\":{\"client_token\":\"s.ShortLived00000000000001\",\"lease_duration\":3,"
		    "\"renewable\":true},\"data\":null}", NULL);
	answer_file(200, "token-renew-self-capped.json");
	go();
	assert_int_equal(cmk_bao_ensure_token(bao), 0);
	assert_int_equal(cmk_bao_ensure_token(bao), 0);
	assert_stats(1, 0, 1);
	/* Less than a third of 3 s left: renew; the renewal is refused, so log in again. */
	nanosleep(&pause, NULL);
	assert_int_equal(cmk_bao_ensure_token(bao), 0);
	assert_stats(3, 0, 2);
	r = request(1);
	assert_request(r, "POST", "/v1/auth/token/renew-self");
	assert_string_equal(header(r, "x-vault-token"), "s.ShortLived00000000000000");
	body = request_body(r);
	assert_string_equal(field(body, "increment"), "3s");
	json_decref(body);
	json_decref(r);
	/* Again near expiry: this renewal works, no login. */
	nanosleep(&pause, NULL);
	assert_int_equal(cmk_bao_ensure_token(bao), 0);
	assert_stats(4, 0, 2);
	r = request(3);
	assert_request(r, "POST", "/v1/auth/token/renew-self");
	assert_string_equal(header(r, "x-vault-token"), "s.ShortLived00000000000001");
	json_decref(r);
	assert_non_null(strstr(logs, "TTL value is capped accordingly"));
}

static int token_events[2];

static void count_token_event(struct cmk_bao *b, enum cmk_bao_token_event ev, void *arg)
{
	(void)b;
	(void)arg;
	token_events[ev]++;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A token handed from one client to another keeps its age: fresh, due for renewal, or expired. */
static void test_token_state_passes_between_clients(void **state)
{
	struct cmk_bao_token_state ts = { 0 };
	struct cmk_bao *other = NULL;
	json_t *r;

	(void)state;
	memset(token_events, 0, sizeof(token_events));
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "token-renew-self-response.json");
	go();
	cmk_bao_on_token(bao, count_token_event, NULL);
	assert_int_equal(cmk_bao_token_export(bao, &ts), CMK_ERR_NOTFOUND);
	assert_false(cmk_bao_token_fresh(bao));
	assert_int_equal(cmk_bao_ensure_token(bao), 0);
	assert_int_equal(token_events[CMK_BAO_TOKEN_LOGGED_IN], 1);
	assert_int_equal(cmk_bao_token_export(bao, &ts), 0);
	assert_string_equal(ts.token, K8S_TOKEN);
	assert_int_equal(ts.ttl, 3600);
	assert_true(ts.renewable);
	assert_true(ts.granted_ms <= wall_ms() && ts.granted_ms > wall_ms() - 5000);

	/* Another client starts with it: no login, the same token on the wire. */
	assert_int_equal(cmk_bao_new(&cfg, &other), 0);
	cmk_bao_on_token(other, count_token_event, NULL);
	assert_int_equal(cmk_bao_token_import(other, &ts), 0);
	assert_true(cmk_bao_token_fresh(other));
	/* Granted 41 minutes ago: less than a third of the hour is left, so it is renewed, not replaced. */
	ts.granted_ms = wall_ms() - 41 * 60 * 1000;
	assert_int_equal(cmk_bao_token_import(other, &ts), 0);
	assert_false(cmk_bao_token_fresh(other));
	assert_int_equal(cmk_bao_ensure_token(other), 0);
	assert_int_equal(token_events[CMK_BAO_TOKEN_RENEWED], 1);
	r = request(1);
	assert_request(r, "POST", "/v1/auth/token/renew-self");
	assert_string_equal(header(r, "x-vault-token"), K8S_TOKEN);
	json_decref(r);
	assert_true(cmk_bao_token_fresh(other));
	/* Granted two hours ago: it expired; the next call logs in. */
	ts.granted_ms = wall_ms() - 2 * 3600 * 1000;
	assert_int_equal(cmk_bao_token_import(other, &ts), 0);
	assert_false(cmk_bao_token_fresh(other));
	cmk_bao_token_state_clear(&ts);
	assert_null(ts.token);
	cmk_bao_free(other);
	assert_null(strstr(logs, K8S_TOKEN));
}

static void test_redirect_followed_once(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;
	char location[256];
	json_t *r, *first, *second;

	(void)state;
	snprintf(location, sizeof(location), "{\"Location\": \"%s/v1/%s/issue/%s?from=standby\"}", srv.url, MOUNT,
		 ROLE);
	answer_file(200, "k8s-login-response.code-derived.json");
	answer(307, NULL, location);
	answer_file(200, "pki-issue-response.code-derived.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), 0);
	cmk_bao_cert_clear(&c);
	first = request(1);
	second = request(2);
	assert_request(second, "POST", "/v1/" MOUNT "/issue/" ROLE "?from=standby");
	assert_string_equal(header(second, "x-vault-token"), K8S_TOKEN);
	assert_string_equal(json_string_value(json_object_get(second, "body")),
			    json_string_value(json_object_get(first, "body")));
	json_decref(first);
	json_decref(second);

	/* Never to plain http, and never twice. */
	answer(307, NULL, "{\"Location\": \"http://10.0.0.9:8200/v1/x\"}");
	snprintf(location, sizeof(location), "{\"Location\": \"%s/v1/again\"}", srv.url);
	answer(307, NULL, location);
	answer(307, NULL, location);
	go();
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_PROTOCOL);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_PROTOCOL);
	assert_int_equal(request_count(), 3);
	r = request(2);
	assert_request(r, "POST", "/v1/again");
	json_decref(r);
}

/*
 * A connection closed without an answer is retried by us.  (On a reused
 * connection curl itself re-sends once, so the drop is on the first one.)
 */
static void test_dropped_connection_retried(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;

	(void)state;
	answer_raw("{\"drop\": true}");
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "pki-issue-response.code-derived.json");
	go();
	issue_request(&req);
	assert_int_equal(cmk_bao_issue(bao, &req, &c), 0);
	cmk_bao_cert_clear(&c);
	assert_stats(3, 1, 1);
}

static void test_unreachable_after_retries(void **state)
{
	struct cmk_bao_health h;

	(void)state;
	/* The test server's port after it is gone is not reliable; port 1 on loopback refuses. */
	cfg.openbao.address = "https://127.0.0.1:1";
	cfg.openbao.max_retries = 2;
	go();
	assert_int_equal(cmk_bao_health(bao, &h), CMK_ERR_UNREACHABLE);
	assert_stats(3, 2, 0);
	assert_int_equal(n_delays, 2);
}

static void test_revoke(void **state)
{
	struct cmk_bao_revocation rv;
	json_t *r, *body;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "pki-revoke-response.code-derived.json");
	answer_file(200, "pki-revoke-expired-response.code-derived.json");
	answer(204, NULL, NULL);
	go();
	assert_int_equal(cmk_bao_revoke(bao, MOUNT, "7f:3a:01:9c:44:e2:5b:80:0d:12:6e:af:b3:c9:21:05:77:68:4d", NULL,
					&rv), 0);
	assert_true(rv.revoked);
	assert_int_equal(rv.revocation_time, 1755921600);
	cmk_bao_revocation_clear(&rv);
	assert_int_equal(cmk_bao_revoke(bao, MOUNT, NULL, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
					&rv), 0);
	assert_false(rv.revoked);
	assert_int_equal(rv.warnings.count, 1);
	cmk_bao_revocation_clear(&rv);
	assert_int_equal(cmk_bao_revoke(bao, MOUNT, "01:02", NULL, &rv), 0);
	assert_false(rv.revoked);

	r = request(1);
	assert_request(r, "POST", "/v1/" MOUNT "/revoke");
	body = request_body(r);
	assert_string_equal(field(body, "serial_number"), "7f:3a:01:9c:44:e2:5b:80:0d:12:6e:af:b3:c9:21:05:77:68:4d");
	assert_null(json_object_get(body, "certificate"));
	json_decref(body);
	json_decref(r);
	r = request(2);
	body = request_body(r);
	assert_null(json_object_get(body, "serial_number"));
	assert_non_null(field(body, "certificate"));
	json_decref(body);
	json_decref(r);
	assert_int_equal(cmk_bao_revoke(bao, MOUNT, NULL, NULL, &rv), CMK_ERR_INVALID);
}

static void test_crl_and_cert_read_without_token(void **state)
{
	const char *crl = "-----BEGIN X509 CRL-----\nMIIBcrl\n-----END X509 CRL-----\n";
	char *pem = NULL;
	int64_t when = -1;
	json_t *r;

	(void)state;
	answer(200, crl, "{\"Content-Type\": \"application/x-pem-file\"}");
	answer(204, NULL, NULL);
	answer(200, "not a crl", NULL);
	answer_file(200, "pki-cert-read-response.json");
	answer_file(404, "error-empty-404.json");
	go();
	assert_int_equal(cmk_bao_read_crl(bao, MOUNT, &pem), 0);
	assert_string_equal(pem, crl);
	free(pem);
	assert_int_equal(cmk_bao_read_crl(bao, MOUNT, &pem), CMK_ERR_NOTFOUND);
	assert_null(pem);
	assert_int_equal(cmk_bao_read_crl(bao, MOUNT, &pem), CMK_ERR_PROTOCOL);
	assert_int_equal(cmk_bao_read_cert(bao, MOUNT, "39-dd-2e", &pem, &when), 0);
	assert_int_equal(when, 1667400107);
	free(pem);
	assert_int_equal(cmk_bao_read_cert(bao, MOUNT, "01:02", &pem, &when), CMK_ERR_NOTFOUND);
	assert_string_equal(cmk_errdetail(), "certificate 01:02 not found on " MOUNT);
	/* Public paths: no login happened, no token was sent. */
	assert_stats(5, 0, 0);
	r = request(0);
	assert_request(r, "GET", "/v1/" MOUNT "/crl/pem");
	assert_null(header(r, "x-vault-token"));
	json_decref(r);
	r = request(3);
	assert_request(r, "GET", "/v1/" MOUNT "/cert/39-dd-2e");
	json_decref(r);
}

static void test_check_mount(void **state)
{
	char *chain = NULL;
	size_t len;
	char *body = fixture("pki-cert-ca_chain.code-derived.json", &len);
	json_t *r;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer(200, body, NULL);
	answer_file(404, "error-unsupported-path.json");
	answer(200, "{\"data\":{\"ca_chain\":\"\",\"certificate\":\"\"}}", NULL);
	answer(204, NULL, NULL);
	/* ACL before routing: most tokens get 403 for a mount that does not exist. */
	answer_file(403, "error-permission-denied-acl.json");
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(403, "error-permission-denied-acl.json");
	free(body);
	go();
	assert_int_equal(cmk_bao_check_mount(bao, MOUNT, &chain), 0);
	assert_non_null(strstr(chain, "-----BEGIN CERTIFICATE-----"));
	free(chain);
	assert_int_equal(cmk_bao_check_mount(bao, "pki_other", &chain), CMK_ERR_NOTFOUND);
	assert_string_equal(cmk_errdetail(), "PKI mount pki_other not found");
	assert_null(chain);
	assert_int_equal(cmk_bao_check_mount(bao, MOUNT, NULL), CMK_ERR_NOTFOUND);
	assert_string_equal(cmk_errdetail(), "PKI mount " MOUNT " has no CA");
	assert_int_equal(cmk_bao_check_mount(bao, MOUNT, NULL), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_bao_check_mount(bao, "pki_gone", NULL), CMK_ERR_DENIED);
	assert_string_equal(cmk_errdetail(), "PKI mount pki_gone does not exist or the token's policies do not cover "
					     "it (pki_gone/cert/ca_chain)");
	r = request(1);
	assert_request(r, "GET", "/v1/" MOUNT "/cert/ca_chain");
	json_decref(r);
}

static void test_read_role(void **state)
{
	struct cmk_bao_role role;

	(void)state;
	answer_file(200, "k8s-login-response.code-derived.json");
	answer_file(200, "pki-role-read-response.code-derived.json");
	answer_file(404, "error-empty-404.json");
	go();
	assert_int_equal(cmk_bao_read_role(bao, MOUNT, ROLE, &role), 0);
	assert_string_equal(role.key_type, "rsa");
	assert_int_equal(role.key_bits, 2048);
	cmk_bao_role_clear(&role);
	assert_int_equal(cmk_bao_read_role(bao, MOUNT, "nope", &role), CMK_ERR_NOTFOUND);
	assert_string_equal(cmk_errdetail(), "role nope not found on " MOUNT);
}

/* Names reach a URL path: anything that could leave the mount is refused before a request. */
static void test_names_checked_before_sending(void **state)
{
	struct cmk_bao_cert_request req;
	struct cmk_bao_cert c;
	struct cmk_bao_revocation rv;
	char *pem = NULL;

	(void)state;
	go();
	issue_request(&req);
	req.role = "../../sys/seal";
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_INVALID);
	req.role = ROLE;
	req.mount = "pki/";
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_INVALID);
	req.mount = "pki?x=1";
	assert_int_equal(cmk_bao_issue(bao, &req, &c), CMK_ERR_INVALID);
	assert_int_equal(cmk_bao_revoke(bao, MOUNT, "01:02/../x", NULL, &rv), CMK_ERR_INVALID);
	assert_int_equal(cmk_bao_read_cert(bao, MOUNT, "01 02", &pem, NULL), CMK_ERR_INVALID);
	assert_stats(0, 0, 0);
}

static void test_new_checks_config(void **state)
{
	struct cmk_bao *b = NULL;

	(void)state;
	cfg.openbao.address = "http://127.0.0.1:8200";
	assert_int_equal(cmk_bao_new(&cfg, &b), CMK_ERR_CONFIG);
	cfg.openbao.address = srv.url;
	cfg.openbao.namespace_ = "ns\r\nX-Evil: 1";
	assert_int_equal(cmk_bao_new(&cfg, &b), CMK_ERR_INVALID);
	cfg.openbao.namespace_ = NULL;
	cfg.openbao.ca_cert = "/nonexistent/ca.pem";
	assert_int_equal(cmk_bao_new(&cfg, &b), CMK_ERR_CONFIG);
	assert_non_null(strstr(cmk_errdetail(), "ca_cert /nonexistent/ca.pem"));
	assert_null(b);
	cmk_bao_free(NULL);
}

/* The files a configuration names for OpenBao are checked before anything is sent or recorded. */
static void test_check_files(void **state)
{
	(void)state;
	assert_int_equal(cmk_bao_check_files(&cfg), 0);
	free(cfg.auth.jwt_path);
	cfg.auth.jwt_path = cred_path("absent.jwt");
	assert_int_equal(cmk_bao_check_files(&cfg), CMK_ERR_CONFIG);
	assert_non_null(strstr(cmk_errdetail(), "[auth] jwt_path"));
	assert_non_null(strstr(cmk_errdetail(), "absent.jwt"));
	/* Only the files of the configured method count. */
	cfg.auth.method = CMK_AUTH_TOKEN;
	cfg.auth.token_path = cred_path("sa.jwt");
	assert_int_equal(cmk_bao_check_files(&cfg), 0);
	cfg.auth.method = CMK_AUTH_APPROLE;
	cfg.auth.role_id_path = cred_path("sa.jwt");
	assert_int_equal(cmk_bao_check_files(&cfg), CMK_ERR_CONFIG);
	assert_non_null(strstr(cmk_errdetail(), "[auth] secret_id_path is not set"));
	cfg.openbao.ca_cert = "/nonexistent/ca.pem";
	assert_int_equal(cmk_bao_check_files(&cfg), CMK_ERR_CONFIG);
	assert_non_null(strstr(cmk_errdetail(), "[openbao] ca_cert /nonexistent/ca.pem"));
}

int main(void)
{
	const struct CMUnitTest parsers[] = {
		cmocka_unit_test(test_error_answers),
		cmocka_unit_test(test_error_detail_names_path),
		cmocka_unit_test(test_error_without_envelope),
		cmocka_unit_test(test_status_codes),
		cmocka_unit_test(test_parse_issue),
		cmocka_unit_test(test_parse_issue_chain_serial_warning),
		cmocka_unit_test(test_parse_issue_docs_sample),
		cmocka_unit_test(test_parse_sign),
		cmocka_unit_test(test_parse_revocation),
		cmocka_unit_test(test_parse_auth),
		cmocka_unit_test(test_parse_lookup),
		cmocka_unit_test(test_parse_lookup_long_policy_list),
		cmocka_unit_test(test_parse_role),
		cmocka_unit_test(test_parse_ca_chain_and_cert_read),
		cmocka_unit_test(test_parse_health),
		cmocka_unit_test(test_malformed_answers),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_token_action),
	};
#define CLIENT_TEST(f) cmocka_unit_test_setup_teardown(f, client_setup, client_teardown)
	const struct CMUnitTest client[] = {
		CLIENT_TEST(test_issue_with_kubernetes_login),
		CLIENT_TEST(test_sign_sends_only_the_csr),
		CLIENT_TEST(test_namespace_never_on_health),
		CLIENT_TEST(test_health_states_are_answers),
		CLIENT_TEST(test_sealed_retried_then_succeeds),
		CLIENT_TEST(test_sealed_after_every_retry),
		CLIENT_TEST(test_rate_limit_honours_retry_after),
		CLIENT_TEST(test_server_error_after_every_retry),
		CLIENT_TEST(test_rejection_is_not_retried),
		CLIENT_TEST(test_forbidden_logs_in_again_once),
		CLIENT_TEST(test_forbidden_twice_is_denied),
		CLIENT_TEST(test_login_failures),
		CLIENT_TEST(test_missing_jwt_file),
		CLIENT_TEST(test_approle_login),
		CLIENT_TEST(test_token_method_looks_up_itself),
		CLIENT_TEST(test_token_renewed_before_expiry),
		CLIENT_TEST(test_token_state_passes_between_clients),
		CLIENT_TEST(test_redirect_followed_once),
		CLIENT_TEST(test_dropped_connection_retried),
		CLIENT_TEST(test_unreachable_after_retries),
		CLIENT_TEST(test_revoke),
		CLIENT_TEST(test_crl_and_cert_read_without_token),
		CLIENT_TEST(test_check_mount),
		CLIENT_TEST(test_read_role),
		CLIENT_TEST(test_names_checked_before_sending),
		CLIENT_TEST(test_new_checks_config),
		CLIENT_TEST(test_check_files),
	};
#undef CLIENT_TEST
	int failed = 0;

	failed += cmocka_run_group_tests_name("openbao answers", parsers, NULL, NULL);
	failed += cmocka_run_group_tests_name("openbao client", client, client_group_setup, client_group_teardown);
	return failed != 0;
}
