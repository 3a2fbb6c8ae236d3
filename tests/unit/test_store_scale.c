/*
 * test_store_scale.c - what keeps the store small and its walks short at a
 * million records.  Walks through the indexes: by_status
 * (every status, and "revocation pending") kept in step with every put,
 * status change, flag change and abort; the tenant filter through by_tts;
 * an older store (format 1, no by_status) upgraded on open; and walks that
 * read only the records they deliver (counted with
 * cmk_store_records_read(), never timed).  Sealed keys in slots of three
 * sizes: each in the smallest that holds it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"
#include "testutil.h"
/* White box: the upgrade test turns a store back into format 1 with Berkeley DB itself. */
#include "store_bdb_int.h"

#define N_TENANTS 12

struct fx {
	char dir[64];
	char path[128];
	struct cmk_store *st;
	pid_t holder;          /* a process holding the store's lock, killed at teardown */
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL || tu_mkdtemp(fx->dir, sizeof(fx->dir), "scale") != 0)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/store", fx->dir);
	alarm(120);
	*state = fx;
	return cmk_store_open(fx->path, &fx->st) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	alarm(0);
	if (fx->holder > 0) {
		kill(fx->holder, SIGKILL);
		waitpid(fx->holder, NULL, 0);
	}
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	cmk_store_close(fx->st);
	tu_rmtree(fx->dir);
	free(fx);
	return 0;
}

/* A small deterministic generator, so that a failure repeats. */
static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

static void make_rec(struct cmk_cert_record *r, uint64_t id, const char *tenant, const char *type,
		     enum cmk_status status, uint32_t flags)
{
	memset(r, 0, sizeof(*r));
	r->id = id;
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	snprintf(r->type, sizeof(r->type), "%s", type);
	r->status = status;
	r->flags = flags;
	snprintf(r->serial, sizeof(r->serial), "5e:%06" PRIx64, id);
	snprintf(r->fingerprint, sizeof(r->fingerprint), "%064" PRIx64, id);
}

static uint64_t put_new(struct cmk_store *st, const char *tenant, const char *type, enum cmk_status status,
			uint32_t flags)
{
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint64_t id;

	assert_ok(cmk_store_begin(st, &txn));
	assert_ok(cmk_store_cert_next_id(txn, &id));
	make_rec(&r, id, tenant, type, status, flags);
	assert_ok(cmk_store_cert_put(txn, &r));
	assert_ok(cmk_store_commit(txn));
	return id;
}

struct ids {
	uint64_t *v;
	size_t n, cap;
};

static int collect(const struct cmk_cert_record *r, void *arg)
{
	struct ids *ids = arg;

	if (ids->n == ids->cap) {
		ids->cap = ids->cap ? 2 * ids->cap : 64;
		ids->v = realloc(ids->v, ids->cap * sizeof(*ids->v));
		assert_non_null(ids->v);
	}
	ids->v[ids->n++] = r->id;
	return 0;
}

/* What a filter must deliver: every record, read by id, checked here. */
struct brute {
	const struct cmk_cert_filter *f;
	bool revoking;
	struct ids out;
};

static int brute_one(const struct cmk_cert_record *r, void *arg)
{
	struct brute *b = arg;
	const struct cmk_cert_filter *f = b->f;

	if (b->revoking &&
	    (!(r->flags & CMK_CERT_F_REVOKING) || r->status == CMK_ST_REVOKED || r->status == CMK_ST_CLEANED_UP))
		return 0;
	if (f != NULL && ((f->tenant != NULL && strcmp(f->tenant, r->tenant) != 0) ||
			  (f->type != NULL && strcmp(f->type, r->type) != 0) ||
			  (f->status >= 0 && f->status != (int)r->status)))
		return 0;
	return collect(r, &b->out);
}

