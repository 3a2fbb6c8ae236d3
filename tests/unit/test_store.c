/*
 * test_store.c - the Berkeley DB store: records, indexes, the change log,
 * transactions, recovery after a killed process and two processes at once.
 * Every test works in its own temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sys/socket.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"
/* White box: the dead-process tests reach the environment to die inside a Berkeley DB call. */
#include "store_bdb_int.h"

struct fx {
	char dir[64];
	char path[128];
	struct cmk_store *st;
};

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup_dir(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cmk-store-XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	/* The store directory does not exist yet: opening must create it. */
	snprintf(fx->path, sizeof(fx->path), "%s/store", fx->dir);
	/* A test that hangs on a lock fails instead of blocking the suite. */
	alarm(120);
	*state = fx;
	return 0;
}

static int setup(void **state)
{
	struct fx *fx;

	if (setup_dir(state) != 0)
		return -1;
	fx = *state;
	return cmk_store_open(fx->path, &fx->st) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	alarm(0);
	cmk_store_close(fx->st);
	nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static void make_rec(struct cmk_cert_record *r, uint64_t id, const char *tenant, const char *type,
		     enum cmk_status status)
{
	memset(r, 0, sizeof(*r));
	r->id = id;
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	snprintf(r->type, sizeof(r->type), "%s", type);
	r->status = status;
	snprintf(r->serial, sizeof(r->serial), "1a:2b:%02x", (unsigned)(id & 0xff));
	snprintf(r->fingerprint, sizeof(r->fingerprint), "%064x", (unsigned)id);
}

/* Store a new record in its own transaction; returns its id. */
static uint64_t put_new(struct cmk_store *st, const char *tenant, const char *type, enum cmk_status status,
			int64_t renew_at)
{
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint64_t id;

	assert_int_equal(cmk_store_begin(st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
	make_rec(&r, id, tenant, type, status);
	r.renew_at = renew_at;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	return id;
}

/* Change the status of a record in its own transaction. */
static void set_status(struct cmk_store *st, uint64_t id, enum cmk_status status)
{
	struct cmk_cert_record r;
	struct cmk_txn *txn;

	assert_int_equal(cmk_store_begin(st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(st, txn, id, &r), 0);
	r.status = status;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	cmk_cert_record_clear(&r);
}

struct ids {
	uint64_t v[1024];
	size_t n;
	int stop_after;   /* return 7 after this many records; 0 = never */
};

static int collect(const struct cmk_cert_record *r, void *arg)
{
	struct ids *ids = arg;

	ids->v[ids->n++] = r->id;
	return ids->stop_after != 0 && (int)ids->n == ids->stop_after ? 7 : 0;
}

static void assert_ids(const struct ids *ids, const uint64_t *want, size_t n)
{
	assert_int_equal(ids->n, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ids->v[i], want[i]);
}

/* ---- opening ---- */

static void test_open_creates_private_dir_and_keeps_id(void **state)
{
	struct fx *fx = *state;
	uint8_t id[CMK_STORE_ID_LEN], zero[CMK_STORE_ID_LEN] = { 0 };
	struct stat sb;
	struct dirent *de;
	DIR *d;

	assert_int_equal(stat(fx->path, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	memcpy(id, cmk_store_id(fx->st), sizeof(id));
	assert_memory_not_equal(id, zero, sizeof(id));

	cmk_store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(cmk_store_open(fx->path, &fx->st), 0);
	assert_memory_equal(cmk_store_id(fx->st), id, sizeof(id));

	/* Nothing the store wrote is readable by group or others. */
	assert_non_null(d = opendir(fx->path));
	while ((de = readdir(d)) != NULL) {
		char p[512];

		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", fx->path, de->d_name);
		assert_int_equal(stat(p, &sb), 0);
		if ((sb.st_mode & 077) != 0)
			fail_msg("%s has mode %04o", p, (unsigned)(sb.st_mode & 07777));
	}
	closedir(d);
}

static void test_two_stores_have_different_ids(void **state)
{
	struct fx *fx = *state;
	struct cmk_store *other;
	char p[160];

	snprintf(p, sizeof(p), "%s/other", fx->dir);
	assert_int_equal(cmk_store_open(p, &other), 0);
	assert_memory_not_equal(cmk_store_id(other), cmk_store_id(fx->st), CMK_STORE_ID_LEN);
	cmk_store_close(other);
}

static void test_open_refuses_shared_dir(void **state)
{
	struct fx *fx = *state;
	struct cmk_store *st = NULL;

	assert_int_equal(mkdir(fx->path, 0700), 0);
	assert_int_equal(chmod(fx->path, 0755), 0);
	assert_int_equal(cmk_store_open(fx->path, &st), CMK_ERR_PERM);
	assert_null(st);
	assert_non_null(strstr(cmk_errdetail(), "0755"));
}

static void test_second_open_in_process_refused(void **state)
{
	struct fx *fx = *state;
	struct cmk_store *again = NULL;

	assert_int_equal(cmk_store_open(fx->path, &again), CMK_ERR_STATE);
	assert_null(again);
	/* The first handle is unharmed. */
	assert_int_not_equal(put_new(fx->st, "t1", "aws_kms", CMK_ST_PENDING, 0), 0);
}

static void test_newer_format_refused(void **state)
{
	struct fx *fx = *state;
	struct cmk_txn *txn;

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_set_format(txn, CMK_STORE_FORMAT + 1), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	cmk_store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(cmk_store_open(fx->path, &fx->st), CMK_ERR_STORE);
	assert_null(fx->st);
	assert_non_null(strstr(cmk_errdetail(), "newer"));
}

/* ---- certificate records ---- */

static void test_cert_roundtrip_all_fields(void **state)
{
	struct fx *fx = *state;
	static const uint8_t sealed[] = { 0x01, 0x00, 0xff, 0x7f, 0x00, 0x42 };
	struct cmk_cert_record in, out;
	struct cmk_txn *txn;
	uint64_t id;

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
	make_rec(&in, id, "tenant-1.a~b_c", "thales_luna", CMK_ST_ACTIVE);
	snprintf(in.serial, sizeof(in.serial), "39:dd:2e:90:0a:4c");
	snprintf(in.fingerprint, sizeof(in.fingerprint), "%s",
		 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
	in.subject = "CN=tenant-1.example";
	in.not_before = 1700000000;
	in.not_after = 1731536000;
	in.renew_at = 1728944000;
	in.created_at = 1700000001;
	in.activated_at = 1700000002;
	in.revoked_at = -5;
	in.updated_at = 1700000003;
	in.supersedes = 0x0102030405060708ull;
	in.attempts = 3;
	in.flags = CMK_CERT_F_NO_STORE | CMK_CERT_F_ISSUE_MODE;
	in.last_error = "probe: handshake refused";
	in.cert_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
	in.chain_pem = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";
	in.sealed_key = (uint8_t *)sealed;
	in.sealed_key_len = sizeof(sealed);
	assert_int_equal(cmk_store_cert_put(txn, &in), 0);
	assert_int_equal(cmk_store_commit(txn), 0);

	assert_int_equal(cmk_store_cert_get(fx->st, NULL, id, &out), 0);
	assert_int_equal(out.id, id);
	assert_string_equal(out.tenant, in.tenant);
	assert_string_equal(out.type, in.type);
	assert_int_equal(out.status, CMK_ST_ACTIVE);
	assert_string_equal(out.serial, in.serial);
	assert_string_equal(out.fingerprint, in.fingerprint);
	assert_string_equal(out.subject, in.subject);
	assert_int_equal(out.not_before, in.not_before);
	assert_int_equal(out.not_after, in.not_after);
	assert_int_equal(out.renew_at, in.renew_at);
	assert_int_equal(out.created_at, in.created_at);
	assert_int_equal(out.activated_at, in.activated_at);
	assert_int_equal(out.revoked_at, -5);
	assert_int_equal(out.updated_at, in.updated_at);
	assert_int_equal(out.supersedes, in.supersedes);
	assert_int_equal(out.attempts, 3);
	assert_int_equal(out.flags, in.flags);
	assert_string_equal(out.last_error, in.last_error);
	assert_string_equal(out.cert_pem, in.cert_pem);
	assert_string_equal(out.chain_pem, in.chain_pem);
	assert_int_equal(out.sealed_key_len, sizeof(sealed));
	assert_memory_equal(out.sealed_key, sealed, sizeof(sealed));
	cmk_cert_record_clear(&out);
	assert_null(out.sealed_key);
	assert_null(out.cert_pem);

	assert_int_equal(cmk_store_cert_get(fx->st, NULL, id + 1, &out), CMK_ERR_NOTFOUND);
}

static void test_cert_roundtrip_null_and_empty(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record in, out;
	struct cmk_txn *txn;
	uint64_t id;

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
	make_rec(&in, id, "t", "x", CMK_ST_PENDING);
	in.serial[0] = '\0';
	in.fingerprint[0] = '\0';
	in.subject = "";          /* empty, not absent */
	in.cert_pem = "";
	in.sealed_key = (uint8_t *)"";  /* present but empty */
	in.sealed_key_len = 0;
	assert_int_equal(cmk_store_cert_put(txn, &in), 0);
	assert_int_equal(cmk_store_commit(txn), 0);

	assert_int_equal(cmk_store_cert_get(fx->st, NULL, id, &out), 0);
	assert_string_equal(out.serial, "");
	assert_string_equal(out.fingerprint, "");
	assert_non_null(out.subject);
	assert_string_equal(out.subject, "");
	assert_non_null(out.cert_pem);
	assert_string_equal(out.cert_pem, "");
	assert_null(out.last_error);
	assert_null(out.chain_pem);
	assert_non_null(out.sealed_key);
	assert_int_equal(out.sealed_key_len, 0);
	assert_int_equal(out.renew_at, 0);
	assert_int_equal(out.supersedes, 0);
	cmk_cert_record_clear(&out);

	/* A destroyed key (crypto-shred) stays destroyed. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, id, &out), 0);
	cmk_freezero(out.sealed_key, out.sealed_key_len);
	out.sealed_key = NULL;
	out.sealed_key_len = 0;
	out.status = CMK_ST_REVOKED;
	assert_int_equal(cmk_store_cert_put(txn, &out), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	cmk_cert_record_clear(&out);
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, id, &out), 0);
	assert_null(out.sealed_key);
	assert_int_equal(out.status, CMK_ST_REVOKED);
	cmk_cert_record_clear(&out);
}

static void test_ids_increase(void **state)
{
	struct fx *fx = *state;
	struct cmk_txn *txn;
	uint64_t a, b, c, d;

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &a), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &b), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &c), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_int_not_equal(a, 0);
	assert_true(b > a);
	assert_true(c > b);

	/* And across a reopen. */
	cmk_store_close(fx->st);
	assert_int_equal(cmk_store_open(fx->path, &fx->st), 0);
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &d), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_true(d > c);
}

static void test_put_refuses_bad_records(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	struct cmk_txn *txn;

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	make_rec(&r, 0, "t", "x", CMK_ST_PENDING);
	assert_int_equal(cmk_store_cert_put(txn, &r), CMK_ERR_INVALID);
	make_rec(&r, 5, "", "x", CMK_ST_PENDING);
	assert_int_equal(cmk_store_cert_put(txn, &r), CMK_ERR_INVALID);
	make_rec(&r, 5, "t", "x", CMK_ST_PENDING);
	r.status = CMK_ST_COUNT;
	assert_int_equal(cmk_store_cert_put(txn, &r), CMK_ERR_INVALID);
	cmk_store_abort(txn);
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, 5, &r), CMK_ERR_NOTFOUND);
}

static void test_find_newest_and_status_moves(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	uint64_t p1, p2, other1, other2;

	p1 = put_new(fx->st, "a", "bc", CMK_ST_PENDING, 0);
	p2 = put_new(fx->st, "a", "bc", CMK_ST_PENDING, 0);
	/* Names that would collide if the key were a plain concatenation. */
	other1 = put_new(fx->st, "ab", "c", CMK_ST_PENDING, 0);
	other2 = put_new(fx->st, "a", "bcd", CMK_ST_PENDING, 0);

	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_PENDING, &r), 0);
	assert_int_equal(r.id, p2);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "ab", "c", CMK_ST_PENDING, &r), 0);
	assert_int_equal(r.id, other1);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bcd", CMK_ST_PENDING, &r), 0);
	assert_int_equal(r.id, other2);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_ACTIVE, &r), CMK_ERR_NOTFOUND);

	/* Activating p2 moves it from the pending entry to the active one. */
	set_status(fx->st, p2, CMK_ST_ACTIVE);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_ACTIVE, &r), 0);
	assert_int_equal(r.id, p2);
	assert_int_equal(r.status, CMK_ST_ACTIVE);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_PENDING, &r), 0);
	assert_int_equal(r.id, p1);
	cmk_cert_record_clear(&r);

	set_status(fx->st, p1, CMK_ST_FAILED);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_PENDING, &r), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_FAILED, &r), 0);
	assert_int_equal(r.id, p1);
	cmk_cert_record_clear(&r);

	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "a", "bc", CMK_ST_COUNT, &r), CMK_ERR_INVALID);
}

