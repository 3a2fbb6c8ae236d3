/*
 * test_seal.c - sealed keys open only for the tenant, type, record, serial,
 * store and master key they were sealed for, and the master key file is
 * refused unless it is private and exactly 32 bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmkcert/config.h"
#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/seal.h"
#include "cmkcert/util.h"

#define assert_detail(code, expr, text)                                                           \
	do {                                                                                       \
		int rc_ = (expr);                                                                  \
		if (rc_ != (code) || strstr(cmk_errdetail(), (text)) == NULL)                      \
			print_error("%s -> %d \"%s\", expected %d and \"%s\"\n", #expr, rc_,         \
				    cmk_errdetail(), (code), (text));                              \
		assert_int_equal(rc_, (code));                                                     \
		assert_non_null(strstr(cmk_errdetail(), (text)));                                  \
	} while (0)

static const char secret_pem[] =
	"-----BEGIN EC PRIVATE KEY-----\n"
	"MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5Cox6rh6Ph3mgtt0ywoAoGCCqGSM49\n"
	"-----END EC PRIVATE KEY-----\n";

static const struct cmk_seal_aad bound = { "acme", "thales_luna", 42, "39:dd:2e:90:01" };

struct fixture {
	char dir[64];
	char key_path[128];
	uint8_t master[32];
	uint8_t store_id[CMK_STORE_ID_LEN];
	struct cmk_config cfg;
	struct cmk_sealer *sealer;
};

/* Every message the library logs, to check that no secret reaches the log. */
static char logged[16384];

static void capture(enum cmk_log_level level, const char *msg, void *arg)
{
	size_t used = strlen(logged);

	(void)arg;
	snprintf(logged + used, sizeof(logged) - used, "%s: %s\n", cmk_log_level_name(level), msg);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	FILE *f;

	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_seal.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->key_path, sizeof(fx->key_path), "%s/master.key", fx->dir);
	assert_ok(cmk_random(fx->master, sizeof(fx->master)));
	assert_ok(cmk_random(fx->store_id, sizeof(fx->store_id)));
	write_file(fx->key_path, fx->master, sizeof(fx->master), 0600);
	fx->cfg.keys.provider = "local";
	fx->cfg.keys.master_key = fx->key_path;
	logged[0] = '\0';
	cmk_set_log(capture, NULL, CMK_LOG_DEBUG);
	assert_ok(cmk_sealer_open(&fx->cfg, fx->store_id, &fx->sealer));
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[128];
	int rc;

	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	cmk_sealer_free(fx->sealer);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	rc = system(cmd);
	cmk_wipe(fx, sizeof(*fx));
	free(fx);
	return rc == 0 ? 0 : -1;
}

static void seal_secret(struct fixture *fx, uint8_t **blob, size_t *len)
{
	assert_ok(cmk_seal(fx->sealer, &bound, (const uint8_t *)secret_pem, strlen(secret_pem), blob, len));
}

/* ---- sealing and unsealing ---------------------------------------------- */

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	uint8_t *blob = NULL, *blob2 = NULL, *pt = NULL, digest[32];
	size_t len = 0, len2 = 0, pt_len = 0;

	seal_secret(fx, &blob, &len);
	assert_int_equal(cmk_unseal_size(len), strlen(secret_pem));
	assert_null(memmem(blob, len, "PRIVATE KEY", 11));
	assert_ok(cmk_unseal(fx->sealer, &bound, blob, len, &pt, &pt_len));
	assert_int_equal(pt_len, strlen(secret_pem));
	assert_memory_equal(pt, secret_pem, pt_len);
	assert_int_equal(pt[pt_len], '\0');
	cmk_freezero(pt, pt_len + 1);

	/* The header: magic, format 1, provider local, key id, key version 1. */
	cmk_sha256(fx->master, sizeof(fx->master), digest);
	assert_memory_equal(blob, "CMKS\x01\x01", 6);
	assert_memory_equal(blob + 6, digest, 8);
	assert_memory_equal(blob + 14, "\0\0\0\x01", 4);

	/* A fresh nonce each time. */
	seal_secret(fx, &blob2, &len2);
	assert_int_equal(len, len2);
	assert_memory_not_equal(blob + 18, blob2 + 18, 12);
	free(blob);
	free(blob2);
}