static void expect_same(struct cmk_store *st, const struct cmk_cert_filter *f, bool revoking)
{
	struct brute b = { f, revoking, { NULL, 0, 0 } };
	struct ids got = { NULL, 0, 0 };

	/* The unfiltered walk reads certs itself, not an index. */
	assert_ok(cmk_store_cert_each(st, NULL, NULL, brute_one, &b));
	if (revoking)
		assert_ok(cmk_store_cert_revoking(st, NULL, collect, &got));
	else
		assert_ok(cmk_store_cert_each(st, NULL, f, collect, &got));
	if (got.n != b.out.n)
		fail_msg("filter tenant=%s type=%s status=%d revoking=%d: %zu records, expected %zu",
			 f && f->tenant ? f->tenant : "-", f && f->type ? f->type : "-", f ? f->status : -1,
			 revoking, got.n, b.out.n);
	for (size_t i = 0; i < got.n; i++)
		assert_int_equal(got.v[i], b.out.v[i]);
	free(got.v);
	free(b.out.v);
}

static const char *const types[] = { "x", "y" };

static void tenant_name(char *buf, size_t len, unsigned i)
{
	snprintf(buf, len, "t%u", i);
}

/* Every kind of filter against the brute-force answer. */
static void expect_all_filters(struct cmk_store *st)
{
	char tenant[16];

	expect_same(st, NULL, true);
	for (int s = 0; s < CMK_ST_COUNT; s++) {
		struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = s };

		expect_same(st, &f, false);
		f.type = "y";
		expect_same(st, &f, false);
	}
	for (unsigned t = 0; t < N_TENANTS; t += 5) {
		tenant_name(tenant, sizeof(tenant), t);
		struct cmk_cert_filter f = { .tenant = tenant, .type = NULL, .status = -1 };

		expect_same(st, &f, false);
		f.type = "x";
		expect_same(st, &f, false);
		f.status = CMK_ST_FAILED;
		expect_same(st, &f, false);
		f.type = NULL;
		expect_same(st, &f, false);
	}
	/* A tenant whose name is a prefix of others' (t1 of t10, t11) gets only its own. */
	{
		struct cmk_cert_filter f = { .tenant = "t1", .type = NULL, .status = -1 };
		expect_same(st, &f, false);
	}
}

/*
 * Random puts, status changes, revocation marks and aborted transactions;
 * after each round every filter answers what a full walk says.
 */
static void test_index_in_step(void **state)
{
	struct fx *fx = *state;
	uint64_t seed = 42, ids[400];
	size_t n = 0;

	for (int round = 0; round < 6; round++) {
		for (int op = 0; op < 70; op++) {
			struct cmk_cert_record r;
			struct cmk_txn *txn;
			char tenant[16];
			uint32_t pick = rnd(&seed);
			bool added = false;
			int rc;

			assert_ok(cmk_store_begin(fx->st, &txn));
			if (n < 20 || (pick % 3 == 0 && n < sizeof(ids) / sizeof(ids[0]))) {
				/* A new record, in any state but active (a second active one would be refused). */
				uint64_t id;

				assert_ok(cmk_store_cert_next_id(txn, &id));
				tenant_name(tenant, sizeof(tenant), rnd(&seed) % N_TENANTS);
				make_rec(&r, id, tenant, types[rnd(&seed) % 2], (enum cmk_status)(rnd(&seed) % CMK_ST_COUNT),
					 rnd(&seed) % 4 == 0 ? CMK_CERT_F_REVOKING : 0);
				if (r.status == CMK_ST_ACTIVE)
					r.status = CMK_ST_PENDING;
				assert_ok(cmk_store_cert_put(txn, &r));
				cmk_cert_record_clear(&r);
				ids[n++] = id;
				added = true;
			} else {
				/* Change an existing one: its status, its revocation mark, or both. */
				uint64_t id = ids[rnd(&seed) % n];

				assert_ok(cmk_store_cert_get(fx->st, txn, id, &r));
				if (pick % 3 != 1)
					r.status = (enum cmk_status)(rnd(&seed) % CMK_ST_COUNT);
				if (pick % 5 < 2)
					r.flags ^= CMK_CERT_F_REVOKING;
				rc = cmk_store_cert_put(txn, &r);
				cmk_cert_record_clear(&r);
				/* A second active record for the pair is refused: that transaction goes. */
				if (rc == CMK_ERR_STATE) {
					cmk_store_abort(txn);
					continue;
				}
				assert_ok(rc);
			}
			/* Every seventh transaction is aborted: the index must not keep its changes. */
			if (pick % 7 == 0) {
				cmk_store_abort(txn);
				if (added)
					n--;
			} else {
				assert_ok(cmk_store_commit(txn));
			}
		}
		expect_all_filters(fx->st);
	}
}

