/*
 * test_pool.c - the key pool: which pools a configuration asks for, filling
 * to the target, every key handed out once, a claim taken by its record's
 * transaction (or not, when that transaction aborts), released or
 * discarded, claims of dead processes discarded, damaged entries never used,
 * and two processes claiming at once.
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
#include <sys/wait.h>
#include <unistd.h>

#include "cmkcert/config.h"
#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/pool.h"
#include "cmkcert/seal.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"

#define EC "ec-256"

struct fx {
	char dir[64];
	char store[128];
	char key_path[128];
	struct cmk_config cfg;
	struct cmk_store *st;
	struct cmk_sealer *sealer;
	struct cmk_pool_spec spec;
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uint8_t master[32];
	FILE *f;

	if (fx == NULL || tu_mkdtemp(fx->dir, sizeof(fx->dir), "pool") != 0)
		return -1;
	snprintf(fx->store, sizeof(fx->store), "%s/store", fx->dir);
	snprintf(fx->key_path, sizeof(fx->key_path), "%s/master.key", fx->dir);
	if (cmk_random(master, sizeof(master)) != 0 || (f = fopen(fx->key_path, "w")) == NULL)
		return -1;
	fwrite(master, 1, sizeof(master), f);
	fclose(f);
	chmod(fx->key_path, 0600);
	fx->cfg.keys.provider = "local";
	fx->cfg.keys.master_key = fx->key_path;
	if (cmk_store_open(fx->store, &fx->st) != 0 || cmk_sealer_open(&fx->cfg, cmk_store_id(fx->st), &fx->sealer) != 0)
		return -1;
	fx->spec = (struct cmk_pool_spec){ EC, CMK_KEY_EC, 256, 5 };
	/* A test that hangs on a lock fails instead of blocking the suite. */
	alarm(120);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	cmk_sealer_free(fx->sealer);
	cmk_store_close(fx->st);
	tu_rmtree(fx->dir);
	free(fx);
	return 0;
}

static void counts(struct fx *fx, struct cmk_pool_counts *c)
{
	assert_ok(cmk_store_pool_counts(fx->st, NULL, EC, c));
	/* Whatever happened, every key ever made is in exactly one place. */
	assert_int_equal(c->generated, c->free + c->claimed + c->used + c->discarded);
}

static void claim(struct fx *fx, struct cmk_pool_claim *c, uint8_t pub[32])
{
	struct cmk_key *key = NULL;

	assert_ok(cmk_pool_claim(fx->st, fx->sealer, CMK_KEY_EC, 256, c, &key));
	assert_true(c->id != 0);
	assert_string_equal(c->pool, EC);
	assert_int_equal(cmk_key_type(key), CMK_KEY_EC);
	assert_ok(cmk_key_public_sha256(key, pub));
	cmk_key_free(key);
}

/* ---- which pools ---------------------------------------------------------- */

static void test_pools_of_a_configuration(void **state)
{
	struct cmk_template t[4] = {
		{ .type = "a", .key_type = CMK_KEY_RSA, .key_bits = 4096, .pool_size = -1 },
		{ .type = "b", .key_type = CMK_KEY_EC, .key_bits = 256, .pool_size = 0 },
		{ .type = "c", .key_type = CMK_KEY_RSA, .key_bits = 3072, .pool_size = 4 },
		{ .type = "d", .key_type = CMK_KEY_RSA, .key_bits = 4096, .pool_size = 6 },
	};
	struct cmk_config cfg = { .templates = t, .n_templates = 4 };
	struct cmk_pool_spec *specs = NULL;
	size_t n = 0;

	(void)state;
	cfg.keys.pool_size = 3;
	assert_ok(cmk_pool_specs(&cfg, &specs, &n));
	assert_int_equal(n, 2);
	assert_string_equal(specs[0].name, "rsa-4096");
	assert_int_equal(specs[0].target, 6);          /* the largest of the templates using it */
	assert_string_equal(specs[1].name, "rsa-3072");
	assert_int_equal(specs[1].target, 4);
	free(specs);
	assert_int_equal(cmk_pool_target(&cfg, CMK_KEY_EC, 256), 0);
	/* OpenBao makes every key in issue mode: no pool at all. */
	cfg.openbao.mode = CMK_MODE_ISSUE;
	assert_ok(cmk_pool_specs(&cfg, &specs, &n));
	assert_int_equal(n, 0);
	free(specs);
	assert_int_equal(cmk_pool_target(&cfg, CMK_KEY_RSA, 4096), 0);
}

/* ---- filling and claiming ------------------------------------------------------ */