static void test_one_active_per_tenant_type(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint64_t old, fresh;

	old = put_new(fx->st, "t", "aws_kms", CMK_ST_ACTIVE, 0);
	fresh = put_new(fx->st, "t", "aws_kms", CMK_ST_PENDING, 0);
	put_new(fx->st, "t", "thales_luna", CMK_ST_ACTIVE, 0);   /* another type is independent */

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, fresh, &r), 0);
	r.status = CMK_ST_ACTIVE;
	assert_int_equal(cmk_store_cert_put(txn, &r), CMK_ERR_STATE);
	cmk_cert_record_clear(&r);
	cmk_store_abort(txn);

	/* Rotation: demote the old one, then activate the new one, in one transaction. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, old, &r), 0);
	r.status = CMK_ST_ROTATING;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, fresh, &r), 0);
	r.status = CMK_ST_ACTIVE;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	cmk_cert_record_clear(&r);
	/* Re-putting the active record itself is fine. */
	assert_int_equal(cmk_store_cert_get(fx->st, txn, fresh, &r), 0);
	r.attempts = 1;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_commit(txn), 0);

	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "t", "aws_kms", CMK_ST_ACTIVE, &r), 0);
	assert_int_equal(r.id, fresh);
	cmk_cert_record_clear(&r);
}

static void test_record_cannot_change_owner(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint64_t id = put_new(fx->st, "t", "aws_kms", CMK_ST_PENDING, 0);

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, id, &r), 0);
	snprintf(r.tenant, sizeof(r.tenant), "u");
	assert_int_equal(cmk_store_cert_put(txn, &r), CMK_ERR_INVALID);
	cmk_cert_record_clear(&r);
	cmk_store_abort(txn);
}

static void test_due_order_and_only_active(void **state)
{
	struct fx *fx = *state;
	struct ids ids = { .n = 0 };
	uint64_t a300, a100, a200, rot;

	a300 = put_new(fx->st, "t1", "x", CMK_ST_ACTIVE, 300);
	a100 = put_new(fx->st, "t2", "x", CMK_ST_ACTIVE, 100);
	a200 = put_new(fx->st, "t3", "x", CMK_ST_ACTIVE, 200);
	put_new(fx->st, "t4", "x", CMK_ST_PENDING, 50);      /* not active */
	put_new(fx->st, "t5", "x", CMK_ST_ACTIVE, 0);        /* not scheduled */
	put_new(fx->st, "t6", "x", CMK_ST_ACTIVE, 500);      /* not due yet */
	rot = put_new(fx->st, "t7", "x", CMK_ST_ACTIVE, 150);
	set_status(fx->st, rot, CMK_ST_ROTATING);            /* left the schedule */

	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 400, collect, &ids), 0);
	assert_ids(&ids, (uint64_t[]){ a100, a200, a300 }, 3);

	/* The boundary is inclusive. */
	ids.n = 0;
	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 200, collect, &ids), 0);
	assert_ids(&ids, (uint64_t[]){ a100, a200 }, 2);

	/* A callback's non-zero answer stops the walk and is returned. */
	ids.n = 0;
	ids.stop_after = 1;
	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 400, collect, &ids), 7);
	assert_int_equal(ids.n, 1);
}

/* The scheduler's pattern: walk what is due and update each record from the callback. */
struct renewer {
	struct cmk_store *st;
	size_t seen;
	int rc;
};