/* Only what the filter names is read: a status through by_status, a tenant through by_tts. */
static void test_walks_read_only_what_they_deliver(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = CMK_ST_PENDING };
	struct ids got = { NULL, 0, 0 };
	char tenant[16];
	uint64_t before;

	for (unsigned i = 0; i < 500; i++) {
		tenant_name(tenant, sizeof(tenant), 100 + i);
		put_new(fx->st, tenant, "x", i % 50 == 0 ? CMK_ST_REVOKED : CMK_ST_ACTIVE, 0);
	}
	put_new(fx->st, "p1", "x", CMK_ST_PENDING, 0);
	put_new(fx->st, "p2", "y", CMK_ST_PENDING, 0);
	put_new(fx->st, "p3", "x", CMK_ST_PENDING, CMK_CERT_F_REVOKING);
	put_new(fx->st, "r1", "x", CMK_ST_ACTIVE, CMK_CERT_F_REVOKING);
	/* Revoked with the mark left on: nothing left to finish. */
	put_new(fx->st, "r2", "x", CMK_ST_REVOKED, CMK_CERT_F_REVOKING);

	before = cmk_store_records_read(fx->st);
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, 3);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 3);

	got.n = 0;
	before = cmk_store_records_read(fx->st);
	assert_ok(cmk_store_cert_revoking(fx->st, NULL, collect, &got));
	/* p3 and r1; r2 is revoked already, so its mark puts it under no "revoking" key. */
	assert_int_equal(got.n, 2);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 2);

	got.n = 0;
	before = cmk_store_records_read(fx->st);
	f = (struct cmk_cert_filter){ .tenant = "t150", .type = NULL, .status = -1 };
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, 1);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 1);

	got.n = 0;
	before = cmk_store_records_read(fx->st);
	f = (struct cmk_cert_filter){ .tenant = NULL, .type = NULL, .status = CMK_ST_REVOKED };
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, 11);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 11);

	/* Without tenant and status, a walk reads everything (a type alone has no index). */
	got.n = 0;
	before = cmk_store_records_read(fx->st);
	f = (struct cmk_cert_filter){ .tenant = NULL, .type = "y", .status = -1 };
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, 1);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 505);
	free(got.v);
}

static void test_bad_filters_refused(void **state)
{
	struct fx *fx = *state;
	struct ids got = { NULL, 0, 0 };
	char long_name[CMK_TENANT_MAX + 2];
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = CMK_ST_COUNT };

	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &got), CMK_ERR_INVALID);
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	f = (struct cmk_cert_filter){ .tenant = long_name, .type = NULL, .status = -1 };
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &got), CMK_ERR_INVALID);
	f = (struct cmk_cert_filter){ .tenant = "", .type = NULL, .status = -1 };
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &got), CMK_ERR_INVALID);
	assert_int_equal(got.n, 0);
}

/* ---- upgrade of a store made before by_status ---- */

static unsigned upgrades;

static void count_upgrades(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)level;
	(void)arg;
	if (strstr(msg, "upgrading to") != NULL)
		upgrades++;
}

/*
 * What a format-1 store is: no by_status.db, meta "version" 1.  Made with
 * Berkeley DB directly on the closed store, the way the old code left it.
 */
static void make_format_1(const char *path)
{
	DB_ENV *env;
	DB *meta;
	DBT k, d;
	uint8_t ver[4];

	assert_int_equal(db_env_create(&env, 0), 0);
	assert_int_equal(env->open(env, path, DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL, 0600), 0);
	assert_int_equal(env->dbremove(env, NULL, "by_status.db", NULL, DB_AUTO_COMMIT), 0);
	assert_int_equal(db_create(&meta, env, 0), 0);
	assert_int_equal(meta->open(meta, NULL, "meta.db", NULL, DB_BTREE, DB_AUTO_COMMIT, 0), 0);
	cmk_be32_put(ver, 1);
	memset(&k, 0, sizeof(k));
	memset(&d, 0, sizeof(d));
	k.data = (void *)"version";
	k.size = 7;
	d.data = ver;
	d.size = sizeof(ver);
	assert_int_equal(meta->put(meta, NULL, &k, &d, DB_AUTO_COMMIT), 0);
	assert_int_equal(meta->close(meta, 0), 0);
	assert_int_equal(env->txn_checkpoint(env, 0, 0, DB_FORCE), 0);
	assert_int_equal(env->close(env, 0), 0);
}

