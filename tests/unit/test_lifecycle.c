/*
 * test_lifecycle.c - the state machine's transition table, renewal timing,
 * parsing of the use case's keystore request JSON, the JSON documents the
 * CLI and the control socket answer with (opjson.h), and start-up recovery
 * and the scheduler pass reading only the records they handle.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"
#include "lifecycle_int.h"
#include "testutil.h"

static void test_transitions(void **state)
{
	(void)state;
	/* The only ways into active and failed are from pending. */
	for (int from = 0; from < CMK_ST_COUNT; from++) {
		assert_int_equal(cmk_lc_transition_allowed(from, CMK_ST_ACTIVE), from == CMK_ST_PENDING);
		assert_int_equal(cmk_lc_transition_allowed(from, CMK_ST_FAILED), from == CMK_ST_PENDING);
		assert_int_equal(cmk_lc_transition_allowed(from, CMK_ST_ROTATING), from == CMK_ST_ACTIVE);
		assert_int_equal(cmk_lc_transition_allowed(from, CMK_ST_EXPIRED), from == CMK_ST_ACTIVE);
		/* Nothing ever goes back to pending. */
		assert_false(cmk_lc_transition_allowed(from, CMK_ST_PENDING));
	}
	/* Revoked and cleaned-up are final. */
	for (int to = 0; to < CMK_ST_COUNT; to++) {
		assert_false(cmk_lc_transition_allowed(CMK_ST_REVOKED, to));
		assert_false(cmk_lc_transition_allowed(CMK_ST_CLEANED_UP, to));
	}
	assert_true(cmk_lc_transition_allowed(CMK_ST_ACTIVE, CMK_ST_REVOKED));
	assert_true(cmk_lc_transition_allowed(CMK_ST_ROTATING, CMK_ST_REVOKED));
	assert_true(cmk_lc_transition_allowed(CMK_ST_ROTATING, CMK_ST_CLEANED_UP));
	assert_false(cmk_lc_transition_allowed(CMK_ST_ACTIVE, CMK_ST_CLEANED_UP));
}

static void test_renew_at(void **state)
{
	struct cmk_config cfg = { 0 };
	int64_t nb = 1000000, day = 86400;

	(void)state;
	cfg.renewal.renew_before = 30 * day;
	cfg.renewal.jitter = 600;
	/* A year-long certificate renews 30 days before expiry... */
	assert_int_equal(cmk_renew_at(&cfg, nb, nb + 365 * day, -1), nb + 335 * day);
	/* ...at most `jitter` earlier with jitter. */
	int64_t j = cmk_renew_at(&cfg, nb, nb + 365 * day, 0.999);
	assert_true(j < nb + 335 * day && j >= nb + 335 * day - 600);
	/* A 40-day certificate (shorter than 2 x renew_before) renews at 2/3 of its life. */
	assert_int_equal(cmk_renew_at(&cfg, nb, nb + 40 * day, -1), nb + 40 * day * 2 / 3);
	/* A 60-second certificate: jitter is held to a tenth of the lifetime. */
	cfg.renewal.renew_before = 40;
	j = cmk_renew_at(&cfg, nb, nb + 60, 0.999);
	assert_true(j <= nb + 40 && j >= nb + 40 - 6);
	/* Always before expiry. */
	assert_true(cmk_renew_at(&cfg, nb, nb + 2, 0.5) < nb + 2 + 1);
}

static void test_request_json_ok(void **state)
{
	const char *doc = "{\"tenant_id\": \"acme-corp-12345\", \"keystore_config\": {\"type\": \"thales_luna_hsm\","
			  " \"connection_endpoints\": [\"192.168.1.100:1792\", \"h:2\"],"
			  " \"authentication_method\": \"client_certificate\", \"certificate_required\": true}}";
	struct cmk_keystore_request req;

	(void)state;
	assert_int_equal(cmk_keystore_request_from_json(doc, strlen(doc), &req), 0);
	assert_string_equal(req.tenant, "acme-corp-12345");
	assert_string_equal(req.type, "thales_luna_hsm");
	assert_int_equal(req.n_endpoints, 2);
	assert_string_equal(req.endpoints[0], "192.168.1.100:1792");
	assert_int_equal(req.verify, -1);
	cmk_keystore_request_clear(&req);
}