/* The Kubernetes Secret volume layout: master.key -> ..data/master.key, ..data -> ..<timestamp>. */
static void test_master_key_through_secret_volume_links(void **state)
{
	struct fixture *fx = *state;
	struct cmk_sealer *linked = NULL;
	uint8_t *blob = NULL, *pt = NULL;
	size_t len = 0, pt_len = 0;
	char vol[300], stamp[400], real[500], data[400], link[400];

	snprintf(vol, sizeof(vol), "%s/secret", fx->dir);
	snprintf(stamp, sizeof(stamp), "%s/..2024_06_01_12_00_00.1", vol);
	snprintf(real, sizeof(real), "%s/master.key", stamp);
	snprintf(data, sizeof(data), "%s/..data", vol);
	snprintf(link, sizeof(link), "%s/master.key", vol);
	assert_int_equal(mkdir(vol, 0755), 0);
	assert_int_equal(mkdir(stamp, 0755), 0);
	write_file(real, fx->master, sizeof(fx->master), 0400);
	assert_int_equal(symlink("..2024_06_01_12_00_00.1", data), 0);
	assert_int_equal(symlink("..data/master.key", link), 0);

	/* The same master key reached through the links: what one sealer sealed, the other opens. */
	fx->cfg.keys.master_key = link;
	assert_ok(cmk_sealer_open(&fx->cfg, fx->store_id, &linked));
	fx->cfg.keys.master_key = fx->key_path;
	seal_secret(fx, &blob, &len);
	assert_ok(cmk_unseal(linked, &bound, blob, len, &pt, &pt_len));
	assert_memory_equal(pt, secret_pem, pt_len);
	cmk_freezero(pt, pt_len + 1);
	free(blob);
	cmk_sealer_free(linked);
}

/*
 * A blob built independently from the documented layout (HKDF-SHA256,
 * length-prefixed AAD, AES-256-GCM) by python3-cryptography: the format on
 * disk must not drift.
 */
static void test_opens_blob_in_documented_format(void **state)
{
	static const char blob_hex[] = "434d4b530101630dcd2966c4336600000001a0a1a2a3a4a5a6a7a8a9aaabd109"
				       "33cd2d83824ee695ee5d53e8fdf1dc2d360b702ac175b888d1e218fd10";
	const struct cmk_seal_aad aad = { "acme", "thales_luna", 42, "ab:01" };
	struct fixture *fx = *state;
	struct cmk_sealer *s = NULL;
	uint8_t master[32], store_id[CMK_STORE_ID_LEN], blob[sizeof(blob_hex) / 2], *pt = NULL;
	size_t i, pt_len = 0;
	char path[160];

	for (i = 0; i < sizeof(master); i++)
		master[i] = (uint8_t)i;
	for (i = 0; i < sizeof(store_id); i++)
		store_id[i] = (uint8_t)(0x40 + i);
	for (i = 0; i < sizeof(blob); i++) {
		unsigned v;

		assert_int_equal(sscanf(blob_hex + 2 * i, "%2x", &v), 1);
		blob[i] = (uint8_t)v;
	}
	snprintf(path, sizeof(path), "%s/known.key", fx->dir);
	write_file(path, master, sizeof(master), 0400);
	fx->cfg.keys.master_key = path;
	assert_ok(cmk_sealer_open(&fx->cfg, store_id, &s));
	fx->cfg.keys.master_key = fx->key_path;
	assert_ok(cmk_unseal(s, &aad, blob, sizeof(blob), &pt, &pt_len));
	assert_int_equal(pt_len, 15);
	assert_memory_equal(pt, "known plaintext", 15);
	cmk_freezero(pt, pt_len + 1);
	cmk_sealer_free(s);
}

static void assert_refused(struct fixture *fx, struct cmk_sealer *s, const struct cmk_seal_aad *aad,
			   const uint8_t *blob, size_t len, const char *detail)
{
	uint8_t *pt = (uint8_t *)1;
	size_t pt_len = 99;

	assert_detail(CMK_ERR_VERIFY, cmk_unseal(s != NULL ? s : fx->sealer, aad, blob, len, &pt, &pt_len), detail);
	assert_null(pt);
	assert_int_equal(pt_len, 0);
}