static void test_upgrade_builds_the_index(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = CMK_ST_PENDING };
	struct ids got = { NULL, 0, 0 };
	char tenant[16], file[200];
	uint64_t want_pending[3], want_revoking[2];
	size_t np = 0, nr = 0;

	for (unsigned i = 0; i < 300; i++) {
		tenant_name(tenant, sizeof(tenant), i);
		if (i % 100 == 7)
			want_pending[np++] = put_new(fx->st, tenant, "x", CMK_ST_PENDING, 0);
		else if (i % 150 == 11)
			want_revoking[nr++] = put_new(fx->st, tenant, "x", CMK_ST_ROTATING, CMK_CERT_F_REVOKING);
		else
			put_new(fx->st, tenant, "x", CMK_ST_ACTIVE, 0);
	}
	cmk_store_close(fx->st);
	fx->st = NULL;
	make_format_1(fx->path);
	snprintf(file, sizeof(file), "%s/by_status.db", fx->path);
	assert_int_equal(access(file, F_OK), -1);

	upgrades = 0;
	cmk_set_log(count_upgrades, NULL, CMK_LOG_DEBUG);
	assert_ok(cmk_store_open(fx->path, &fx->st));
	assert_int_equal(upgrades, 1);
	assert_int_equal(access(file, F_OK), 0);

	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, np);
	for (size_t i = 0; i < np; i++)
		assert_int_equal(got.v[i], want_pending[i]);
	got.n = 0;
	assert_ok(cmk_store_cert_revoking(fx->st, NULL, collect, &got));
	assert_int_equal(got.n, nr);
	for (size_t i = 0; i < nr; i++)
		assert_int_equal(got.v[i], want_revoking[i]);
	expect_all_filters(fx->st);

	/* Kept in step from then on, and built once: the next open upgrades nothing. */
	put_new(fx->st, "late", "x", CMK_ST_PENDING, 0);
	cmk_store_close(fx->st);
	fx->st = NULL;
	assert_ok(cmk_store_open(fx->path, &fx->st));
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	assert_int_equal(upgrades, 1);
	got.n = 0;
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, np + 1);
	free(got.v);
}

/*
 * A store whose by_renew index is empty (no active record has a renewal
 * time) opens without reading the records: the index is not rebuilt at
 * every open just because it is empty.
 */
static void test_open_reads_no_record(void **state)
{
	struct fx *fx = *state;
	char tenant[16];

	for (unsigned i = 0; i < 200; i++) {
		tenant_name(tenant, sizeof(tenant), i);
		put_new(fx->st, tenant, "x", CMK_ST_ACTIVE, 0);
	}
	cmk_store_close(fx->st);
	fx->st = NULL;
	/* A build would count: it calls the index callbacks with every record. */
	assert_ok(cmk_store_open(fx->path, &fx->st));
	assert_int_equal(cmk_store_records_read(fx->st), 0);
}

/* ---- key slots of three sizes ---- */

/* Where store file `name` holds the bytes; -1 when it does not. */
static long file_offset(const char *dir, const char *name, const uint8_t *p, size_t len)
{
	char path[256];
	uint8_t *data = NULL, *at;
	size_t n = 0;
	long off;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (cmk_read_file(path, 64u << 20, (char **)&data, &n) != 0)
		return -1;
	at = memmem(data, n, p, len);
	off = at != NULL ? (long)(at - data) : -1;
	free(data);
	return off;
}

static bool file_holds(const char *dir, const char *name, const uint8_t *p, size_t len)
{
	return file_offset(dir, name, p, len) >= 0;
}