static int renew_one(const struct cmk_cert_record *rec, void *arg)
{
	struct renewer *rn = arg;
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	int rc;

	rn->seen++;
	if ((rc = cmk_store_begin(rn->st, &txn)) != 0)
		return rn->rc = rc;
	if ((rc = cmk_store_cert_get(rn->st, txn, rec->id, &r)) == 0) {
		r.status = CMK_ST_ROTATING;
		rc = cmk_store_cert_put(txn, &r);
		cmk_cert_record_clear(&r);
	}
	if (rc == 0)
		rc = cmk_store_commit(txn);
	else
		cmk_store_abort(txn);
	return rn->rc = rc;
}

static void test_due_callback_may_write(void **state)
{
	struct fx *fx = *state;
	struct renewer rn = { .st = fx->st };
	struct ids ids = { .n = 0 };
	char tenant[16];

	/* More than one chunk, several sharing a renewal time. */
	for (int i = 0; i < 75; i++) {
		snprintf(tenant, sizeof(tenant), "t%d", i);
		put_new(fx->st, tenant, "x", CMK_ST_ACTIVE, 1000 + i / 3);
	}
	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 5000, renew_one, &rn), 0);
	assert_int_equal(rn.rc, 0);
	assert_int_equal(rn.seen, 75);
	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 5000, collect, &ids), 0);
	assert_int_equal(ids.n, 0);
}

static void test_due_many_sharing_one_time(void **state)
{
	struct fx *fx = *state;
	struct ids ids = { .n = 0 };
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint64_t id;
	char tenant[16];

	/* Active records get odd ids, pending ones (not scheduled) the even ids between them. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	for (int i = 0; i < 200; i++) {
		assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
		snprintf(tenant, sizeof(tenant), "t%d", i / 2);
		make_rec(&r, id, tenant, "x", i % 2 ? CMK_ST_PENDING : CMK_ST_ACTIVE);
		r.renew_at = i < 140 ? 1000 : 999;
		assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	}
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 1000, collect, &ids), 0);
	assert_int_equal(ids.n, 100);
	/* 999 first (ids 141, 143, ... 199), then 1000 (ids 1, 3, ... 139), each in id order. */
	for (size_t i = 0; i < 30; i++)
		assert_int_equal(ids.v[i], 141 + 2 * i);
	for (size_t i = 30; i < 100; i++)
		assert_int_equal(ids.v[i], 1 + 2 * (i - 30));
}

static void test_by_serial(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	char serial[CMK_SERIAL_MAX];
	uint64_t a, b;

	a = put_new(fx->st, "t", "x", CMK_ST_ACTIVE, 0);
	b = put_new(fx->st, "u", "x", CMK_ST_ACTIVE, 0);
	make_rec(&r, b, "u", "x", CMK_ST_ACTIVE);
	memcpy(serial, r.serial, sizeof(serial));
	assert_int_equal(cmk_store_cert_by_serial(fx->st, NULL, serial, &r), 0);
	assert_int_equal(r.id, b);
	assert_string_equal(r.tenant, "u");
	cmk_cert_record_clear(&r);
	make_rec(&r, a, "t", "x", CMK_ST_ACTIVE);
	memcpy(serial, r.serial, sizeof(serial));
	assert_int_equal(cmk_store_cert_by_serial(fx->st, NULL, serial, &r), 0);
	assert_int_equal(r.id, a);
	cmk_cert_record_clear(&r);
	/* A prefix of a serial is not that serial. */
	assert_int_equal(cmk_store_cert_by_serial(fx->st, NULL, "1a:2b", &r), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_cert_by_serial(fx->st, NULL, "ff:ff:ff", &r), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_cert_by_serial(fx->st, NULL, "", &r), CMK_ERR_INVALID);
}

static void test_each_filters(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_filter f;
	struct ids ids = { .n = 0 };
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint64_t id;

	/* 300 records: tenant t<i%3>, type x or y (i%2), status pending, or failed every 5th. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	for (int i = 0; i < 300; i++) {
		char tenant[8];

		assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
		snprintf(tenant, sizeof(tenant), "t%d", i % 3);
		make_rec(&r, id, tenant, i % 2 ? "y" : "x", i % 5 == 0 ? CMK_ST_FAILED : CMK_ST_PENDING);
		assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	}
	assert_int_equal(cmk_store_commit(txn), 0);

	assert_int_equal(cmk_store_cert_each(fx->st, NULL, NULL, collect, &ids), 0);
	assert_int_equal(ids.n, 300);
	for (size_t i = 0; i < 300; i++)
		assert_int_equal(ids.v[i], i + 1);

	/* id i+1 is record i. */
	f = (struct cmk_cert_filter){ .tenant = "t1", .type = NULL, .status = -1 };
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 100);
	for (size_t i = 0; i < 100; i++)
		assert_int_equal(ids.v[i], 3 * i + 2);

	f = (struct cmk_cert_filter){ .tenant = NULL, .type = NULL, .status = CMK_ST_FAILED };
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 60);
	for (size_t i = 0; i < 60; i++)
		assert_int_equal(ids.v[i], 5 * i + 1);

	/* All three given: the index path, still in id order.  i = 0 mod 30 are t0/x/failed. */
	f = (struct cmk_cert_filter){ .tenant = "t0", .type = "x", .status = CMK_ST_FAILED };
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 10);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(ids.v[i], 30 * i + 1);

	/* i = 3 mod 6 and not 0 mod 5: t0/y/pending; more than one chunk through the index. */
	f = (struct cmk_cert_filter){ .tenant = "t0", .type = "y", .status = CMK_ST_PENDING };
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 40);
	for (size_t i = 1; i < ids.n; i++)
		assert_true(ids.v[i] > ids.v[i - 1]);

	f = (struct cmk_cert_filter){ .tenant = "nobody", .type = "x", .status = CMK_ST_PENDING };
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 0);

	/* Inside a transaction the walk sees that transaction's own writes. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
	make_rec(&r, id, "t9", "x", CMK_ST_PENDING);
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	f = (struct cmk_cert_filter){ .tenant = "t9", .type = NULL, .status = -1 };
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, txn, &f, collect, &ids), 0);
	assert_ids(&ids, &id, 1);
	cmk_store_abort(txn);
}

/* ---- keystores ---- */

struct ks_seen {
	char names[8][80];
	size_t n;
};

static int ks_collect(const struct cmk_keystore_record *rec, void *arg)
{
	struct ks_seen *s = arg;

	snprintf(s->names[s->n++], sizeof(s->names[0]), "%s/%s", rec->tenant, rec->type);
	return 0;
}

static void test_keystores(void **state)
{
	struct fx *fx = *state;
	char *eps[] = { "hsm1.example:1792", "[2001:db8::1]:5696" };
	struct cmk_keystore_record in = { .endpoints = eps, .n_endpoints = 2, .verify = CMK_VERIFY_KMIP,
					  .created_at = 1700000000, .server_ca_pem = "-----BEGIN CERTIFICATE-----\n" };
	struct cmk_keystore_record out;
	struct ks_seen seen = { .n = 0 };
	struct cmk_txn *txn;

	snprintf(in.tenant, sizeof(in.tenant), "tenant1");
	snprintf(in.type, sizeof(in.type), "thales_luna");
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_keystore_put(txn, &in), 0);
	snprintf(in.type, sizeof(in.type), "aws_kms");
	in.n_endpoints = 0;
	in.endpoints = NULL;
	in.server_ca_pem = NULL;
	in.verify = CMK_VERIFY_NONE;
	assert_int_equal(cmk_store_keystore_put(txn, &in), 0);
	assert_int_equal(cmk_store_commit(txn), 0);

	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "tenant1", "thales_luna", &out), 0);
	assert_string_equal(out.tenant, "tenant1");
	assert_string_equal(out.type, "thales_luna");
	assert_int_equal(out.n_endpoints, 2);
	assert_string_equal(out.endpoints[0], eps[0]);
	assert_string_equal(out.endpoints[1], eps[1]);
	assert_string_equal(out.server_ca_pem, "-----BEGIN CERTIFICATE-----\n");
	assert_int_equal(out.verify, CMK_VERIFY_KMIP);
	assert_int_equal(out.created_at, 1700000000);
	cmk_keystore_record_clear(&out);

	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "tenant1", "aws_kms", &out), 0);
	assert_int_equal(out.n_endpoints, 0);
	assert_null(out.server_ca_pem);
	assert_int_equal(out.verify, CMK_VERIFY_NONE);
	cmk_keystore_record_clear(&out);

	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "tenant1", "fortanix", &out), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "tenant", "1thales_luna", &out), CMK_ERR_NOTFOUND);

	assert_int_equal(cmk_store_keystore_each(fx->st, NULL, ks_collect, &seen), 0);
	assert_int_equal(seen.n, 2);
	assert_string_equal(seen.names[0], "tenant1/aws_kms");
	assert_string_equal(seen.names[1], "tenant1/thales_luna");

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_keystore_del(txn, "tenant1", "aws_kms"), 0);
	assert_int_equal(cmk_store_keystore_del(txn, "tenant1", "aws_kms"), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "tenant1", "aws_kms", &out), CMK_ERR_NOTFOUND);
	seen.n = 0;
	assert_int_equal(cmk_store_keystore_each(fx->st, NULL, ks_collect, &seen), 0);
	assert_int_equal(seen.n, 1);
}