static void test_bound_to_tenant_type_record_serial(void **state)
{
	static const char *wrong = "does not belong to this tenant/record, or was altered";
	struct fixture *fx = *state;
	struct cmk_seal_aad aad;
	uint8_t *blob = NULL;
	size_t len = 0;

	seal_secret(fx, &blob, &len);
	aad = bound;
	aad.tenant = "acme2";
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = bound;
	aad.type = "aws_kms";
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = bound;
	aad.record_id = 43;
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = bound;
	aad.record_id = 42ull | (1ull << 32);
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = bound;
	aad.serial = "39:dd:2e:90:02";
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = bound;
	aad.serial = "";
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	free(blob);
}

/* A pool key and the shared token are sealed under keys of their own, never a tenant's. */
static void test_blobs_of_no_tenant_have_keys_of_their_own(void **state)
{
	static const char *wrong = "does not belong to this tenant/record, or was altered";
	struct fixture *fx = *state;
	struct cmk_seal_aad pool = { CMK_SEAL_POOL, "rsa-4096", 7, "" }, aad;
	uint8_t *blob = NULL, *pt = NULL;
	size_t len = 0, pt_len = 0;

	assert_ok(cmk_seal(fx->sealer, &pool, (const uint8_t *)secret_pem, strlen(secret_pem), &blob, &len));
	assert_ok(cmk_unseal(fx->sealer, &pool, blob, len, &pt, &pt_len));
	assert_memory_equal(pt, secret_pem, strlen(secret_pem));
	cmk_freezero(pt, pt_len + 1);
	/* Another entry, another pool, the token's binding: refused. */
	aad = pool;
	aad.record_id = 8;
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = pool;
	aad.type = "rsa-3072";
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	aad = pool;
	aad.tenant = CMK_SEAL_TOKEN;
	assert_refused(fx, NULL, &aad, blob, len, wrong);
	free(blob);
	/* A name that only looks like one of them is not a tenant either. */
	aad = pool;
	aad.tenant = "#other";
	assert_int_equal(cmk_seal(fx->sealer, &aad, (const uint8_t *)secret_pem, strlen(secret_pem), &blob, &len),
			 CMK_ERR_INVALID);
	assert_null(blob);
}

static void test_bound_to_store_and_master_key(void **state)
{
	struct fixture *fx = *state;
	struct cmk_sealer *other_store = NULL, *other_master = NULL;
	uint8_t store_id[CMK_STORE_ID_LEN], master[32], *blob = NULL;
	char path[160];
	size_t len = 0;

	seal_secret(fx, &blob, &len);
	memcpy(store_id, fx->store_id, sizeof(store_id));
	store_id[0] ^= 1;
	assert_ok(cmk_sealer_open(&fx->cfg, store_id, &other_store));
	assert_refused(fx, other_store, &bound, blob, len, "does not belong");

	assert_ok(cmk_random(master, sizeof(master)));
	snprintf(path, sizeof(path), "%s/other.key", fx->dir);
	write_file(path, master, sizeof(master), 0600);
	fx->cfg.keys.master_key = path;
	assert_ok(cmk_sealer_open(&fx->cfg, fx->store_id, &other_master));
	fx->cfg.keys.master_key = fx->key_path;
	assert_refused(fx, other_master, &bound, blob, len, "another master key");
	cmk_sealer_free(other_store);
	cmk_sealer_free(other_master);
	free(blob);
}

static void test_every_byte_is_authenticated(void **state)
{
	struct fixture *fx = *state;
	uint8_t *blob = NULL;
	size_t len = 0, i;

	seal_secret(fx, &blob, &len);
	for (i = 0; i < len; i++) {
		blob[i] ^= 0x01;
		assert_refused(fx, NULL, &bound, blob, len, "unseal: ");
		blob[i] ^= 0x01;
	}
	/* The header fields say what is wrong. */
	blob[0] = 'X';
	assert_refused(fx, NULL, &bound, blob, len, "bad magic");
	blob[0] = 'C';
	blob[4] = 2;
	assert_refused(fx, NULL, &bound, blob, len, "format version 2");
	blob[4] = 1;
	blob[5] = 9;
	assert_refused(fx, NULL, &bound, blob, len, "provider id 9");
	blob[5] = 1;
	blob[17] = 2;
	assert_refused(fx, NULL, &bound, blob, len, "key version 2");
	blob[17] = 1;
	blob[20] ^= 0xff;
	assert_refused(fx, NULL, &bound, blob, len, "does not belong");
	blob[20] ^= 0xff;
	free(blob);
}