static bool any_file_holds(const char *dir, const uint8_t *p, size_t len)
{
	static const char *const files[] = { "keys.db", "keys_mid.db", "keys_small.db", "certs.db" };
	char logs[256];
	bool found = false;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		found |= file_holds(dir, files[i], p, len);
	for (unsigned l = 1; l < 100 && !found; l++) {
		snprintf(logs, sizeof(logs), "log.%010u", l);
		found |= file_holds(dir, logs, p, len);
	}
	return found;
}

static void put_key(struct cmk_store *st, uint64_t id, const uint8_t *key, size_t len)
{
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	char tenant[16];

	snprintf(tenant, sizeof(tenant), "k%" PRIu64, id);
	assert_ok(cmk_store_begin(st, &txn));
	make_rec(&r, id, tenant, "x", CMK_ST_PENDING, 0);
	r.sealed_key = (uint8_t *)key;
	r.sealed_key_len = len;
	assert_ok(cmk_store_cert_put(txn, &r));
	assert_ok(cmk_store_commit(txn));
}

static void expect_key(struct cmk_store *st, uint64_t id, const uint8_t *key, size_t len)
{
	struct cmk_cert_record r;

	assert_ok(cmk_store_cert_get(st, NULL, id, &r));
	assert_int_equal(r.sealed_key_len, len);
	assert_memory_equal(r.sealed_key, key, len);
	cmk_cert_record_clear(&r);
}

/* Close and open again: the checkpoint at close writes the pages into the files. */
static void reopen(struct fx *fx)
{
	cmk_store_close(fx->st);
	fx->st = NULL;
	assert_ok(cmk_store_open(fx->path, &fx->st));
}

/*
 * Sealed EC, RSA-3072 and RSA-4096 keys (their sizes) each land in the
 * smallest slot that holds them; a key that grows moves and its old slot is
 * destroyed like any other; a freed slot is reused by the next key of its
 * size.
 */
static void test_key_slot_sizes(void **state)
{
	struct fx *fx = *state;
	struct cmk_shred_stats ss;
	uint8_t ec[273], ec2[411], rsa3k[2530], rsa4k[3318], grown[2000];
	long ec_at;

	assert_ok(cmk_random(ec, sizeof(ec)));
	assert_ok(cmk_random(ec2, sizeof(ec2)));
	assert_ok(cmk_random(rsa3k, sizeof(rsa3k)));
	assert_ok(cmk_random(rsa4k, sizeof(rsa4k)));
	assert_ok(cmk_random(grown, sizeof(grown)));
	put_key(fx->st, 1, ec, sizeof(ec));
	put_key(fx->st, 2, rsa3k, sizeof(rsa3k));
	put_key(fx->st, 3, rsa4k, sizeof(rsa4k));
	reopen(fx);
	expect_key(fx->st, 1, ec, sizeof(ec));
	expect_key(fx->st, 2, rsa3k, sizeof(rsa3k));
	expect_key(fx->st, 3, rsa4k, sizeof(rsa4k));
	assert_true((ec_at = file_offset(fx->path, "keys_small.db", ec, sizeof(ec))) >= 0);
	assert_false(file_holds(fx->path, "keys.db", ec, sizeof(ec)));
	assert_false(file_holds(fx->path, "keys_mid.db", ec, sizeof(ec)));
	assert_true(file_holds(fx->path, "keys_mid.db", rsa3k, sizeof(rsa3k)));
	assert_false(file_holds(fx->path, "keys.db", rsa3k, sizeof(rsa3k)));
	assert_true(file_holds(fx->path, "keys.db", rsa4k, sizeof(rsa4k)));

	/* Record 1's key grows past its small slot: it moves, and the small slot is destroyed and shredded. */
	assert_false(cmk_store_shred_pending(fx->st));
	put_key(fx->st, 1, grown, sizeof(grown));
	expect_key(fx->st, 1, grown, sizeof(grown));
	assert_true(cmk_store_shred_pending(fx->st));
	assert_ok(cmk_store_shred(fx->st, &ss));
	assert_int_equal(ss.keys, 1);
	reopen(fx);
	assert_false(any_file_holds(fx->path, ec, sizeof(ec)));
	assert_true(file_holds(fx->path, "keys_mid.db", grown, sizeof(grown)));

	/* The next small key takes the freed slot: where the first one was. */
	put_key(fx->st, 4, ec2, sizeof(ec2));
	reopen(fx);
	expect_key(fx->st, 4, ec2, sizeof(ec2));
	assert_int_equal(file_offset(fx->path, "keys_small.db", ec2, sizeof(ec2)), ec_at);
}