/* Keystores come in key order, each exactly once. */
static int ks_count_in_order(const struct cmk_keystore_record *rec, void *arg)
{
	size_t *count = arg;
	char want[16];

	snprintf(want, sizeof(want), "t%03zu", *count);
	assert_string_equal(rec->tenant, want);
	(*count)++;
	return 0;
}

static void test_keystore_each_many(void **state)
{
	struct fx *fx = *state;
	struct cmk_keystore_record in = { .verify = CMK_VERIFY_TLS };
	struct cmk_txn *txn;
	size_t count = 0;

	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	for (int i = 0; i < 70; i++) {
		snprintf(in.tenant, sizeof(in.tenant), "t%03d", i);
		snprintf(in.type, sizeof(in.type), "x");
		assert_int_equal(cmk_store_keystore_put(txn, &in), 0);
	}
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_int_equal(cmk_store_keystore_each(fx->st, NULL, ks_count_in_order, &count), 0);
	assert_int_equal(count, 70);
}

/* ---- change log and transactions ---- */

struct changes {
	struct cmk_change ch[16];
	size_t n;
};

static int change_collect(const struct cmk_change *ch, void *arg)
{
	struct changes *c = arg;

	if (c->n < 16)
		c->ch[c->n] = *ch;
	c->n++;
	return 0;
}

static void test_changes_follow_mutations(void **state)
{
	struct fx *fx = *state;
	struct cmk_keystore_record ks = { .verify = CMK_VERIFY_TLS };
	struct changes c = { .n = 0 };
	struct cmk_txn *txn;
	uint64_t last, start;
	int64_t before = cmk_now();

	assert_int_equal(cmk_store_change_last(fx->st, &start), 0);
	assert_int_equal(start, 0);
	put_new(fx->st, "t1", "aws_kms", CMK_ST_PENDING, 0);
	snprintf(ks.tenant, sizeof(ks.tenant), "t2");
	snprintf(ks.type, sizeof(ks.type), "thales_luna");
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_keystore_put(txn, &ks), 0);
	assert_int_equal(cmk_store_keystore_del(txn, "t2", "thales_luna"), 0);
	assert_int_equal(cmk_store_commit(txn), 0);

	assert_int_equal(cmk_store_change_last(fx->st, &last), 0);
	assert_int_equal(last, 3);
	assert_int_equal(cmk_store_changes_since(fx->st, 0, change_collect, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.ch[0].seq, 1);
	assert_string_equal(c.ch[0].tenant, "t1");
	assert_string_equal(c.ch[0].type, "aws_kms");
	assert_true(c.ch[0].time >= before && c.ch[0].time <= cmk_now());
	assert_int_equal(c.ch[1].seq, 2);
	assert_string_equal(c.ch[1].tenant, "t2");
	assert_int_equal(c.ch[2].seq, 3);
	assert_string_equal(c.ch[2].type, "thales_luna");

	c.n = 0;
	assert_int_equal(cmk_store_changes_since(fx->st, 2, change_collect, &c), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.ch[0].seq, 3);
	c.n = 0;
	assert_int_equal(cmk_store_changes_since(fx->st, 3, change_collect, &c), 0);
	assert_int_equal(c.n, 0);
}

static void test_abort_leaves_nothing(void **state)
{
	struct fx *fx = *state;
	struct cmk_keystore_record ks = { .verify = CMK_VERIFY_TLS }, ksout;
	struct cmk_cert_record r;
	char serial[CMK_SERIAL_MAX];
	struct changes c = { .n = 0 };
	struct cmk_txn *txn;
	uint64_t id, id2, last;

	put_new(fx->st, "keep", "x", CMK_ST_PENDING, 0);
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &id), 0);
	make_rec(&r, id, "gone", "x", CMK_ST_ACTIVE);
	r.renew_at = 10;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	snprintf(ks.tenant, sizeof(ks.tenant), "gone");
	snprintf(ks.type, sizeof(ks.type), "x");
	assert_int_equal(cmk_store_keystore_put(txn, &ks), 0);
	/* Visible inside the transaction... */
	assert_int_equal(cmk_store_cert_find(fx->st, txn, "gone", "x", CMK_ST_ACTIVE, &r), 0);
	cmk_cert_record_clear(&r);
	cmk_store_abort(txn);

	/* ...and nowhere after the abort: not the record, its indexes, the keystore or the changes. */
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, id, &r), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "gone", "x", CMK_ST_ACTIVE, &r), CMK_ERR_NOTFOUND);
	make_rec(&r, id, "gone", "x", CMK_ST_ACTIVE);
	memcpy(serial, r.serial, sizeof(serial));
	assert_int_equal(cmk_store_cert_by_serial(fx->st, NULL, serial, &r), CMK_ERR_NOTFOUND);
	struct ids ids = { .n = 0 };
	assert_int_equal(cmk_store_cert_due(fx->st, NULL, 100, collect, &ids), 0);
	assert_int_equal(ids.n, 0);
	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "gone", "x", &ksout), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_change_last(fx->st, &last), 0);
	assert_int_equal(last, 1);
	assert_int_equal(cmk_store_changes_since(fx->st, 0, change_collect, &c), 0);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.ch[0].tenant, "keep");

	/* The id counter was rolled back too. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_next_id(txn, &id2), 0);
	assert_int_equal(id2, id);
	cmk_store_abort(txn);
	cmk_store_abort(NULL);
}

static int count_changes(const struct cmk_change *ch, void *arg)
{
	struct changes *c = arg;

	if (c->n == 0)
		c->ch[0] = *ch;
	else
		c->ch[1] = *ch;
	c->n++;
	return 0;
}

static void test_change_log_is_trimmed(void **state)
{
	struct fx *fx = *state;
	struct cmk_keystore_record ks = { .verify = CMK_VERIFY_TLS };
	struct changes c = { .n = 0 };
	struct cmk_txn *txn;
	const int total = CMK_STORE_CHANGES_KEPT + 300;
	uint64_t last;

	snprintf(ks.tenant, sizeof(ks.tenant), "t");
	snprintf(ks.type, sizeof(ks.type), "x");
	for (int i = 0; i < total; i += 500) {
		assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
		for (int j = i; j < i + 500 && j < total; j++) {
			ks.created_at = j;
			assert_int_equal(cmk_store_keystore_put(txn, &ks), 0);
		}
		assert_int_equal(cmk_store_commit(txn), 0);
	}
	assert_int_equal(cmk_store_change_last(fx->st, &last), 0);
	assert_int_equal(last, (uint64_t)total);

	/* Reading from the start: first the "anything may have changed" marker, then what is kept. */
	assert_int_equal(cmk_store_changes_since(fx->st, 0, count_changes, &c), 0);
	assert_string_equal(c.ch[0].tenant, "");
	assert_string_equal(c.ch[0].type, "");
	assert_true(c.ch[0].seq >= (uint64_t)total - CMK_STORE_CHANGES_KEPT - 128);
	assert_int_equal(c.n - 1, (uint64_t)total - c.ch[0].seq);
	assert_true(c.n - 1 >= CMK_STORE_CHANGES_KEPT);
	assert_true(c.n - 1 <= CMK_STORE_CHANGES_KEPT + 128);
	assert_int_equal(c.ch[1].seq, (uint64_t)total);

	/* A reader that kept up sees no marker. */
	c.n = 0;
	assert_int_equal(cmk_store_changes_since(fx->st, (uint64_t)total - 5, count_changes, &c), 0);
	assert_int_equal(c.n, 5);
	assert_int_equal(c.ch[0].seq, (uint64_t)total - 4);
}

/* ---- concurrency and crashes ---- */