static void expect_refused(const char *doc, const char *field)
{
	struct cmk_keystore_request req;

	assert_int_equal(cmk_keystore_request_from_json(doc, strlen(doc), &req), CMK_ERR_INVALID);
	if (strstr(cmk_errdetail(), field) == NULL)
		fail_msg("detail \"%s\" does not name \"%s\"", cmk_errdetail(), field);
	assert_null(req.endpoints);
}

static void test_request_json_refused(void **state)
{
	(void)state;
	expect_refused("{", "line 1");
	expect_refused("[1]", "object");
	expect_refused("{\"tenant_id\": \"t\"}", "keystore_config");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": []}", "keystore_config");
	expect_refused("{\"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": []}}", "tenant_id");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"connection_endpoints\": []}}", "type");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\"}}", "connection_endpoints");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": \"h:1\"}}",
		       "connection_endpoints");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": [1]}}",
		       "connection_endpoints[0]");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": [],"
		       " \"certificate_required\": false}}", "certificate_required");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": [],"
		       " \"port\": 1}}", "port");
	expect_refused("{\"tenant_id\": \"t\", \"x\": 1, \"keystore_config\": {\"type\": \"x\", "
		       "\"connection_endpoints\": []}}", "\"x\"");
	expect_refused("{\"tenant_id\": \"0123456789012345678901234567890123456789X\", \"keystore_config\": "
		       "{\"type\": \"x\", \"connection_endpoints\": []}}", "tenant_id");
}

static void test_request_json_server_ca_and_verify(void **state)
{
	const char *doc = "{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"aws_kms\", \"connection_endpoints\":"
			  " [\"h:1\"], \"verify\": \"kmip\", \"server_ca\": \"-----BEGIN CERTIFICATE-----\\n...\"}}";
	struct cmk_keystore_request req;

	(void)state;
	assert_int_equal(cmk_keystore_request_from_json(doc, strlen(doc), &req), 0);
	assert_int_equal(req.verify, CMK_VERIFY_KMIP);
	assert_string_equal(req.server_ca_pem, "-----BEGIN CERTIFICATE-----\n...");
	cmk_keystore_request_clear(&req);
	assert_null(req.server_ca_pem);
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": [],"
		       " \"verify\": \"maybe\"}}", "keystore_config.verify \"maybe\"");
	expect_refused("{\"tenant_id\": \"t\", \"keystore_config\": {\"type\": \"x\", \"connection_endpoints\": [],"
		       " \"server_ca\": 1}}", "server_ca");
}

static void test_revoke_reason_and_verify_words(void **state)
{
	(void)state;
	assert_int_equal(cmk_revoke_reason_parse("compromise"), CMK_REVOKE_COMPROMISE);
	assert_int_equal(cmk_revoke_reason_parse("keyCompromise"), CMK_REVOKE_COMPROMISE);
	assert_int_equal(cmk_revoke_reason_parse("cessationOfOperation"), CMK_REVOKE_CESSATION);
	assert_int_equal(cmk_revoke_reason_parse("superseded"), CMK_REVOKE_SUPERSEDED);
	assert_int_equal(cmk_revoke_reason_parse("unspecified"), CMK_REVOKE_UNSPECIFIED);
	assert_int_equal(cmk_revoke_reason_parse("Compromise"), -1);
	assert_int_equal(cmk_revoke_reason_parse(NULL), -1);
	assert_int_equal(cmk_verify_parse("tls"), CMK_VERIFY_TLS);
	assert_int_equal(cmk_verify_parse("none"), CMK_VERIFY_NONE);
	assert_int_equal(cmk_verify_parse("TLS"), -1);
}