/* ---- CA chains kept once ---- */

static size_t count_in_file(const char *dir, const char *name, const char *text)
{
	char path[256];
	uint8_t *data = NULL, *p;
	size_t n = 0, count = 0, len = strlen(text);

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (cmk_read_file(path, 64u << 20, (char **)&data, &n) != 0)
		return 0;
	for (p = data; (p = memmem(p, n - (size_t)(p - data), text, len)) != NULL; p += len)
		count++;
	free(data);
	return count;
}

static void put_chain(struct cmk_store *st, uint64_t id, const char *chain)
{
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	char tenant[16];

	snprintf(tenant, sizeof(tenant), "c%" PRIu64, id);
	assert_ok(cmk_store_begin(st, &txn));
	make_rec(&r, id, tenant, "x", CMK_ST_PENDING, 0);
	r.chain_pem = (char *)chain;
	assert_ok(cmk_store_cert_put(txn, &r));
	assert_ok(cmk_store_commit(txn));
}

static void expect_chain(struct cmk_store *st, uint64_t id, const char *chain)
{
	struct cmk_cert_record r;

	assert_ok(cmk_store_cert_get(st, NULL, id, &r));
	if (chain == NULL)
		assert_null(r.chain_pem);
	else
		assert_string_equal(r.chain_pem, chain);
	cmk_cert_record_clear(&r);
}

struct chain_check {
	const char *a, *b;
	size_t n;
};

static int check_chain(const struct cmk_cert_record *r, void *arg)
{
	struct chain_check *c = arg;

	if (r->id == 103)
		assert_null(r->chain_pem);
	else if (r->id == 104)
		assert_string_equal(r->chain_pem, "");
	else
		assert_string_equal(r->chain_pem, r->id % 50 == 0 ? c->b : c->a);
	c->n++;
	return 0;
}

/*
 * A hundred records under one CA chain and two under another: each chain's
 * text is stored once, every record reads its own back (by id and in walks),
 * and a record without a chain (NULL) or with an empty one keeps that.
 */
static void test_chains_kept_once(void **state)
{
	struct fx *fx = *state;
	const char *a = "-----BEGIN CERTIFICATE-----\nissuing CA A\n-----END CERTIFICATE-----\n"
			"-----BEGIN CERTIFICATE-----\nroot A\n-----END CERTIFICATE-----\n";
	const char *b = "-----BEGIN CERTIFICATE-----\nissuing CA B\n-----END CERTIFICATE-----\n";
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = CMK_ST_PENDING };
	struct chain_check c = { a, b, 0 };

	for (uint64_t id = 1; id <= 102; id++)
		put_chain(fx->st, id, id % 50 == 0 ? b : a);
	put_chain(fx->st, 103, NULL);
	put_chain(fx->st, 104, "");
	reopen(fx);
	assert_int_equal(count_in_file(fx->path, "chains.db", a), 1);
	assert_int_equal(count_in_file(fx->path, "chains.db", b), 1);
	assert_int_equal(count_in_file(fx->path, "certs.db", "issuing CA"), 0);
	expect_chain(fx->st, 1, a);
	expect_chain(fx->st, 50, b);
	expect_chain(fx->st, 103, NULL);
	expect_chain(fx->st, 104, "");
	/* A walk by id and one through an index. */
	assert_ok(cmk_store_cert_each(fx->st, NULL, NULL, check_chain, &c));
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, check_chain, &c));
	assert_int_equal(c.n, 2 * 104);
}

/* ---- a store of format 1 still in use by older code ---- */