static void test_truncated_or_extended_blob_is_refused(void **state)
{
	struct fixture *fx = *state;
	uint8_t *blob = NULL, *longer;
	size_t len = 0, i;

	seal_secret(fx, &blob, &len);
	for (i = 0; i < len; i++)
		assert_refused(fx, NULL, &bound, blob, i, "unseal: ");
	assert_refused(fx, NULL, &bound, blob, 45, "truncated");
	assert_refused(fx, NULL, &bound, NULL, 0, "truncated");
	longer = malloc(len + 1);
	assert_non_null(longer);
	memcpy(longer, blob, len);
	longer[len] = 0;
	assert_refused(fx, NULL, &bound, longer, len + 1, "does not belong");
	assert_int_equal(cmk_unseal_size(45), 0);
	assert_int_equal(cmk_unseal_size(46), 0);
	assert_int_equal(cmk_unseal_size(47), 1);
	free(longer);
	free(blob);
}

static void test_unseal_into(void **state)
{
	struct fixture *fx = *state;
	size_t need = strlen(secret_pem), len = 0, pt_len = 99;
	uint8_t *blob = NULL, buf[512], zero[512];

	memset(zero, 0, sizeof(zero));
	seal_secret(fx, &blob, &len);
	memset(buf, 0x5a, sizeof(buf));
	assert_detail(CMK_ERR_INVALID, cmk_unseal_into(fx->sealer, &bound, blob, len, buf, need - 1, &pt_len),
		      "too small");
	assert_int_equal(pt_len, 0);
	assert_memory_equal(buf, zero, need - 1);

	assert_ok(cmk_unseal_into(fx->sealer, &bound, blob, len, buf, need, &pt_len));
	assert_int_equal(pt_len, need);
	assert_memory_equal(buf, secret_pem, need);

	/* A failed open leaves nothing behind in the caller's buffer. */
	memset(buf, 0x5a, sizeof(buf));
	blob[len - 1] ^= 1;
	assert_int_equal(cmk_unseal_into(fx->sealer, &bound, blob, len, buf, sizeof(buf), &pt_len), CMK_ERR_VERIFY);
	assert_memory_equal(buf, zero, sizeof(buf));
	free(blob);
}

static void test_seal_checks_its_input(void **state)
{
	struct fixture *fx = *state;
	struct cmk_seal_aad aad = bound;
	char long_tenant[300];
	uint8_t *blob = (uint8_t *)1;
	size_t len = 99;

	assert_int_equal(cmk_seal(fx->sealer, &bound, (const uint8_t *)"", 0, &blob, &len), CMK_ERR_INVALID);
	assert_null(blob);
	assert_int_equal(len, 0);
	assert_int_equal(cmk_seal(fx->sealer, NULL, (const uint8_t *)"k", 1, &blob, &len), CMK_ERR_INVALID);
	aad.tenant = NULL;
	assert_detail(CMK_ERR_INVALID, cmk_seal(fx->sealer, &aad, (const uint8_t *)"k", 1, &blob, &len), "tenant");
	aad = bound;
	aad.type = "";
	assert_detail(CMK_ERR_INVALID, cmk_seal(fx->sealer, &aad, (const uint8_t *)"k", 1, &blob, &len), "type");
	aad = bound;
	aad.serial = NULL;
	assert_detail(CMK_ERR_INVALID, cmk_seal(fx->sealer, &aad, (const uint8_t *)"k", 1, &blob, &len), "serial");
	memset(long_tenant, 't', sizeof(long_tenant) - 1);
	long_tenant[sizeof(long_tenant) - 1] = '\0';
	aad = bound;
	aad.tenant = long_tenant;
	assert_detail(CMK_ERR_INVALID, cmk_seal(fx->sealer, &aad, (const uint8_t *)"k", 1, &blob, &len), "longer");
	assert_null(blob);
}