static void test_json_documents(void **state)
{
	struct cmk_op_result res = { .id = 7, .status = CMK_ST_FAILED, .serial = "01:02", .type = "aws_kms" };
	struct cmk_cert_record rec = { .id = 3, .tenant = "acme", .type = "aws_kms", .status = CMK_ST_ACTIVE,
				       .not_after = 86400, .cert_pem = "CERT", .chain_pem = "CHAIN" };
	json_t *steps = json_array(), *o;

	(void)state;
	/* An error body: the fields every failure carries. */
	cmk_fail(CMK_ERR_EXISTS, "tenant acme already has an active aws_kms certificate");
	o = cmk_json_error(CMK_ERR_EXISTS, "keystore add");
	assert_false(json_is_true(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_object_get(o, "error")), "already exists");
	assert_string_equal(json_string_value(json_object_get(o, "detail")),
			    "tenant acme already has an active aws_kms certificate");
	assert_string_equal(json_string_value(json_object_get(o, "operation")), "keystore add");
	assert_int_equal(json_integer_value(json_object_get(o, "code")), CMK_ERR_EXISTS);
	json_decref(o);

	/* A failed add names its first failed step and carries the same failure fields. */
	cmk_json_step(steps, "validate", 0, 1, "ok");
	cmk_json_step(steps, "test", CMK_ERR_KEYSTORE, 5, "refused");
	cmk_fail(CMK_ERR_KEYSTORE, "refused");
	o = cmk_json_add_result(&res, CMK_ERR_KEYSTORE, steps);
	assert_string_equal(json_string_value(json_object_get(o, "failed_step")), "test");
	assert_string_equal(json_string_value(json_object_get(o, "status")), "failed");
	assert_int_equal(json_integer_value(json_object_get(o, "code")), CMK_ERR_KEYSTORE);
	assert_int_equal(json_array_size(json_object_get(o, "steps")), 2);
	json_decref(o);

	/* A success has no error fields. */
	res.status = CMK_ST_REVOKED;
	o = cmk_json_op_result("revoke", 0, &res);
	assert_true(json_is_true(json_object_get(o, "ok")));
	assert_null(json_object_get(o, "error"));
	assert_int_equal(json_integer_value(json_object_get(o, "id")), 7);
	json_decref(o);

	/* A record: metadata, and the certificate only when asked; times as UTC text. */
	o = cmk_json_record(&rec, false);
	assert_null(json_object_get(o, "certificate"));
	assert_string_equal(json_string_value(json_object_get(o, "not_after")), "1970-01-02T00:00:00Z");
	assert_true(json_is_null(json_object_get(o, "revoked_at")));
	assert_string_equal(json_string_value(json_object_get(o, "private_key_path")), "/private/acme-aws_kms.key");
	json_decref(o);
	o = cmk_json_record(&rec, true);
	assert_string_equal(json_string_value(json_object_get(o, "certificate")), "CERT");
	assert_string_equal(json_string_value(json_object_get(o, "ca_chain")), "CHAIN");
	json_decref(o);
}

/* ---- recovery and the scheduler pass at scale ------------------------- */

static void write_text(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* A context on a new store; OpenBao is never reached (its CA file does not exist). */
static struct cmk_ctx *open_ctx(const char *dir)
{
	char conf[256], key[256], *text;
	uint8_t master[32];
	struct cmk_ctx *ctx = NULL;
	int fd;

	snprintf(key, sizeof(key), "%s/master.key", dir);
	assert_ok(cmk_random(master, sizeof(master)));
	fd = open(key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, master, sizeof(master)), (ssize_t)sizeof(master));
	close(fd);
	text = cmk_asprintf("[openbao]\naddress = https://127.0.0.1:1\nca_cert = %s/no-ca.pem\n"
			    "pki_mount = pki\nrole = r\n[auth]\nmethod = token\ntoken_path = %s/no-token\n"
			    "[store]\npath = %s/store\n[keys]\nprovider = local\nmaster_key = %s\n"
			    "[audit]\npath = %s/audit.log\n[template:aws_kms]\ncommon_name = {tenant_id}.example\n"
			    "key_type = ec\nkey_bits = 256\nttl = 720h\n", dir, dir, dir, key, dir);
	assert_non_null(text);
	snprintf(conf, sizeof(conf), "%s/cmkcert.conf", dir);
	write_text(conf, text, 0600);
	free(text);
	assert_ok(cmk_ctx_open(conf, "test", &ctx));
	return ctx;
}