struct deadlock {
	struct cmk_store *st;
	uint64_t id;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool a_holds;
	int rc_a, rc_b;
};

/* A: a keystore (locks keystores and the change log), then a certificate record. */
static void *deadlock_a(void *arg)
{
	struct deadlock *dl = arg;
	struct cmk_keystore_record ks = { .verify = CMK_VERIFY_TLS };
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	struct timespec ts = { 0, 300 * 1000000L };

	snprintf(ks.tenant, sizeof(ks.tenant), "a%" PRIu64, dl->id);
	snprintf(ks.type, sizeof(ks.type), "x");
	cmk_store_begin(dl->st, &txn);
	dl->rc_a = cmk_store_keystore_put(txn, &ks);
	pthread_mutex_lock(&dl->mu);
	dl->a_holds = true;
	pthread_cond_signal(&dl->cv);
	pthread_mutex_unlock(&dl->mu);
	/* Give B time to lock the certificates and wait on the change log. */
	nanosleep(&ts, NULL);
	make_rec(&r, dl->id, "b", "x", CMK_ST_PENDING);
	if (dl->rc_a == 0)
		dl->rc_a = cmk_store_cert_put(txn, &r);
	if (dl->rc_a == 0)
		dl->rc_a = cmk_store_commit(txn);
	else
		cmk_store_abort(txn);
	return NULL;
}

/* B: a certificate record (locks certs), then its change (waits for A). */
static void *deadlock_b(void *arg)
{
	struct deadlock *dl = arg;
	struct cmk_cert_record r;
	struct cmk_txn *txn;

	pthread_mutex_lock(&dl->mu);
	while (!dl->a_holds)
		pthread_cond_wait(&dl->cv, &dl->mu);
	pthread_mutex_unlock(&dl->mu);
	cmk_store_begin(dl->st, &txn);
	make_rec(&r, dl->id, "b", "x", CMK_ST_PENDING);
	dl->rc_b = cmk_store_cert_put(txn, &r);
	if (dl->rc_b == 0)
		dl->rc_b = cmk_store_commit(txn);
	else
		cmk_store_abort(txn);
	return NULL;
}

static void test_deadlock_is_busy(void **state)
{
	struct fx *fx = *state;
	bool deadlocked = false;

	/* Threads locking in opposite orders.  The schedule is only likely, not
	 * certain, to deadlock, so a few rounds are allowed to pass cleanly. */
	for (uint64_t round = 1; round <= 5 && !deadlocked; round++) {
		struct deadlock dl = { .st = fx->st, .id = round, .mu = PTHREAD_MUTEX_INITIALIZER,
				       .cv = PTHREAD_COND_INITIALIZER };
		pthread_t a, b;

		assert_int_equal(pthread_create(&a, NULL, deadlock_a, &dl), 0);
		assert_int_equal(pthread_create(&b, NULL, deadlock_b, &dl), 0);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
		/* The detector broke the cycle: one was told to retry, the other committed. */
		if (dl.rc_a == CMK_ERR_BUSY || dl.rc_b == CMK_ERR_BUSY) {
			assert_true((dl.rc_a == CMK_ERR_BUSY && dl.rc_b == 0) || (dl.rc_a == 0 && dl.rc_b == CMK_ERR_BUSY));
			deadlocked = true;
		} else {
			assert_int_equal(dl.rc_a, 0);
			assert_int_equal(dl.rc_b, 0);
		}
	}
	assert_true(deadlocked);
}

/* Child side of the crash test: commit three records and a keystore, then die inside a transaction. */
static void crash_child(const char *path)
{
	struct cmk_keystore_record ks = { .verify = CMK_VERIFY_TLS };
	struct cmk_cert_record r;
	struct cmk_store *st;
	struct cmk_txn *txn;
	uint64_t id;

	if (cmk_store_open(path, &st) != 0)
		_exit(10);
	for (int i = 0; i < 3; i++) {
		if (cmk_store_begin(st, &txn) != 0 || cmk_store_cert_next_id(txn, &id) != 0)
			_exit(11);
		make_rec(&r, id, "committed", "x", i == 2 ? CMK_ST_ACTIVE : CMK_ST_PENDING);
		if (cmk_store_cert_put(txn, &r) != 0 || cmk_store_commit(txn) != 0)
			_exit(12);
	}
	snprintf(ks.tenant, sizeof(ks.tenant), "committed");
	snprintf(ks.type, sizeof(ks.type), "x");
	if (cmk_store_begin(st, &txn) != 0 || cmk_store_keystore_put(txn, &ks) != 0 || cmk_store_commit(txn) != 0)
		_exit(13);

	/* The unfinished transaction: a new record, a changed record, a keystore. */
	if (cmk_store_begin(st, &txn) != 0 || cmk_store_cert_next_id(txn, &id) != 0)
		_exit(14);
	make_rec(&r, id, "uncommitted", "x", CMK_ST_ACTIVE);
	if (cmk_store_cert_put(txn, &r) != 0)
		_exit(15);
	make_rec(&r, 1, "committed", "x", CMK_ST_FAILED);
	if (cmk_store_cert_put(txn, &r) != 0)
		_exit(16);
	snprintf(ks.tenant, sizeof(ks.tenant), "uncommitted");
	if (cmk_store_keystore_put(txn, &ks) != 0)
		_exit(17);
	kill(getpid(), SIGKILL);
	_exit(18);
}

static void test_recovery_after_killed_process(void **state)
{
	struct fx *fx = *state;
	struct cmk_keystore_record ks;
	struct cmk_cert_record r;
	struct ids ids = { .n = 0 };
	uint64_t last;
	int status;
	pid_t pid;

	assert_true((pid = fork()) >= 0);
	if (pid == 0)
		crash_child(fx->path);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("child did not die by SIGKILL (status 0x%x)", status);

	/* The dead process held locks: without recovery the reads below would wait forever. */
	assert_int_equal(cmk_store_open(fx->path, &fx->st), 0);
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, NULL, collect, &ids), 0);
	assert_ids(&ids, (uint64_t[]){ 1, 2, 3 }, 3);
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, 1, &r), 0);
	assert_int_equal(r.status, CMK_ST_PENDING);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "committed", "x", CMK_ST_ACTIVE, &r), 0);
	assert_int_equal(r.id, 3);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_cert_find(fx->st, NULL, "uncommitted", "x", CMK_ST_ACTIVE, &r), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "committed", "x", &ks), 0);
	cmk_keystore_record_clear(&ks);
	assert_int_equal(cmk_store_keystore_get(fx->st, NULL, "uncommitted", "x", &ks), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_change_last(fx->st, &last), 0);
	assert_int_equal(last, 4);
	/* And the store takes writes again, reusing the id the dead transaction had taken. */
	assert_int_equal(put_new(fx->st, "after", "x", CMK_ST_PENDING, 0), 4);
}

/* Does any file under dir hold `len` bytes at p? */
static bool store_files_hold(const char *dir, const uint8_t *p, size_t len)
{
	struct dirent *e;
	bool found = false;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while (!found && (e = readdir(d)) != NULL) {
		char path[512];
		uint8_t *data = NULL;
		size_t n = 0;

		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_type != DT_REG || cmk_read_file(path, 64u << 20, (char **)&data, &n) != 0)
			continue;
		found = memmem(data, n, p, len) != NULL;
		free(data);
	}
	closedir(d);
	return found;
}

static void put_with_key(struct cmk_store *st, uint64_t id, const char *tenant, const uint8_t *key, size_t len)
{
	struct cmk_cert_record r;
	struct cmk_txn *txn;

	assert_int_equal(cmk_store_begin(st, &txn), 0);
	make_rec(&r, id, tenant, "x", CMK_ST_PENDING);
	r.sealed_key = (uint8_t *)key;
	r.sealed_key_len = len;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
}

/*
 * A destroyed key is overwritten where it was, and after a shred no store
 * file holds it: not the key slot, not the log, not the regions.  The next
 * key reuses the slot; a key too large for a slot is refused.
 */