/* A process of older code holding the store open: its read lock on the first byte of cmkcert.lock. */
static pid_t hold_store(const char *path)
{
	char lock[200];
	int ready[2];
	pid_t pid;

	snprintf(lock, sizeof(lock), "%s/cmkcert.lock", path);
	assert_int_equal(pipe(ready), 0);
	if ((pid = fork()) == 0) {
		struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
		int fd = open(lock, O_RDWR);

		if (fd < 0 || fcntl(fd, F_OFD_SETLK, &fl) != 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	assert_true(pid > 0);
	close(ready[1]);
	{
		char c;
		assert_int_equal(read(ready[0], &c, 1), 1);
	}
	close(ready[0]);
	return pid;
}

/*
 * A store of format 1 that another process has open (older code, as far as
 * this process can tell) is used as it is: not upgraded, records written
 * with their chain inside and keys in the large slots, as that code reads
 * them; walks by status read every record instead.  Once the other process
 * is gone, the next open upgrades it, the records written meanwhile
 * included.
 */
static void test_format_1_shared_with_older_code(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = CMK_ST_PENDING };
	const char *chain = "-----BEGIN CERTIFICATE-----\nshared-era chain\n-----END CERTIFICATE-----\n";
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	struct ids got = { NULL, 0, 0 };
	uint8_t key[300];
	char tenant[16];
	uint64_t id, before;
	for (unsigned i = 0; i < 40; i++) {
		tenant_name(tenant, sizeof(tenant), i);
		put_new(fx->st, tenant, "x", i % 10 == 3 ? CMK_ST_PENDING : CMK_ST_ACTIVE,
			i % 10 == 5 ? CMK_CERT_F_REVOKING : 0);
	}
	cmk_store_close(fx->st);
	fx->st = NULL;
	make_format_1(fx->path);
	fx->holder = hold_store(fx->path);

	upgrades = 0;
	cmk_set_log(count_upgrades, NULL, CMK_LOG_DEBUG);
	assert_ok(cmk_store_open(fx->path, &fx->st));
	assert_ok(cmk_random(key, sizeof(key)));
	assert_ok(cmk_store_begin(fx->st, &txn));
	assert_ok(cmk_store_cert_next_id(txn, &id));
	make_rec(&r, id, "shared", "x", CMK_ST_PENDING, 0);
	r.chain_pem = (char *)chain;
	r.sealed_key = key;
	r.sealed_key_len = sizeof(key);
	assert_ok(cmk_store_cert_put(txn, &r));
	assert_ok(cmk_store_commit(txn));
	expect_key(fx->st, id, key, sizeof(key));
	expect_chain(fx->st, id, chain);
	/* Walks by status and of pending revocations still answer, reading every record. */
	before = cmk_store_records_read(fx->st);
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, 5);
	assert_int_equal(got.v[4], id);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 41);
	expect_all_filters(fx->st);
	/* The last process to close checkpoints: the pages reach the files, where they are looked for. */
	kill(fx->holder, SIGKILL);
	assert_int_equal(waitpid(fx->holder, NULL, 0), fx->holder);
	fx->holder = 0;
	cmk_store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(upgrades, 0);
	/* Written as format 1: the chain in the record, the key in keys.db; by_status not made. */
	assert_true(file_holds(fx->path, "certs.db", (const uint8_t *)"shared-era chain", 16));
	assert_true(file_holds(fx->path, "keys.db", key, sizeof(key)));
	assert_false(file_holds(fx->path, "keys_small.db", key, sizeof(key)));

	assert_ok(cmk_store_open(fx->path, &fx->st));
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	assert_int_equal(upgrades, 1);
	got.n = 0;
	before = cmk_store_records_read(fx->st);
	assert_ok(cmk_store_cert_each(fx->st, NULL, &f, collect, &got));
	assert_int_equal(got.n, 5);
	assert_int_equal(cmk_store_records_read(fx->st) - before, 5);
	expect_key(fx->st, id, key, sizeof(key));
	expect_chain(fx->st, id, chain);
	expect_all_filters(fx->st);
	free(got.v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_index_in_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_walks_read_only_what_they_deliver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_filters_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_builds_the_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_1_shared_with_older_code, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_reads_no_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_slot_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chains_kept_once, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