static void put_rec(struct cmk_txn *txn, const char *tenant, enum cmk_status status, uint32_t flags,
		    int64_t renew_at, int64_t updated_at)
{
	struct cmk_cert_record r;

	memset(&r, 0, sizeof(r));
	assert_ok(cmk_store_cert_next_id(txn, &r.id));
	snprintf(r.tenant, sizeof(r.tenant), "%s", tenant);
	snprintf(r.type, sizeof(r.type), "aws_kms");
	r.status = status;
	r.flags = flags;
	r.renew_at = renew_at;
	r.updated_at = updated_at;
	r.not_after = cmk_now() + 86400 * 30;
	snprintf(r.serial, sizeof(r.serial), "aa:%06llx", (unsigned long long)r.id);
	snprintf(r.fingerprint, sizeof(r.fingerprint), "%064llx", (unsigned long long)r.id);
	assert_ok(cmk_store_cert_put(txn, &r));
}

#define SETTLED 2000

/*
 * Thousands of settled records (active and not due, cleaned up, revoked)
 * and a few unsettled ones: recovery reads the unsettled ones only, and a
 * scheduler pass with nothing due reads almost nothing.  Counted through
 * cmk_store_records_read(), never timed.
 */
static void test_recovery_reads_only_unsettled(void **state)
{
	char dir[64], tenant[32];
	struct cmk_ctx *ctx;
	struct cmk_txn *txn;
	struct cmk_pass_stats stats;
	struct cmk_cert_record r;
	uint64_t before, read;
	int64_t now = cmk_now();
	unsigned reset = 0;

	(void)state;
	assert_int_equal(tu_mkdtemp(dir, sizeof(dir), "recover"), 0);
	ctx = open_ctx(dir);
	assert_ok(cmk_store_begin(ctx->store, &txn));
	for (unsigned i = 0; i < SETTLED; i++) {
		snprintf(tenant, sizeof(tenant), "settled%u", i);
		put_rec(txn, tenant, i % 10 == 0 ? CMK_ST_CLEANED_UP : i % 10 == 1 ? CMK_ST_REVOKED : CMK_ST_ACTIVE,
			/* A revoked record may keep its mark: it has nothing left to finish. */
			i % 10 == 1 ? CMK_CERT_F_REVOKING : 0, i % 10 > 1 ? now + 86400 : 0, now);
	}
	put_rec(txn, "interrupted0", CMK_ST_PENDING, 0, 0, now);
	put_rec(txn, "interrupted1", CMK_ST_PENDING, 0, 0, now);
	put_rec(txn, "interrupted2", CMK_ST_PENDING, 0, 0, now);
	put_rec(txn, "revoking0", CMK_ST_ACTIVE, CMK_CERT_F_REVOKING, 0, now);
	assert_ok(cmk_store_commit(txn));

	before = cmk_store_records_read(ctx->store);
	assert_ok(cmk_recover(ctx, &reset));
	read = cmk_store_records_read(ctx->store) - before;
	/* The three interrupted ones are failed now; the revocation waits for OpenBao. */
	assert_int_equal(reset, 3);
	assert_ok(cmk_store_cert_find(ctx->store, NULL, "interrupted1", "aws_kms", CMK_ST_FAILED, &r));
	cmk_cert_record_clear(&r);
	assert_ok(cmk_store_cert_find(ctx->store, NULL, "revoking0", "aws_kms", CMK_ST_ACTIVE, &r));
	assert_true(r.flags & CMK_CERT_F_REVOKING);
	cmk_cert_record_clear(&r);
	/* Each unsettled record costs a few reads (found, read, changed with its indexes): nowhere near SETTLED. */
	if (read > 60)
		fail_msg("recovery read %llu records for 4 unsettled ones among %u", (unsigned long long)read,
			 SETTLED);

	before = cmk_store_records_read(ctx->store);
	assert_ok(cmk_run_due(ctx, now, 0, &stats));
	read = cmk_store_records_read(ctx->store) - before;
	assert_int_equal(stats.renewed + stats.failed + stats.expired + stats.cleaned, 0);
	/* Only the three failed ones are looked at (their grace period is not over). */
	if (read > 10)
		fail_msg("a pass with nothing due read %llu records", (unsigned long long)read);
	cmk_ctx_free(ctx);
	tu_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transitions),
		cmocka_unit_test(test_renew_at),
		cmocka_unit_test(test_request_json_ok),
		cmocka_unit_test(test_request_json_refused),
		cmocka_unit_test(test_request_json_server_ca_and_verify),
		cmocka_unit_test(test_revoke_reason_and_verify_words),
		cmocka_unit_test(test_json_documents),
		cmocka_unit_test(test_recovery_reads_only_unsettled),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