static void test_fill_then_every_key_once(void **state)
{
	struct fx *fx = *state;
	struct cmk_pool_claim c[5];
	struct cmk_pool_counts n;
	struct cmk_key *key = NULL;
	uint8_t pub[5][32];
	unsigned added = 0;

	assert_ok(cmk_pool_fill(fx->st, fx->sealer, &fx->spec, NULL, NULL, &added));
	assert_int_equal(added, 5);
	counts(fx, &n);
	assert_int_equal(n.free, 5);
	/* Full: a second fill adds nothing. */
	assert_ok(cmk_pool_fill(fx->st, fx->sealer, &fx->spec, NULL, NULL, &added));
	assert_int_equal(added, 0);
	for (int i = 0; i < 5; i++) {
		claim(fx, &c[i], pub[i]);
		for (int j = 0; j < i; j++)
			assert_memory_not_equal(pub[i], pub[j], 32);
	}
	counts(fx, &n);
	assert_int_equal(n.free, 0);
	assert_int_equal(n.claimed, 5);
	assert_int_equal(cmk_pool_claim(fx->st, fx->sealer, CMK_KEY_EC, 256, &c[0], &key), CMK_ERR_NOTFOUND);
	assert_null(key);
	assert_contains(cmk_errdetail(), "key pool ec-256 is empty");
	/* Claimed keys count toward the target: nothing is added while they are out. */
	assert_ok(cmk_pool_fill(fx->st, fx->sealer, &fx->spec, NULL, NULL, &added));
	assert_int_equal(added, 0);
}

static void test_take_commits_with_the_record_or_not_at_all(void **state)
{
	struct fx *fx = *state;
	struct cmk_pool_claim c;
	struct cmk_pool_counts n;
	struct cmk_txn *txn;
	uint8_t pub[32];

	assert_ok(cmk_pool_add_one(fx->st, fx->sealer, &fx->spec));
	claim(fx, &c, pub);
	/* The record's transaction aborts: the key is still claimed, not lost. */
	assert_ok(cmk_store_begin(fx->st, &txn));
	assert_ok(cmk_pool_take(txn, &c));
	cmk_store_abort(txn);
	counts(fx, &n);
	assert_int_equal(n.claimed, 1);
	assert_int_equal(n.used, 0);
	/* It commits: the key left the pool for good, counted as used, and nothing is left to shred. */
	assert_ok(cmk_store_begin(fx->st, &txn));
	assert_ok(cmk_pool_take(txn, &c));
	assert_ok(cmk_store_commit(txn));
	counts(fx, &n);
	assert_int_equal(n.claimed, 0);
	assert_int_equal(n.used, 1);
	assert_false(cmk_store_shred_pending(fx->st));
	/* Taking it twice is not possible. */
	assert_ok(cmk_store_begin(fx->st, &txn));
	assert_int_equal(cmk_pool_take(txn, &c), CMK_ERR_NOTFOUND);
	cmk_store_abort(txn);
}

static void test_release_returns_or_discards(void **state)
{
	struct fx *fx = *state;
	struct cmk_pool_claim c;
	struct cmk_pool_counts n;
	uint8_t first[32], again[32];

	assert_ok(cmk_pool_add_one(fx->st, fx->sealer, &fx->spec));
	claim(fx, &c, first);
	/* Nothing was signed for it: back into the pool, and the same key comes out next. */
	assert_ok(cmk_pool_release(fx->st, &c, true));
	assert_int_equal(c.id, 0);
	counts(fx, &n);
	assert_int_equal(n.free, 1);
	claim(fx, &c, again);
	assert_memory_equal(first, again, 32);
	/* A certificate may exist for it: discarded, and its bytes are due for shredding. */
	assert_ok(cmk_pool_release(fx->st, &c, false));
	counts(fx, &n);
	assert_int_equal(n.free, 0);
	assert_int_equal(n.discarded, 1);
	assert_true(cmk_store_shred_pending(fx->st));
	/* Releasing nothing is a no-op. */
	assert_ok(cmk_pool_release(fx->st, &c, false));
}

/* A process that claimed a key and died: the key is discarded, never handed out. */
static void test_claims_of_dead_processes_are_discarded(void **state)
{
	struct fx *fx = *state;
	struct cmk_pool_counts n;
	struct cmk_pool_claim c;
	int fds[2], status;
	uint8_t theirs[32], pub[32];
	unsigned reaped = 0;
	pid_t pid;

	for (int i = 0; i < 3; i++)
		assert_ok(cmk_pool_add_one(fx->st, fx->sealer, &fx->spec));
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cmk_store *st = NULL;
		struct cmk_sealer *s = NULL;
		struct cmk_key *key = NULL;
		uint8_t p[32];

		if (cmk_store_open(fx->store, &st) != 0 || cmk_sealer_open(&fx->cfg, cmk_store_id(st), &s) != 0 ||
		    cmk_pool_claim(st, s, CMK_KEY_EC, 256, &c, &key) != 0 || cmk_key_public_sha256(key, p) != 0)
			_exit(1);
		if (write(fds[1], p, sizeof(p)) != (ssize_t)sizeof(p))
			_exit(1);
		_exit(0);           /* killed before its record: nothing released */
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], theirs, sizeof(theirs)), sizeof(theirs));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	counts(fx, &n);
	assert_int_equal(n.claimed, 1);
	assert_ok(cmk_store_pool_reap(fx->st, &reaped));
	assert_int_equal(reaped, 1);
	counts(fx, &n);
	assert_int_equal(n.claimed, 0);
	assert_int_equal(n.discarded, 1);
	assert_int_equal(n.free, 2);
	for (int i = 0; i < 2; i++) {
		claim(fx, &c, pub);
		assert_memory_not_equal(pub, theirs, 32);
	}
	/* Our own claims are never taken for a dead process's. */
	assert_ok(cmk_store_pool_reap(fx->st, &reaped));
	assert_int_equal(reaped, 0);
}