/* ---- the master key file ------------------------------------------------- */

static void open_fails(struct fixture *fx, const char *path, int code, const char *detail)
{
	struct cmk_sealer *s = (struct cmk_sealer *)1;

	fx->cfg.keys.master_key = (char *)path;
	assert_detail(code, cmk_sealer_open(&fx->cfg, fx->store_id, &s), detail);
	assert_null(s);
	fx->cfg.keys.master_key = fx->key_path;
}

static void test_master_key_file_is_checked(void **state)
{
	struct fixture *fx = *state;
	uint8_t bytes[33];
	char path[160], link[160];

	memcpy(bytes, fx->master, 32);
	bytes[32] = 0;
	snprintf(path, sizeof(path), "%s/check.key", fx->dir);

	write_file(path, bytes, 32, 0644);
	open_fails(fx, path, CMK_ERR_PERM, "mode 0644");
	write_file(path, bytes, 32, 0640);
	open_fails(fx, path, CMK_ERR_PERM, "mode 0640");
	write_file(path, bytes, 31, 0600);
	open_fails(fx, path, CMK_ERR_CONFIG, "holds 31 bytes");
	open_fails(fx, path, CMK_ERR_CONFIG, path);
	write_file(path, bytes, 33, 0600);
	open_fails(fx, path, CMK_ERR_CONFIG, "holds 33 bytes");
	write_file(path, bytes, 0, 0600);
	open_fails(fx, path, CMK_ERR_CONFIG, "holds 0 bytes");
	snprintf(link, sizeof(link), "%s/link.key", fx->dir);
	/* A link to a safe key (a Kubernetes Secret volume) opens; a link to an unsafe one does not. */
	assert_int_equal(symlink(path, link), 0);
	write_file(path, bytes, 32, 0644);
	open_fails(fx, link, CMK_ERR_PERM, "mode 0644");
	snprintf(path, sizeof(path), "%s/missing.key", fx->dir);
	open_fails(fx, path, CMK_ERR_NOTFOUND, "missing.key");
}

static void test_provider_must_be_local(void **state)
{
	struct fixture *fx = *state;
	struct cmk_sealer *s = (struct cmk_sealer *)1;

	fx->cfg.keys.provider = "kms";
	assert_detail(CMK_ERR_CONFIG, cmk_sealer_open(&fx->cfg, fx->store_id, &s), "\"kms\"");
	assert_null(s);
	fx->cfg.keys.provider = NULL;
	assert_int_equal(cmk_sealer_open(&fx->cfg, fx->store_id, &s), CMK_ERR_CONFIG);
	fx->cfg.keys.provider = "local";
	fx->cfg.keys.master_key = NULL;
	assert_detail(CMK_ERR_CONFIG, cmk_sealer_open(&fx->cfg, fx->store_id, &s), "master_key");
	fx->cfg.keys.master_key = fx->key_path;
}

/* Whatever happened in the tests before, neither the master key nor a plaintext key was logged. */
static void test_no_secret_in_logs(void **state)
{
	struct fixture *fx = *state;
	char master_hex[65];

	cmk_hex(fx->master, sizeof(fx->master), master_hex);
	assert_non_null(strstr(logged, "seal: local provider ready"));
	assert_null(strstr(logged, master_hex));
	assert_null(strstr(logged, "MHcCAQEE"));
	assert_null(strstr(logged, "known plaintext"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_opens_blob_in_documented_format),
		cmocka_unit_test(test_bound_to_tenant_type_record_serial),
		cmocka_unit_test(test_blobs_of_no_tenant_have_keys_of_their_own),
		cmocka_unit_test(test_bound_to_store_and_master_key),
		cmocka_unit_test(test_every_byte_is_authenticated),
		cmocka_unit_test(test_truncated_or_extended_blob_is_refused),
		cmocka_unit_test(test_unseal_into),
		cmocka_unit_test(test_seal_checks_its_input),
		cmocka_unit_test(test_master_key_file_is_checked),
		cmocka_unit_test(test_master_key_through_secret_volume_links),
		cmocka_unit_test(test_provider_must_be_local),
		cmocka_unit_test(test_no_secret_in_logs),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