static void test_destroyed_key_is_shredded(void **state)
{
	struct fx *fx = *state;
	struct cmk_shred_stats ss;
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	uint8_t a[3300], b[3000], big[4000];

	assert_int_equal(cmk_random(a, sizeof(a)), 0);
	assert_int_equal(cmk_random(b, sizeof(b)), 0);
	put_with_key(fx->st, 1, "one", a, sizeof(a));
	assert_true(store_files_hold(fx->path, a, sizeof(a)));
	assert_false(cmk_store_shred_pending(fx->st));
	/* Destroyed (the record keeps its metadata). */
	set_status(fx->st, 1, CMK_ST_FAILED);
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, 1, &r), 0);
	assert_int_equal(r.sealed_key_len, sizeof(a));
	assert_memory_equal(r.sealed_key, a, sizeof(a));
	cmk_freezero(r.sealed_key, r.sealed_key_len);
	r.sealed_key = NULL;
	r.sealed_key_len = 0;
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	assert_int_equal(cmk_store_commit(txn), 0);
	cmk_cert_record_clear(&r);
	assert_true(cmk_store_shred_pending(fx->st));
	assert_int_equal(cmk_store_shred(fx->st, &ss), 0);
	assert_int_equal(ss.keys, 1);
	assert_true(ss.logs_removed >= 1);
	assert_false(cmk_store_shred_pending(fx->st));
	assert_false(store_files_hold(fx->path, a, sizeof(a)));
	assert_false(store_files_hold(fx->path, a + 1000, 64));
	/* The record says so; the next key takes the slot. */
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, 1, &r), 0);
	assert_null(r.sealed_key);
	cmk_cert_record_clear(&r);
	put_with_key(fx->st, 2, "two", b, sizeof(b));
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, 2, &r), 0);
	assert_memory_equal(r.sealed_key, b, sizeof(b));
	cmk_cert_record_clear(&r);
	/* Too large for a slot: refused, nothing written. */
	memset(big, 7, sizeof(big));
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	make_rec(&r, 3, "three", "x", CMK_ST_PENDING);
	r.sealed_key = big;
	r.sealed_key_len = sizeof(big);
	assert_int_equal(cmk_store_cert_put(txn, &r), CMK_ERR_INVALID);
	cmk_store_abort(txn);
}

/* Wait for a child and check it was killed by SIGKILL. */
static void reap_killed(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("child did not die by SIGKILL (status 0x%x)", status);
}

/*
 * A process that dies *inside* a Berkeley DB call, holding a mutex of the
 * shared lock region: the lock statistics print their lines through the
 * message callback while holding it, and this process's log callback kills
 * the process at the first line.  Failure checking cannot release a mutex;
 * only recovery repairs this.
 */
static void die_on_bdb_message(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)level;
	(void)arg;
	if (strstr(msg, "berkeley db") != NULL)
		kill(getpid(), SIGKILL);
}

static void die_inside_bdb(struct cmk_store *st)
{
	cmk_set_log(die_on_bdb_message, NULL, CMK_LOG_DEBUG);
	st->gen->env->lock_stat_print(st->gen->env, DB_STAT_ALL);
	_exit(40);
}

static void inside_child(const char *path, int go_fd)
{
	struct cmk_store *st;
	char c;

	if (cmk_store_open(path, &st) != 0)
		_exit(41);
	/* Hold a write lock on record 1 while dying, when told to. */
	if (go_fd >= 0) {
		struct cmk_cert_record r;
		struct cmk_txn *txn;

		make_rec(&r, 1, "committed", "x", CMK_ST_FAILED);
		if (cmk_store_begin(st, &txn) != 0 || cmk_store_cert_put(txn, &r) != 0)
			_exit(42);
		if (write(go_fd, "l", 1) != 1 || read(go_fd, &c, 1) != 1)
			_exit(43);
	}
	die_inside_bdb(st);
}

/*
 * The daemon's case: its handle stays open while another process dies
 * holding locks, outside any Berkeley DB call.  Failure checking releases
 * them: the daemon's next write of the locked record goes through, in the
 * same environment (no recovery ran), and sees only committed data.
 */
static void test_locks_of_a_dead_process_are_released(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	struct ids ids = { .n = 0 };
	pid_t pid;

	assert_true((pid = fork()) >= 0);
	if (pid == 0)
		crash_child(fx->path);
	reap_killed(pid);
	/* The dead transaction had changed record 1 and holds its lock: this waits until the monitor frees it. */
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, 1, &r), 0);
	assert_int_equal(r.status, CMK_ST_PENDING);
	r.status = CMK_ST_FAILED;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	cmk_cert_record_clear(&r);
	assert_int_equal(cmk_store_commit(txn), 0);
	assert_int_equal(cmk_store_generation(fx->st), 1);
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, NULL, collect, &ids), 0);
	assert_ids(&ids, (uint64_t[]){ 1, 2, 3 }, 3);
	assert_int_equal(put_new(fx->st, "after", "x", CMK_ST_PENDING, 0), 4);
}

/*
 * A process killed inside Berkeley DB: the daemon's handle finds it, a new
 * environment is opened (recovery runs once), and the same handle goes on
 * with every committed record and takes writes.
 */
static void test_handle_outlives_a_process_killed_inside_bdb(void **state)
{
	struct fx *fx = *state;
	struct ids ids = { .n = 0 };
	uint64_t last;
	pid_t pid;

	for (int i = 0; i < 3; i++)
		put_new(fx->st, "committed", "x", CMK_ST_PENDING, 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0)
		inside_child(fx->path, -1);
	reap_killed(pid);
	assert_int_equal(cmk_store_check(fx->st), 0);
	assert_int_equal(cmk_store_generation(fx->st), 2);
	assert_false(cmk_store_needs_recovery(fx->st));
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, NULL, collect, &ids), 0);
	assert_ids(&ids, (uint64_t[]){ 1, 2, 3 }, 3);
	assert_int_equal(cmk_store_change_last(fx->st, &last), 0);
	assert_int_equal(last, 3);
	assert_int_equal(put_new(fx->st, "after", "x", CMK_ST_PENDING, 0), 4);
	assert_int_equal(cmk_store_stuck(fx->st), 0);
}

/* Child: once told, write record 1, which the parent holds by then: wait for its lock until killed. */
static void waiter_child(const char *path, int fd)
{
	struct cmk_cert_record r;
	struct cmk_store *st;
	struct cmk_txn *txn;
	char c;

	if (cmk_store_open(path, &st) != 0 || cmk_store_begin(st, &txn) != 0 || write(fd, "r", 1) != 1 ||
	    read(fd, &c, 1) != 1)
		_exit(50);
	make_rec(&r, 1, "committed", "x", CMK_ST_ACTIVE);
	cmk_store_cert_put(txn, &r);
	_exit(51);
}

/* Wait (at most 10 s) until the main thread of `pid` sleeps on a futex: a slow machine may take long to get there. */
static void wait_blocked(pid_t pid)
{
	char path[64], buf[64];
	int seen = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", (int)pid, (int)pid);
	for (int i = 0; i < 500 && seen < 2; i++) {
		FILE *f = fopen(path, "r");
		size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f != NULL)
			fclose(f);
		buf[n] = '\0';
		seen = strstr(buf, "futex") != NULL ? seen + 1 : 0;
		usleep(20000);
	}
}

/*
 * A process killed while it waits for a lock stays counted as a waiter in
 * the condition variable it slept on.  Failure checking, freeing its
 * locker, destroys that condition variable: with glibc that waits for the
 * dead waiter forever (store_cond.c).  The store must come through it.
 */
static void test_process_killed_waiting_for_a_lock(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_record r;
	struct cmk_txn *txn;
	int fds[2];
	pid_t pid;
	char c;

	put_new(fx->st, "committed", "x", CMK_ST_PENDING, 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		close(fds[0]);
		waiter_child(fx->path, fds[1]);
	}
	assert_int_equal(read(fds[0], &c, 1), 1);
	assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
	assert_int_equal(cmk_store_cert_get(fx->st, txn, 1, &r), 0);
	r.status = CMK_ST_FAILED;
	assert_int_equal(cmk_store_cert_put(txn, &r), 0);
	cmk_cert_record_clear(&r);
	assert_int_equal(write(fds[0], "g", 1), 1);
	usleep(100000);
	wait_blocked(pid);              /* the child waits for our lock now */
	kill(pid, SIGKILL);
	reap_killed(pid);
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(cmk_store_commit(txn), 0);
	/* The monitor's failure check frees the dead waiter; a hang here is the bug (alarm). */
	assert_int_equal(cmk_store_check(fx->st), 0);
	set_status(fx->st, 1, CMK_ST_FAILED);
	assert_int_equal(cmk_store_generation(fx->st), 1);
	assert_int_equal(put_new(fx->st, "after", "x", CMK_ST_PENDING, 0), 2);
}