/* An entry whose sealed key does not open as that entry is discarded and the next one used. */
static void test_damaged_entry_is_never_used(void **state)
{
	struct fx *fx = *state;
	struct cmk_pool_entry e = { 0 };
	struct cmk_seal_aad other = { CMK_SEAL_POOL, "rsa-4096", 999, "" };
	struct cmk_pool_counts n;
	struct cmk_pool_claim c;
	struct cmk_key *key = NULL;
	struct cmk_txn *txn;
	char *pem = NULL;
	size_t pem_len = 0;
	uint8_t pub[32];

	/* First in the pool: a real key sealed for another entry of another pool, as if copied in. */
	assert_ok(cmk_key_generate(CMK_KEY_EC, 256, &key));
	assert_ok(cmk_key_write_pem(key, &pem, &pem_len));
	assert_ok(cmk_store_begin(fx->st, &txn));
	assert_ok(cmk_store_pool_next_id(txn, &e.id));
	snprintf(e.pool, sizeof(e.pool), EC);
	assert_ok(cmk_key_public_sha256(key, e.public_sha256));
	assert_ok(cmk_seal(fx->sealer, &other, (const uint8_t *)pem, pem_len, &e.sealed_key, &e.sealed_key_len));
	assert_ok(cmk_store_pool_add(txn, &e));
	assert_ok(cmk_store_commit(txn));
	cmk_freezero(pem, pem_len + 1);
	cmk_key_free(key);
	cmk_pool_entry_clear(&e);
	assert_ok(cmk_pool_add_one(fx->st, fx->sealer, &fx->spec));

	claim(fx, &c, pub);
	counts(fx, &n);
	assert_int_equal(n.discarded, 1);
	assert_int_equal(n.claimed, 1);
	assert_int_equal(n.free, 0);
}

/* Two processes claiming from one pool at once never get the same key. */
static void test_two_processes_claim_at_once(void **state)
{
	struct fx *fx = *state;
	uint8_t got[20][32];
	int fds[2], status, n = 0;
	pid_t pids[2];

	fx->spec.target = 20;
	assert_ok(cmk_pool_fill(fx->st, fx->sealer, &fx->spec, NULL, NULL, NULL));
	assert_int_equal(pipe(fds), 0);
	for (int p = 0; p < 2; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			struct cmk_store *st = NULL;
			struct cmk_sealer *s = NULL;

			close(fds[0]);
			if (cmk_store_open(fx->store, &st) != 0 || cmk_sealer_open(&fx->cfg, cmk_store_id(st), &s) != 0)
				_exit(1);
			for (int i = 0; i < 10; i++) {
				struct cmk_pool_claim c;
				struct cmk_key *key = NULL;
				struct cmk_txn *txn = NULL;
				uint8_t pub[32];

				if (cmk_pool_claim(st, s, CMK_KEY_EC, 256, &c, &key) != 0 ||
				    cmk_key_public_sha256(key, pub) != 0 || cmk_store_begin(st, &txn) != 0 ||
				    cmk_pool_take(txn, &c) != 0 || cmk_store_commit(txn) != 0 ||
				    write(fds[1], pub, sizeof(pub)) != (ssize_t)sizeof(pub))
					_exit(1);
				cmk_key_free(key);
			}
			cmk_sealer_free(s);
			cmk_store_close(st);
			_exit(0);
		}
	}
	close(fds[1]);
	while (n < 20 && read(fds[0], got[n], 32) == 32)
		n++;
	close(fds[0]);
	for (int p = 0; p < 2; p++) {
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	assert_int_equal(n, 20);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			assert_memory_not_equal(got[i], got[j], 32);
	{
		struct cmk_pool_counts c;
		counts(fx, &c);
		assert_int_equal(c.used, 20);
		assert_int_equal(c.free, 0);
	}
}

static bool stop_after_two(void *arg)
{
	int *calls = arg;

	return ++*calls > 2;
}

static int count_entry(const struct cmk_pool_entry *e, void *arg)
{
	assert_string_equal(e->pool, EC);
	assert_null(e->sealed_key);
	(*(int *)arg)++;
	return 0;
}

static void test_fill_stops_when_asked_and_entries_list(void **state)
{
	struct fx *fx = *state;
	unsigned added = 0;
	int calls = 0, listed = 0;

	assert_ok(cmk_pool_fill(fx->st, fx->sealer, &fx->spec, stop_after_two, &calls, &added));
	assert_int_equal(added, 2);
	assert_ok(cmk_store_pool_each(fx->st, count_entry, &listed));
	assert_int_equal(listed, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pools_of_a_configuration),
		cmocka_unit_test_setup_teardown(test_fill_then_every_key_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_take_commits_with_the_record_or_not_at_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release_returns_or_discards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claims_of_dead_processes_are_discarded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_entry_is_never_used, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_processes_claim_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fill_stops_when_asked_and_entries_list, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