struct blocked {
	struct cmk_store *st;
	int rc;
	bool done;
};

/* Write record 1: blocks on the lock the child holds. */
static void *write_record_1(void *arg)
{
	struct blocked *b = arg;
	struct cmk_cert_record r;
	struct cmk_txn *txn;

	b->rc = cmk_store_begin(b->st, &txn);
	if (b->rc == 0) {
		make_rec(&r, 1, "committed", "x", CMK_ST_ACTIVE);
		if ((b->rc = cmk_store_cert_put(txn, &r)) == 0)
			b->rc = cmk_store_commit(txn);
		else
			cmk_store_abort(txn);
	}
	__atomic_store_n(&b->done, true, __ATOMIC_SEQ_CST);
	return NULL;
}

static int wedged_calls;

static void on_wedged(const char *path, bool whole_store, void *arg)
{
	(void)path;
	(void)whole_store;
	(void)arg;
	__atomic_add_fetch(&wedged_calls, 1, __ATOMIC_SEQ_CST);
}

/*
 * A thread of the daemon waits for a lock that a process holds when it is
 * killed inside Berkeley DB: nothing will ever release that wait.  The
 * handle reports the thread as wedged (once), and every other thread goes
 * on in the new environment.
 */
static void test_thread_waiting_on_a_dead_process_is_reported(void **state)
{
	struct fx *fx = *state;
	static struct blocked b;   /* the wedged thread keeps using it after the test */
	struct cmk_cert_record r;
	int sv[2];
	pthread_t t;
	pid_t pid;
	char c;

	b.st = fx->st;
	put_new(fx->st, "committed", "x", CMK_ST_PENDING, 0);
	cmk_store_on_wedged(fx->st, on_wedged, NULL);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		close(sv[0]);
		inside_child(fx->path, sv[1]);
	}
	close(sv[1]);
	assert_int_equal(read(sv[0], &c, 1), 1);
	assert_int_equal(pthread_create(&t, NULL, write_record_1, &b), 0);
	pthread_detach(t);
	usleep(300000);                 /* the thread is waiting for the child's lock */
	assert_int_equal(write(sv[0], "g", 1), 1);
	reap_killed(pid);
	close(sv[0]);
	for (int i = 0; i < 100 && __atomic_load_n(&wedged_calls, __ATOMIC_SEQ_CST) == 0; i++)
		usleep(100000);
	assert_int_equal(__atomic_load_n(&wedged_calls, __ATOMIC_SEQ_CST), 1);
	assert_int_equal(cmk_store_stuck(fx->st), 1);
	assert_false(__atomic_load_n(&b.done, __ATOMIC_SEQ_CST));
	/* The record the child had locked is free in the new environment. */
	assert_int_equal(cmk_store_cert_get(fx->st, NULL, 1, &r), 0);
	assert_int_equal(cmk_store_generation(fx->st), 2);
	assert_int_equal(r.status, CMK_ST_PENDING);
	cmk_cert_record_clear(&r);
	set_status(fx->st, 1, CMK_ST_FAILED);
	assert_int_equal(put_new(fx->st, "after", "x", CMK_ST_PENDING, 0), 2);
}

static void writer_child(const char *path, int start_fd)
{
	struct cmk_store *st;
	char c;

	if (read(start_fd, &c, 1) != 1 || cmk_store_open(path, &st) != 0)
		_exit(20);
	for (int i = 0; i < 40; i++) {
		struct cmk_cert_record r;
		struct cmk_txn *txn;
		uint64_t id;
		int rc;

		do {
			if ((rc = cmk_store_begin(st, &txn)) != 0)
				_exit(21);
			if ((rc = cmk_store_cert_next_id(txn, &id)) == 0) {
				make_rec(&r, id, "child", "x", CMK_ST_PENDING);
				rc = cmk_store_cert_put(txn, &r);
			}
			if (rc == 0)
				rc = cmk_store_commit(txn);
			else
				cmk_store_abort(txn);
		} while (rc == CMK_ERR_BUSY);
		if (rc != 0)
			_exit(22);
	}
	cmk_store_close(st);
	_exit(0);
}

static void test_two_processes_write_at_once(void **state)
{
	struct fx *fx = *state;
	struct cmk_cert_filter f = { .tenant = "child", .type = NULL, .status = -1 };
	struct ids ids = { .n = 0 };
	int pipefd[2], status;
	pid_t pid;

	assert_int_equal(pipe(pipefd), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		close(pipefd[1]);
		writer_child(fx->path, pipefd[0]);
	}
	close(pipefd[0]);
	assert_int_equal(write(pipefd[1], "g", 1), 1);
	close(pipefd[1]);
	for (int i = 0; i < 40; i++) {
		struct cmk_cert_record r;
		struct cmk_txn *txn;
		uint64_t id;
		int rc;

		do {
			assert_int_equal(cmk_store_begin(fx->st, &txn), 0);
			if ((rc = cmk_store_cert_next_id(txn, &id)) == 0) {
				make_rec(&r, id, "parent", "x", CMK_ST_PENDING);
				rc = cmk_store_cert_put(txn, &r);
			}
			if (rc == 0)
				rc = cmk_store_commit(txn);
			else
				cmk_store_abort(txn);
		} while (rc == CMK_ERR_BUSY);
		assert_int_equal(rc, 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 40);
	f.tenant = "parent";
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, &f, collect, &ids), 0);
	assert_int_equal(ids.n, 40);
	/* Ids were handed out once each across both processes. */
	ids.n = 0;
	assert_int_equal(cmk_store_cert_each(fx->st, NULL, NULL, collect, &ids), 0);
	assert_int_equal(ids.n, 80);
	for (size_t i = 0; i < 80; i++)
		assert_int_equal(ids.v[i], i + 1);
}

/* ---- the record encoding ---- */

static void full_record(struct cmk_cert_record *r)
{
	static uint8_t sealed[] = { 9, 8, 7 };

	make_rec(r, 42, "tenant", "aws_kms", CMK_ST_ROTATING);
	r->subject = "CN=x";
	r->last_error = "e";
	r->cert_pem = "c";
	r->chain_pem = "ch";
	r->sealed_key = sealed;
	r->sealed_key_len = sizeof(sealed);
	r->renew_at = 77;
}

static void test_codec_refuses_every_truncation(void **state)
{
	struct cmk_cert_record in, out;
	uint8_t *buf;
	size_t len;

	(void)state;
	full_record(&in);
	assert_int_equal(cmk_codec_cert_encode(&in, &buf, &len), 0);
	assert_int_equal(cmk_codec_cert_decode(42, buf, len, &out), 0);
	assert_string_equal(out.chain_pem, "ch");
	cmk_cert_record_clear(&out);
	for (size_t n = 0; n < len; n++) {
		int rc = cmk_codec_cert_decode(42, buf, n, &out);

		if (rc != CMK_ERR_STORE)
			fail_msg("a record cut to %zu of %zu bytes decoded (rc %d)", n, len, rc);
		assert_non_null(strstr(cmk_errdetail(), "corrupt certificate record 42"));
		assert_null(out.subject);
		assert_null(out.sealed_key);
	}
	cmk_freezero(buf, len);
}

static void test_codec_refuses_bad_values(void **state)
{
	struct cmk_cert_record in, out;
	uint8_t *buf;
	size_t len;

	(void)state;
	full_record(&in);
	assert_int_equal(cmk_codec_cert_encode(&in, &buf, &len), 0);

	/* Unknown format byte. */
	buf[0] = 2;
	assert_int_equal(cmk_codec_cert_decode(1, buf, len, &out), CMK_ERR_STORE);
	buf[0] = CMK_REC_V1;
	/* The tenant's length claims more than the buffer holds. */
	cmk_be32_put(buf + 1, 0x7fffffff);
	assert_int_equal(cmk_codec_cert_decode(1, buf, len, &out), CMK_ERR_STORE);
	cmk_be32_put(buf + 1, 6);
	/* A NUL inside the tenant. */
	buf[1 + 4 + 2] = '\0';
	assert_int_equal(cmk_codec_cert_decode(1, buf, len, &out), CMK_ERR_STORE);
	buf[1 + 4 + 2] = 'n';
	/* Status out of range: tenant(4+6) type(4+7) then status (4+1). */
	buf[1 + 10 + 11 + 4] = CMK_ST_COUNT;
	assert_int_equal(cmk_codec_cert_decode(1, buf, len, &out), CMK_ERR_STORE);
	assert_non_null(strstr(cmk_errdetail(), "status"));
	buf[1 + 10 + 11 + 4] = CMK_ST_ROTATING;
	assert_int_equal(cmk_codec_cert_decode(1, buf, len, &out), 0);
	assert_int_equal(out.status, CMK_ST_ROTATING);
	cmk_cert_record_clear(&out);
	cmk_freezero(buf, len);

	/* A tenant longer than a tenant can be. */
	uint8_t big[1 + 4 + 50];
	big[0] = CMK_REC_V1;
	cmk_be32_put(big + 1, 50);
	memset(big + 5, 'a', 50);
	assert_int_equal(cmk_codec_cert_decode(1, big, sizeof(big), &out), CMK_ERR_STORE);
}

static void test_codec_skips_fields_added_later(void **state)
{
	struct cmk_cert_record in, out;
	struct cmk_cert_refs refs = { .key_slot = 7, .has_chain_id = true }, got;
	uint8_t *buf, *longer;
	size_t len;

	(void)state;
	full_record(&in);
	memset(refs.chain_id, 0xc4, sizeof(refs.chain_id));
	/* The key in slot 7, the chain kept apart: the record ends with chain_id, the newest field this code knows. */
	assert_int_equal(cmk_codec_cert_encode_refs(&in, &refs, &buf, &len), 0);
	assert_non_null(longer = malloc(len + 4 + 3 + 4));
	memcpy(longer, buf, len);
	/* A field a later version appended, then an absent one. */
	cmk_be32_put(longer + len, 3);
	memcpy(longer + len + 4, "new", 3);
	cmk_be32_put(longer + len + 7, CMK_FIELD_ABSENT);
	assert_int_equal(cmk_codec_cert_decode_refs(42, longer, len + 11, &out, &got), 0);
	assert_string_equal(out.tenant, "tenant");
	assert_null(out.sealed_key);
	assert_null(out.chain_pem);
	assert_int_equal(got.key_slot, 7);
	assert_true(got.has_chain_id);
	assert_memory_equal(got.chain_id, refs.chain_id, sizeof(refs.chain_id));
	cmk_cert_record_clear(&out);
	/* But a broken trailing field is still damage. */
	assert_int_equal(cmk_codec_cert_decode(42, longer, len + 9, &out), CMK_ERR_STORE);
	assert_int_equal(cmk_codec_cert_decode(42, longer, len + 2, &out), CMK_ERR_STORE);
	free(longer);
	cmk_freezero(buf, len);
}

static void test_codec_keystore_truncation(void **state)
{
	char *eps[] = { "a:1", "b:2" };
	struct cmk_keystore_record in = { .tenant = "t", .type = "x", .endpoints = eps, .n_endpoints = 2,
					  .server_ca_pem = "ca", .verify = CMK_VERIFY_TLS };
	struct cmk_keystore_record out;
	uint8_t *buf;
	size_t len;

	(void)state;
	assert_int_equal(cmk_codec_keystore_encode(&in, &buf, &len), 0);
	assert_int_equal(cmk_codec_keystore_decode(buf, len, &out), 0);
	assert_int_equal(out.n_endpoints, 2);
	assert_string_equal(out.endpoints[1], "b:2");
	cmk_keystore_record_clear(&out);
	for (size_t n = 0; n < len; n++) {
		if (cmk_codec_keystore_decode(buf, n, &out) != CMK_ERR_STORE)
			fail_msg("a keystore record cut to %zu of %zu bytes decoded", n, len);
		assert_null(out.endpoints);
	}
	/* An endpoint count the buffer cannot hold. */
	{
		size_t count_off = len - (4 + 3) * 2 - 4 - 4;  /* before the endpoints: count field (4 + 4) */

		cmk_be32_put(buf + count_off + 4, 0x40000000);
		assert_int_equal(cmk_codec_keystore_decode(buf, len, &out), CMK_ERR_STORE);
		/* Refused on the count itself, before anything is allocated for it. */
		assert_non_null(strstr(cmk_errdetail(), "field endpoint count"));
	}
	free(buf);
}

static void test_status_names(void **state)
{
	(void)state;
	for (int i = 0; i < CMK_ST_COUNT; i++) {
		assert_non_null(cmk_status_name((enum cmk_status)i));
		assert_int_equal(cmk_status_parse(cmk_status_name((enum cmk_status)i)), i);
	}
	assert_string_equal(cmk_status_name(CMK_ST_CLEANED_UP), "cleaned_up");
	assert_null(cmk_status_name(CMK_ST_COUNT));
	assert_int_equal(cmk_status_parse("Active"), -1);
	assert_int_equal(cmk_status_parse(NULL), -1);
}

/* ---- the shared OpenBao token and verified chains (session.db) ---- */

static void test_stored_token_and_chains(void **state)
{
	struct fx *fx = *state;
	const char *name = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	uint8_t sealed[] = "not really sealed, the store does not care", h1[32], h2[32];
	struct cmk_stored_token t = { 1700000000123, 3600, 3600, true, 0, sealed, sizeof(sealed) }, got = { 0 };
	uint64_t version = 0;

	assert_int_equal(cmk_store_token_get(fx->st, name, &got), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_token_put(fx->st, name, &t, &version), 0);
	assert_int_equal(version, 1);
	assert_int_equal(cmk_store_token_get(fx->st, name, &got), 0);
	assert_int_equal(got.granted_ms, 1700000000123);
	assert_int_equal(got.ttl, 3600);
	assert_int_equal(got.increment, 3600);
	assert_true(got.renewable);
	assert_int_equal(got.version, 1);
	assert_int_equal(got.sealed_len, sizeof(sealed));
	assert_memory_equal(got.sealed, sealed, sizeof(sealed));
	cmk_stored_token_clear(&got);
	assert_null(got.sealed);
	t.renewable = false;
	assert_int_equal(cmk_store_token_put(fx->st, name, &t, &version), 0);
	assert_int_equal(version, 2);
	assert_int_equal(cmk_store_token_put(fx->st, "short", &t, NULL), CMK_ERR_INVALID);
	assert_int_equal(cmk_store_token_del(fx->st, name), 0);
	assert_int_equal(cmk_store_token_get(fx->st, name, &got), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_store_token_del(fx->st, name), 0);

	cmk_sha256("chain one", 9, h1);
	cmk_sha256("chain two", 9, h2);
	assert_false(cmk_store_chain_known(fx->st, h1));
	assert_int_equal(cmk_store_chain_note(fx->st, h1), 0);
	assert_true(cmk_store_chain_known(fx->st, h1));
	assert_false(cmk_store_chain_known(fx->st, h2));
}

static void log_stderr(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)arg;
	fprintf(stderr, "log: %s: %s\n", cmk_log_level_name(level), msg);
}

int main(void)
{
	if (getenv("CMK_TEST_LOG") != NULL)
		cmk_set_log(log_stderr, NULL, CMK_LOG_DEBUG);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_private_dir_and_keeps_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_stores_have_different_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_shared_dir, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_second_open_in_process_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_format_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_roundtrip_all_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_roundtrip_null_and_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ids_increase, setup, teardown),
		cmocka_unit_test_setup_teardown(test_put_refuses_bad_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_newest_and_status_moves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_active_per_tenant_type, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_cannot_change_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_due_order_and_only_active, setup, teardown),
		cmocka_unit_test_setup_teardown(test_due_callback_may_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_due_many_sharing_one_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_by_serial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_each_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keystores, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keystore_each_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_changes_follow_mutations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_change_log_is_trimmed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadlock_is_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_after_killed_process, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_destroyed_key_is_shredded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_locks_of_a_dead_process_are_released, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handle_outlives_a_process_killed_inside_bdb, setup, teardown),
		cmocka_unit_test_setup_teardown(test_process_killed_waiting_for_a_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_processes_write_at_once, setup, teardown),
		cmocka_unit_test(test_codec_refuses_every_truncation),
		cmocka_unit_test(test_codec_refuses_bad_values),
		cmocka_unit_test(test_codec_skips_fields_added_later),
		cmocka_unit_test(test_codec_keystore_truncation),
		cmocka_unit_test(test_status_names),
		cmocka_unit_test_setup_teardown(test_stored_token_and_chains, setup, teardown),
		/* Last: it leaves a thread wedged in this process for good, and the tests before it fork. */
		cmocka_unit_test_setup_teardown(test_thread_waiting_on_a_dead_process_is_reported, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
