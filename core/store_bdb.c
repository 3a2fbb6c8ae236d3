/*
 * store_bdb.c - the store's records on Berkeley DB 5.3 (DESIGN §5): the
 * databases of an environment generation (store_env.c opens and replaces
 * environments), and moving the bytes produced by store_codec.c in and out
 * of them.  BDB results become CMK_ERR_* in db_fail() (store_env.c).
 *
 * Locking: commits are durable.  A deadlock chosen by the detector, or a lock
 * that could not be granted, is CMK_ERR_BUSY: the caller aborts and retries.
 * Reads without a transaction run in a short read-committed transaction of
 * their own and are retried here, since nothing was delivered yet; that
 * includes a read that met a failed environment (the retry runs in the new
 * one).  Walks read a small chunk of records, end the read (closing the
 * cursor and releasing its locks), and only then call the callback, so a
 * callback may start its own transaction and write without waiting on the
 * walk's locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"
#include "store_bdb_int.h"

#define READ_RETRIES 5
#define OPEN_WAIT_MS 30000        /* opening retries lock conflicts this long */
#define WALK_CHUNK 32
#define WALK_SCAN 256          /* records looked at per chunk of a filtered id walk */
#define TRIM_EVERY 128u        /* trim the change log when seq is a multiple of this */
#define FIND_KEY_MAX CMK_SERIAL_MAX  /* longest secondary key looked up: a serial or a tts key */
/*
 * certs.db pages: a record (about 1 KB with an EC leaf, 2.5 KB with an
 * RSA-4096 one, its chain kept apart) must stay on its page: Berkeley DB
 * moves any item larger than about a quarter of a page to overflow pages of
 * its own, a whole page for a record of a few hundred bytes more.
 */
#define CERTS_PAGE 16384
#define UPGRADE_CHUNK 2000     /* records indexed per transaction when a store is upgraded */

_Static_assert(CMK_TTS_KEY_MAX <= FIND_KEY_MAX, "tts keys must fit the lookup buffer");

/* ---- DBT helpers ---- */

static void dbt_in(DBT *d, const void *p, size_t n)
{
	memset(d, 0, sizeof(*d));
	d->data = (void *)p;
	d->size = (u_int32_t)n;
}

/* Caller memory of `cap` bytes holding `n` bytes of input (for DB_SET_RANGE and the like). */
static void dbt_user(DBT *d, void *buf, size_t n, size_t cap)
{
	dbt_in(d, buf, n);
	d->ulen = (u_int32_t)cap;
	d->flags = DB_DBT_USERMEM;
}

static void dbt_malloc(DBT *d)
{
	memset(d, 0, sizeof(*d));
	d->flags = DB_DBT_MALLOC;
}

/* Position only: fetch no data bytes. */
static void dbt_none(DBT *d)
{
	memset(d, 0, sizeof(*d));
	d->flags = DB_DBT_USERMEM | DB_DBT_PARTIAL;
}

static bool is_name(const char *s, size_t cap)
{
	return s != NULL && s[0] != '\0' && memchr(s, '\0', cap) != NULL;
}

/*
 * Every certificate record read counts (cmk_store_records_read()): reads by
 * id and by walks, and the index callbacks, which Berkeley DB calls with a
 * record when it updates or builds an index.
 */
static void count_read_st(struct cmk_store *st)
{
	atomic_fetch_add_explicit(&st->records_read, 1, memory_order_relaxed);
}

static void count_read(struct store_gen *g)
{
	count_read_st(g->st);
}

uint64_t cmk_store_records_read(const struct cmk_store *st)
{
	return atomic_load(&((struct cmk_store *)st)->records_read);
}

/* ---- databases ---- */

/* `pagesize` 0: Berkeley DB's choice; a page size applies only when the file is created. */
static int open_db_paged(struct store_gen *g, DB_TXN *t, DB **out, const char *file, u_int32_t db_flags,
			 u_int32_t pagesize)
{
	DB *db;
	int ret;

	if ((ret = db_create(&db, g->env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating a handle for %s", g->st->path, file);
	if ((pagesize != 0 && (ret = db->set_pagesize(db, pagesize)) != 0) ||
	    (db_flags != 0 && (ret = db->set_flags(db, db_flags)) != 0) ||
	    (ret = db->open(db, t, file, NULL, DB_BTREE, DB_CREATE | DB_THREAD, 0600)) != 0) {
		/* Nothing to flush; and a flush could wait on a log a dead process holds. */
		db->close(db, DB_NOSYNC);
		return db_fail(g, ret, "store_open: %s: opening %s", g->st->path, file);
	}
	*out = db;
	return 0;
}

static int open_db(struct store_gen *g, DB_TXN *t, DB **out, const char *file, u_int32_t db_flags)
{
	return open_db_paged(g, t, out, file, db_flags, 0);
}

/* A secondary key: BDB frees it once the index is updated. */
static int index_result(DBT *result, const void *p, size_t n)
{
	void *copy = malloc(n);

	if (copy == NULL)
		return ENOMEM;
	memcpy(copy, p, n);
	memset(result, 0, sizeof(*result));
	result->data = copy;
	result->size = (u_int32_t)n;
	result->flags = DB_DBT_APPMALLOC;
	return 0;
}

/*
 * Index callbacks.  A record that does not decode is left out of every index
 * (it cannot be reached through one); cmk_store_cert_get() by id still
 * reports it as corrupt.
 */
static int index_tts(DB *sdb, const DBT *key, const DBT *data, DBT *result)
{
	struct cmk_cert_keys k;
	uint8_t buf[CMK_TTS_KEY_MAX];
	size_t n;

	count_read_st(sdb->app_private);
	(void)key;
	if (cmk_codec_cert_keys(data->data, data->size, &k) != 0 ||
	    (n = cmk_codec_tts_key(k.tenant, k.tenant_len, k.type, k.type_len, k.status, buf)) == 0)
		return DB_DONOTINDEX;
	return index_result(result, buf, n);
}

/* Only active records with a renewal time wait for the scheduler. */
static int index_renew(DB *sdb, const DBT *key, const DBT *data, DBT *result)
{
	struct cmk_cert_keys k;
	uint8_t buf[8];

	count_read_st(sdb->app_private);
	(void)key;
	if (cmk_codec_cert_keys(data->data, data->size, &k) != 0 || k.status != CMK_ST_ACTIVE || k.renew_at <= 0)
		return DB_DONOTINDEX;
	cmk_be64_put(buf, (uint64_t)k.renew_at);
	return index_result(result, buf, sizeof(buf));
}

static int index_serial(DB *sdb, const DBT *key, const DBT *data, DBT *result)
{
	struct cmk_cert_keys k;

	count_read_st(sdb->app_private);
	(void)key;
	if (cmk_codec_cert_keys(data->data, data->size, &k) != 0 || k.serial_len == 0)
		return DB_DONOTINDEX;
	return index_result(result, k.serial, k.serial_len);
}

/*
 * Every record under its status, and a record whose revocation is pending
 * under CMK_STATUS_KEY_REVOKING as well: recovery and the scheduler's
 * cleanup read only the records in the states they handle.
 */
static int index_status(DB *sdb, const DBT *key, const DBT *data, DBT *result)
{
	struct cmk_cert_keys k;
	uint8_t keys[CMK_STATUS_KEYS_MAX];
	size_t n;
	DBT *many;
	uint8_t *bytes;

	count_read_st(sdb->app_private);
	(void)key;
	if (cmk_codec_cert_keys(data->data, data->size, &k) != 0 ||
	    (n = cmk_codec_status_keys(k.status, k.flags, keys)) == 0)
		return DB_DONOTINDEX;
	if (n == 1)
		return index_result(result, keys, 1);
	/* Several keys: an array of DBTs, their bytes in the same allocation (BDB frees it whole). */
	if ((many = calloc(1, n * sizeof(DBT) + n)) == NULL)
		return ENOMEM;
	bytes = (uint8_t *)(many + n);
	for (size_t i = 0; i < n; i++) {
		bytes[i] = keys[i];
		many[i].data = bytes + i;
		many[i].size = 1;
	}
	memset(result, 0, sizeof(*result));
	result->data = many;
	result->size = (u_int32_t)n;
	result->flags = DB_DBT_MULTIPLE | DB_DBT_APPMALLOC;
	return 0;
}

static int meta_init(struct store_gen *g, DB_TXN *t, uint8_t out[CMK_STORE_ID_LEN], uint32_t *format);
static int meta_put(struct store_gen *g, DB_TXN *t, const char *name, const void *buf, size_t len);

/*
 * Open every database and read (or create) the store id, all in transaction
 * t.  Associating never builds an index here (no DB_CREATE): Berkeley DB
 * would build every empty one by walking every record, at every open of a
 * store whose by_renew is empty because no active record has a renewal
 * time, and would build an added one in this one transaction, which at a
 * million records needs more locks than the environment has.  by_status
 * arrived with format 2: a store of format 1 is opened without it and
 * written as format 1 (records keep their chain, keys the large slots), as
 * the older code that may share it expects, until store_upgrade() builds it.
 */
static int open_all(struct store_gen *g, DB_TXN *t, uint8_t id[CMK_STORE_ID_LEN])
{
	int ret, rc;

	if ((rc = open_db(g, t, &g->meta, "meta.db", 0)) != 0 ||
	    (rc = open_db_paged(g, t, &g->certs, "certs.db", 0, CERTS_PAGE)) != 0 ||
	    (rc = open_db(g, t, &g->chains, "chains.db", 0)) != 0 ||
	    (rc = open_db(g, t, &g->by_tts, "by_tts.db", DB_DUP | DB_DUPSORT)) != 0 ||
	    (rc = open_db(g, t, &g->by_renew, "by_renew.db", DB_DUP | DB_DUPSORT)) != 0 ||
	    (rc = open_db(g, t, &g->by_serial, "by_serial.db", DB_DUP | DB_DUPSORT)) != 0 ||
	    (rc = open_db(g, t, &g->keystores, "keystores.db", 0)) != 0 ||
	    (rc = open_db(g, t, &g->changes, "changes.db", 0)) != 0 ||
	    (rc = open_db(g, t, &g->audit, "audit.db", 0)) != 0 ||
	    (rc = store_keys_open(g, t)) != 0 || (rc = store_pool_open(g, t)) != 0 ||
	    (rc = store_token_open(g, t)) != 0 || (rc = meta_init(g, t, id, &g->format)) != 0)
		return rc;
	if (g->format == CMK_STORE_FORMAT &&
	    (rc = open_db(g, t, &g->by_status, "by_status.db", DB_DUP | DB_DUPSORT)) != 0)
		return rc;
	g->by_tts->app_private = g->by_renew->app_private = g->by_serial->app_private = g->st;
	if ((ret = g->certs->associate(g->certs, t, g->by_tts, index_tts, 0)) != 0 ||
	    (ret = g->certs->associate(g->certs, t, g->by_renew, index_renew, 0)) != 0 ||
	    (ret = g->certs->associate(g->certs, t, g->by_serial, index_serial, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: attaching the indexes", g->st->path);
	if (g->by_status != NULL) {
		g->by_status->app_private = g->st;
		if ((ret = g->certs->associate(g->certs, t, g->by_status, index_status, 0)) != 0)
			return db_fail(g, ret, "store_open: %s: attaching the indexes", g->st->path);
	}
	return 0;
}

/*
 * Opening never waits on a lock: a lock held by a process that died inside
 * Berkeley DB is never released, and a process that waited for it would
 * hold back the recovery that has to run first.  So the opening transaction
 * asks for locks without waiting (DB_TXN_NOWAIT) and is retried; between
 * attempts a failure check finds a dead holder (and panics the environment
 * when only recovery helps, which ends this open with CMK_ERR_BUSY and the
 * generation broken).
 */
int store_open_dbs(struct store_gen *g, uint8_t id[CMK_STORE_ID_LEN])
{
	int64_t deadline = cmk_monotonic_ms() + OPEN_WAIT_MS;
	DB_TXN *t;
	int ret, rc;

	for (int attempt = 1;; attempt++) {
		if ((ret = g->env->txn_begin(g->env, NULL, &t, DB_TXN_NOWAIT)) != 0)
			return db_fail(g, ret, "store_open: %s: beginning a transaction", g->st->path);
		if ((rc = open_all(g, t, id)) == 0) {
			if ((ret = t->commit(t, 0)) == 0)
				return 0;
			rc = db_fail(g, ret, "store_open: %s: committing the store id", g->st->path);
		} else {
			t->abort(t);
		}
		store_close_dbs(g, false);
		if (rc != CMK_ERR_BUSY || gen_is_broken(g) || cmk_monotonic_ms() > deadline)
			return rc;
		if ((ret = g->env->failchk(g->env, 0)) == DB_RUNRECOVERY) {
			g->env->set_flags(g->env, DB_PANIC_ENVIRONMENT, 1);
			atomic_store(&g->broken, true);
			return cmk_fail(CMK_ERR_BUSY, "store_open: %s: a process died inside Berkeley DB; recovery "
					"must run first", g->st->path);
		}
		cmk_bdb_msg[0] = '\0';
		store_backoff(attempt < 10 ? attempt : 10);
	}
}

/* One transaction of the upgrade: index the records from *next on, UPGRADE_CHUNK of them. */
static int upgrade_chunk(struct store_gen *g, DB *ix, uint64_t *next, uint64_t *n, bool *done)
{
	uint8_t kb[8], keys[CMK_STATUS_KEYS_MAX];
	struct cmk_cert_keys ck;
	size_t i = 0, nk;
	DB_TXN *t;
	DBT k, d, sk;
	DBC *c = NULL;
	int ret, rc = 0;

	if ((ret = g->env->txn_begin(g->env, NULL, &t, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	if ((ret = g->certs->cursor(g->certs, t, &c, 0)) != 0)
		goto fail;
	cmk_be64_put(kb, *next);
	dbt_user(&k, kb, sizeof(kb), sizeof(kb));
	dbt_malloc(&d);
	for (ret = c->get(c, &k, &d, DB_SET_RANGE); ret == 0 && i < UPGRADE_CHUNK; ret = c->get(c, &k, &d, DB_NEXT)) {
		/* A damaged record is left out of every index (as the index callbacks do). */
		if (k.size == 8 && cmk_codec_cert_keys(d.data, d.size, &ck) == 0 &&
		    (nk = cmk_codec_status_keys(ck.status, ck.flags, keys)) > 0) {
			for (size_t j = 0; j < nk && ret == 0; j++) {
				dbt_in(&sk, &keys[j], 1);
				if ((ret = ix->put(ix, t, &sk, &k, DB_NODUPDATA)) == DB_KEYEXIST)
					ret = 0;
			}
		}
		cmk_freezero(d.data, d.size);
		dbt_malloc(&d);
		if (ret != 0)
			break;
		*next = cmk_be64_get(kb) + 1;
		i++;
	}
	cmk_freezero(d.data, d.size);
	*done = ret == DB_NOTFOUND;
	if (ret == DB_NOTFOUND || (ret == 0 && i == UPGRADE_CHUNK))
		ret = 0;
	if (ret != 0)
		goto fail;
	c->close(c);
	if ((ret = t->commit(t, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	*n += i;
	return 0;
fail:
	rc = db_fail(g, ret, "store_open: %s: upgrading (indexing records from %" PRIu64 ")", g->st->path, *next);
	if (c != NULL)
		c->close(c);
	t->abort(t);
	return rc;
}

/*
 * Bring a store of format 1 to the current format; the caller has it alone
 * (no other process has it open, store_env.c).  by_status is built in
 * transactions of UPGRADE_CHUNK records, written through a handle of its
 * own (Berkeley DB takes no direct writes to an attached index), then the
 * format is recorded and the databases are opened again, by_status
 * attached.  Interrupted, the store keeps format 1 and the next process to
 * open it alone starts again from an empty index.
 */
int store_upgrade(struct store_gen *g, uint8_t id[CMK_STORE_ID_LEN])
{
	uint64_t next = 1, n = 0;
	uint32_t count;
	uint8_t ver[4];
	bool done = false;
	DB *ix = NULL;
	DB_TXN *t;
	int ret, rc;

	cmk_log(CMK_LOG_INFO, "store_open: %s: store format %" PRIu32 " upgrading to %u: indexing the records by status",
		g->st->path, g->format, CMK_STORE_FORMAT);
	if ((ret = g->env->txn_begin(g->env, NULL, &t, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	if ((rc = open_db(g, t, &ix, "by_status.db", DB_DUP | DB_DUPSORT)) != 0) {
		t->abort(t);
		return rc;
	}
	/* What an interrupted upgrade left goes first. */
	if ((ret = ix->truncate(ix, t, &count, 0)) != 0 || (ret = t->commit(t, 0)) != 0) {
		if (ret != 0 && t != NULL)
			t->abort(t);
		ix->close(ix, 0);
		return db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	}
	/* The log is checkpointed and trimmed as it goes: indexing a million records writes hundreds of MB of it. */
	for (unsigned chunks = 1; !done && rc == 0; chunks++) {
		unsigned removed;

		if ((rc = upgrade_chunk(g, ix, &next, &n, &done)) == 0 && (chunks % 16 == 0 || done) &&
		    (ret = g->env->txn_checkpoint(g->env, 0, 0, done ? DB_FORCE : 0)) != 0)
			rc = db_fail(g, ret, "store_open: %s: upgrading: checkpoint", g->st->path);
		if (rc == 0 && (chunks % 16 == 0 || done))
			rc = store_remove_old_logs(g, &removed);
	}
	if ((ret = ix->close(ix, 0)) != 0 && rc == 0)
		rc = db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	if (rc != 0)
		return rc;
	/* From this commit on, only code that keeps by_status in step may write: older code refuses format 2. */
	cmk_be32_put(ver, CMK_STORE_FORMAT);
	if ((ret = g->env->txn_begin(g->env, NULL, &t, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	if ((rc = meta_put(g, t, "version", ver, sizeof(ver))) != 0) {
		t->abort(t);
		return rc;
	}
	if ((ret = t->commit(t, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: upgrading", g->st->path);
	store_close_dbs(g, true);
	if ((rc = store_open_dbs(g, id)) != 0)
		return rc;
	cmk_log(CMK_LOG_INFO, "store_open: %s: store format upgraded to %u (%" PRIu64 " records indexed)", g->st->path,
		CMK_STORE_FORMAT, n);
	return 0;
}

static int meta_get(struct store_gen *g, DB_TXN *t, const char *name, void *buf, size_t len, u_int32_t flags)
{
	DBT k, d;
	int ret;

	dbt_in(&k, name, strlen(name));
	dbt_user(&d, buf, 0, len);
	ret = g->meta->get(g->meta, t, &k, &d, flags);
	if (ret == DB_BUFFER_SMALL || (ret == 0 && d.size != len))
		return cmk_fail(CMK_ERR_STORE, "store: %s: meta value \"%s\" is damaged", g->st->path, name);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: reading meta value \"%s\"", g->st->path, name);
	return 0;
}

static int meta_put(struct store_gen *g, DB_TXN *t, const char *name, const void *buf, size_t len)
{
	DBT k, d;
	int ret;

	dbt_in(&k, name, strlen(name));
	dbt_in(&d, buf, len);
	if ((ret = g->meta->put(g->meta, t, &k, &d, 0)) != 0)
		return db_fail(g, ret, "store: %s: writing meta value \"%s\"", g->st->path, name);
	return 0;
}

/*
 * The first open gives the store its random id; every later open reads it
 * and checks the format.  *format: the format the store has (a new store
 * has the current one: its indexes are kept as it is filled).
 */
static int meta_init(struct store_gen *g, DB_TXN *t, uint8_t out[CMK_STORE_ID_LEN], uint32_t *format)
{
	uint8_t id[CMK_STORE_ID_LEN], ver[4], next[8];
	uint32_t version;
	int rc;

	*format = CMK_STORE_FORMAT;
	rc = meta_get(g, t, "store_id", id, sizeof(id), DB_RMW);
	if (rc == CMK_ERR_NOTFOUND) {
		cmk_be32_put(ver, CMK_STORE_FORMAT);
		cmk_be64_put(next, 1);
		if ((rc = cmk_random(id, sizeof(id))) != 0 ||
		    (rc = meta_put(g, t, "version", ver, sizeof(ver))) != 0 ||
		    (rc = meta_put(g, t, "next_id", next, sizeof(next))) != 0 ||
		    (rc = meta_put(g, t, "store_id", id, sizeof(id))) != 0)
			return rc;
		cmk_log(CMK_LOG_INFO, "store_open: %s: created a new store", g->st->path);
		memcpy(out, id, sizeof(id));
		return 0;
	} else if (rc != 0) {
		return rc;
	}
	if ((rc = meta_get(g, t, "version", ver, sizeof(ver), 0)) != 0)
		return rc;
	*format = version = cmk_be32_get(ver);
	if (version == 0)
		return cmk_fail(CMK_ERR_STORE, "store_open: %s: meta value \"version\" is damaged", g->st->path);
	if (version > CMK_STORE_FORMAT)
		return cmk_fail(CMK_ERR_STORE, "store_open: %s: store format %" PRIu32 " was written by a newer "
				"cmkcert; this one reads format %u or older", g->st->path, version, CMK_STORE_FORMAT);
	memcpy(out, id, sizeof(id));
	return 0;
}


static void close_db(struct store_gen *g, DB **db, u_int32_t flags)
{
	int ret;

	if (*db != NULL && (ret = (*db)->close(*db, flags)) != 0 && flags == 0)
		cmk_log(CMK_LOG_WARN, "store_close: %s: %s", g->st->path, db_strerror(ret));
	*db = NULL;
}

/* `sync`: flush what the handles cached (a normal close); false after a failed open, which wrote nothing. */
void store_close_dbs(struct store_gen *g, bool sync)
{
	u_int32_t flags = sync ? 0 : DB_NOSYNC;

	/* Indexes before the database they index. */
	close_db(g, &g->by_tts, flags);
	close_db(g, &g->by_renew, flags);
	close_db(g, &g->by_serial, flags);
	close_db(g, &g->by_status, flags);
	close_db(g, &g->certs, flags);
	close_db(g, &g->chains, flags);
	close_db(g, &g->keystores, flags);
	close_db(g, &g->changes, flags);
	close_db(g, &g->audit, flags);
	store_keys_close(g, flags);
	store_pool_close(g, flags);
	store_token_close(g, flags);
	close_db(g, &g->meta, flags);
}

/* ---- reads ---- */

/*
 * Run `fn` in the caller's transaction, or else in a short read-committed
 * transaction of its own, retried when chosen as a deadlock victim: it never
 * sees uncommitted data and holds its locks only for the read.
 */
int in_read_txn(struct cmk_store *st, struct cmk_txn *txn, read_fn fn, void *arg)
{
	struct store_gen *g;
	DB_TXN *t;
	int ret, rc;

	if (txn != NULL) {
		if ((rc = gen_enter_txn(txn)) != 0)
			return rc;
		rc = fn(txn->g, txn->t, DB_RMW, arg);
		gen_leave(txn->g);
		return rc;
	}
	for (int attempt = 1;; attempt++) {
		if ((rc = gen_enter(st, &g)) != 0)
			return rc;
		if ((ret = g->env->txn_begin(g->env, NULL, &t, DB_READ_COMMITTED)) != 0) {
			rc = db_fail(g, ret, "store: %s: beginning a read", st->path);
		} else if ((rc = fn(g, t, 0, arg)) == 0) {
			if ((ret = t->commit(t, 0)) != 0)
				rc = db_fail(g, ret, "store: %s: ending a read", st->path);
		} else if (!gen_is_broken(g)) {
			t->abort(t);
		}
		gen_leave(g);
		if (rc != CMK_ERR_BUSY || attempt == READ_RETRIES)
			return rc;
		store_backoff(attempt);
	}
}

/* ---- the change log ---- */

/* Drop entries up to `upto`, oldest first; called every TRIM_EVERY appends, so each call removes few. */
static int change_trim(struct store_gen *g, DB_TXN *t, uint64_t upto)
{
	uint8_t kb[8];
	DBT k, d;
	DBC *c;
	int ret;

	if ((ret = g->changes->cursor(g->changes, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: trimming the change log", g->st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	while ((ret = c->get(c, &k, &d, DB_NEXT | DB_RMW)) == 0 && k.size == 8 && cmk_be64_get(kb) <= upto)
		if ((ret = c->del(c, 0)) != 0)
			break;
	c->close(c);
	if (ret != 0 && ret != DB_NOTFOUND)
		return db_fail(g, ret, "store: %s: trimming the change log", g->st->path);
	return 0;
}

/* Append (seq = last + 1, tenant, type, now) inside the mutation's own transaction. */
static int change_append(struct store_gen *g, DB_TXN *t, const char *tenant, const char *type)
{
	struct cmk_change ch = { .time = cmk_now() };
	uint8_t kb[8], *buf = NULL;
	size_t len;
	DBT k, d;
	DBC *c;
	int ret, rc;

	if ((ret = g->changes->cursor(g->changes, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: appending a change", g->st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	/* DB_RMW: the last page stays write-locked, so concurrent appenders queue instead of colliding. */
	ret = c->get(c, &k, &d, DB_LAST | DB_RMW);
	c->close(c);
	if (ret == 0 && k.size != 8)
		return cmk_fail(CMK_ERR_STORE, "store: %s: the change log has a damaged key", g->st->path);
	if (ret != 0 && ret != DB_NOTFOUND)
		return db_fail(g, ret, "store: %s: reading the last change", g->st->path);
	ch.seq = ret == 0 ? cmk_be64_get(kb) + 1 : 1;
	snprintf(ch.tenant, sizeof(ch.tenant), "%s", tenant);
	snprintf(ch.type, sizeof(ch.type), "%s", type);
	if ((rc = cmk_codec_change_encode(&ch, &buf, &len)) != 0)
		return rc;
	cmk_be64_put(kb, ch.seq);
	dbt_in(&k, kb, sizeof(kb));
	dbt_in(&d, buf, len);
	ret = g->changes->put(g->changes, t, &k, &d, DB_NOOVERWRITE);
	free(buf);
	if (ret == DB_KEYEXIST)
		return cmk_fail(CMK_ERR_BUSY, "store: %s: change %" PRIu64 " was taken concurrently", g->st->path, ch.seq);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: appending change %" PRIu64, g->st->path, ch.seq);
	if (ch.seq % TRIM_EVERY == 0 && ch.seq > CMK_STORE_CHANGES_KEPT)
		return change_trim(g, t, ch.seq - CMK_STORE_CHANGES_KEPT);
	return 0;
}

static int change_last_read(struct store_gen *g, uint64_t *seq)
{
	uint8_t kb[8];
	DBT k, d;
	DBC *c;
	int ret;

	/* No transaction: a read-committed cursor that waits only for a writer of the last page to commit. */
	if ((ret = g->changes->cursor(g->changes, NULL, &c, DB_READ_COMMITTED)) != 0)
		return db_fail(g, ret, "store_change_last: %s", g->st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	ret = c->get(c, &k, &d, DB_LAST);
	c->close(c);
	if (ret == DB_NOTFOUND) {
		*seq = 0;
		return 0;
	}
	if (ret != 0)
		return db_fail(g, ret, "store_change_last: %s", g->st->path);
	if (k.size != 8)
		return cmk_fail(CMK_ERR_STORE, "store_change_last: %s: the change log has a damaged key", g->st->path);
	*seq = cmk_be64_get(kb);
	return 0;
}

int cmk_store_change_last(struct cmk_store *st, uint64_t *seq)
{
	int rc;

	*seq = 0;
	for (int attempt = 1;; attempt++) {
		struct store_gen *g;

		if ((rc = gen_enter(st, &g)) != 0)
			return rc;
		rc = change_last_read(g, seq);
		gen_leave(g);
		if (rc != CMK_ERR_BUSY || attempt == READ_RETRIES)
			return rc;
		store_backoff(attempt);
	}
}

#define CHANGE_CHUNK 128

struct change_walk {
	uint64_t next;         /* first sequence not delivered yet */
	bool first, done;
	struct cmk_change ch[CHANGE_CHUNK + 1];
	size_t n;
};

/* A change that stands for "anything may have changed" (trimmed or unreadable entries). */
static void change_wildcard(struct cmk_change *ch, uint64_t seq)
{
	memset(ch, 0, sizeof(*ch));
	ch->seq = seq;
}

static int change_fill(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct change_walk *w = arg;
	uint64_t next = w->next, seq;
	uint8_t kb[8];
	DBT k, d;
	DBC *c;
	int ret;

	(void)rmw;
	w->n = 0;
	if ((ret = g->changes->cursor(g->changes, t, &c, 0)) != 0)
		return db_fail(g, ret, "store_changes_since: %s", g->st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	/* Entries after the caller's position were trimmed: say so before the rest. */
	if (w->first && (ret = c->get(c, &k, &d, DB_FIRST)) == 0 && k.size == 8 && cmk_be64_get(kb) > next)
		change_wildcard(&w->ch[w->n++], cmk_be64_get(kb) - 1);
	if (ret != 0 && ret != DB_NOTFOUND)
		goto out;
	cmk_be64_put(kb, next);
	dbt_user(&k, kb, sizeof(kb), sizeof(kb));
	dbt_malloc(&d);
	for (ret = c->get(c, &k, &d, DB_SET_RANGE); ret == 0; ret = c->get(c, &k, &d, DB_NEXT)) {
		if (k.size != 8) {
			ret = EINVAL;
			break;
		}
		seq = cmk_be64_get(kb);
		/* An unreadable entry still tells the reader that something changed. */
		if (cmk_codec_change_decode(seq, d.data, d.size, &w->ch[w->n]) != 0) {
			cmk_log(CMK_LOG_ERROR, "%s", cmk_errdetail());
			change_wildcard(&w->ch[w->n], seq);
		}
		free(d.data);
		dbt_malloc(&d);
		w->n++;
		next = seq + 1;
		if (w->n >= CHANGE_CHUNK)
			break;
	}
out:
	c->close(c);
	if (ret != 0 && ret != DB_NOTFOUND) {
		w->n = 0;
		return db_fail(g, ret, "store_changes_since: %s", g->st->path);
	}
	w->done = ret == DB_NOTFOUND;
	w->first = false;
	w->next = next;
	return 0;
}

int cmk_store_changes_since(struct cmk_store *st, uint64_t after, cmk_change_cb cb, void *arg)
{
	struct change_walk *w;
	int rc = 0;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	w->next = after + 1;
	w->first = true;
	while (rc == 0 && !w->done) {
		if ((rc = in_read_txn(st, NULL, change_fill, w)) != 0)
			break;
		for (size_t i = 0; i < w->n && rc == 0; i++)
			rc = cb(&w->ch[i], arg);
	}
	free(w);
	return rc;
}

/* ---- certificates ---- */

static int cert_next_id(struct store_gen *g, struct cmk_txn *txn, uint64_t *id)
{
	uint8_t b[8];
	uint64_t v;
	int rc;

	*id = 0;
	if ((rc = meta_get(g, txn->t, "next_id", b, sizeof(b), DB_RMW)) != 0)
		return rc;
	if ((v = cmk_be64_get(b)) == 0 || v == UINT64_MAX)
		return cmk_fail(CMK_ERR_STORE, "store: %s: meta value \"next_id\" is damaged", g->st->path);
	cmk_be64_put(b, v + 1);
	if ((rc = meta_put(g, txn->t, "next_id", b, sizeof(b))) != 0)
		return rc;
	txn->wrote = true;
	*id = v;
	return 0;
}

int cmk_store_cert_next_id(struct cmk_txn *txn, uint64_t *id)
{
	int rc;

	*id = 0;
	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	rc = cert_next_id(txn->g, txn, id);
	gen_leave(txn->g);
	return rc;
}

/* ---- CA chains, kept once ---- */

/*
 * Every record of a type carries the same CA chain (until the CA changes):
 * chains.db keeps each distinct chain once, under the SHA-256 of its text,
 * and a record names it.  Chains are public and never removed: there is one
 * per CA generation.
 */
static int chain_keep(struct store_gen *g, DB_TXN *t, const char *pem, uint8_t id[CMK_CHAIN_ID_LEN])
{
	size_t len = strlen(pem);
	DBT k, d;
	int ret;

	cmk_sha256(pem, len, id);
	dbt_in(&k, id, CMK_CHAIN_ID_LEN);
	dbt_none(&d);
	/* Usually there already: a read lock only, so writers of different records do not queue here. */
	ret = g->chains->get(g->chains, t, &k, &d, 0);
	if (ret == DB_NOTFOUND) {
		dbt_in(&d, pem, len);
		ret = g->chains->put(g->chains, t, &k, &d, 0);
	}
	if (ret != 0)
		return db_fail(g, ret, "store_cert_put: %s: keeping a CA chain", g->st->path);
	return 0;
}

static int chain_read(struct store_gen *g, DB_TXN *t, const uint8_t id[CMK_CHAIN_ID_LEN], char **pem)
{
	DBT k, d;
	int ret;

	dbt_in(&k, id, CMK_CHAIN_ID_LEN);
	dbt_malloc(&d);
	if ((ret = g->chains->get(g->chains, t, &k, &d, 0)) == DB_NOTFOUND)
		return cmk_fail(CMK_ERR_STORE, "store: %s: a record names a CA chain the store does not have",
				g->st->path);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: reading a CA chain", g->st->path);
	/* As text: terminated here (the stored bytes have no NUL). */
	if ((*pem = realloc(d.data, d.size + 1)) == NULL) {
		free(d.data);
		return CMK_ERR_NOMEM;
	}
	(*pem)[d.size] = '\0';
	return 0;
}

/* Decode a certificate record read in t, with its sealed key and CA chain when it names them. */
static int decode_record(struct store_gen *g, DB_TXN *t, u_int32_t rmw, uint64_t id, const void *data, size_t size,
			 struct cmk_cert_record *out)
{
	struct cmk_cert_refs refs;
	int rc;

	if ((rc = cmk_codec_cert_decode_refs(id, data, size, out, &refs)) != 0)
		return rc;
	if ((refs.has_chain_id && (rc = chain_read(g, t, refs.chain_id, &out->chain_pem)) != 0) ||
	    (refs.key_slot != 0 &&
	     (rc = store_key_read(g, t, refs.key_slot, rmw, &out->sealed_key, &out->sealed_key_len)) != 0))
		cmk_cert_record_clear(out);
	return rc;
}

static int cert_read(struct store_gen *g, DB_TXN *t, uint64_t id, u_int32_t flags, struct cmk_cert_record *out)
{
	uint8_t kb[8];
	DBT k, d;
	int ret, rc;

	cmk_be64_put(kb, id);
	dbt_in(&k, kb, sizeof(kb));
	dbt_malloc(&d);
	if ((ret = g->certs->get(g->certs, t, &k, &d, flags)) != 0)
		return db_fail(g, ret, "store: certificate record %" PRIu64, id);
	count_read(g);
	rc = decode_record(g, t, flags, id, d.data, d.size, out);
	cmk_freezero(d.data, d.size);
	return rc;
}

struct cert_get_arg {
	uint64_t id;
	struct cmk_cert_record *out;
};

static int cert_get_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct cert_get_arg *a = arg;

	return cert_read(g, t, a->id, rmw, a->out);
}

int cmk_store_cert_get(struct cmk_store *st, struct cmk_txn *txn, uint64_t id, struct cmk_cert_record *out)
{
	struct cert_get_arg a = { id, out };

	memset(out, 0, sizeof(*out));
	return in_read_txn(st, txn, cert_get_fn, &a);
}

/*
 * The entry with the highest primary id under secondary key `key`: position
 * on the first key after it (key || 0x00 is the smallest such key) and step
 * back.  Duplicates are sorted by id, so that entry is the newest record.
 */
static int find_last(struct store_gen *g, DB_TXN *t, DB *sdb, const uint8_t *key, size_t n, u_int32_t rmw,
		     struct cmk_cert_record *out)
{
	uint8_t kb[FIND_KEY_MAX + 1], pb[8];
	DBT k, p, d;
	DBC *c;
	int ret, rc;

	memcpy(kb, key, n);
	kb[n] = 0;
	if ((ret = sdb->cursor(sdb, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: opening an index cursor", g->st->path);
	dbt_user(&k, kb, n + 1, sizeof(kb));
	dbt_user(&p, pb, 0, sizeof(pb));
	dbt_none(&d);
	ret = c->pget(c, &k, &p, &d, DB_SET_RANGE | rmw);
	dbt_malloc(&d);
	if (ret == 0)
		ret = c->pget(c, &k, &p, &d, DB_PREV | rmw);
	else if (ret == DB_NOTFOUND)
		ret = c->pget(c, &k, &p, &d, DB_LAST | rmw);
	c->close(c);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: index lookup", g->st->path);
	count_read(g);
	if (k.size != n || memcmp(kb, key, n) != 0 || p.size != 8)
		rc = cmk_fail(CMK_ERR_NOTFOUND, "store: no matching certificate record");
	else
		rc = decode_record(g, t, rmw, cmk_be64_get(pb), d.data, d.size, out);
	cmk_freezero(d.data, d.size);
	return rc;
}

struct find_arg {
	bool by_serial;                /* else by (tenant, type, status) */
	uint8_t key[FIND_KEY_MAX];
	size_t n;
	struct cmk_cert_record *out;
};

static int find_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct find_arg *a = arg;

	return find_last(g, t, a->by_serial ? g->by_serial : g->by_tts, a->key, a->n, rmw, a->out);
}

int cmk_store_cert_find(struct cmk_store *st, struct cmk_txn *txn, const char *tenant, const char *type,
			enum cmk_status status, struct cmk_cert_record *out)
{
	struct find_arg a = { .by_serial = false, .out = out };

	memset(out, 0, sizeof(*out));
	if (tenant == NULL || type == NULL ||
	    (a.n = cmk_codec_tts_key(tenant, strlen(tenant), type, strlen(type), status, a.key)) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_cert_find: bad tenant, type or status");
	return in_read_txn(st, txn, find_fn, &a);
}

int cmk_store_cert_by_serial(struct cmk_store *st, struct cmk_txn *txn, const char *serial,
			     struct cmk_cert_record *out)
{
	struct find_arg a = { .by_serial = true, .out = out };

	memset(out, 0, sizeof(*out));
	if (serial == NULL || (a.n = strlen(serial)) == 0 || a.n >= CMK_SERIAL_MAX)
		return cmk_fail(CMK_ERR_INVALID, "store_cert_by_serial: serial is empty or too long");
	memcpy(a.key, serial, a.n);
	return in_read_txn(st, txn, find_fn, &a);
}

/* A record never moves to another (tenant, type): the change log and file names depend on it. */
static int check_same_owner(struct store_gen *g, DB_TXN *t, const struct cmk_cert_record *rec, uint32_t *old_slot)
{
	struct cmk_cert_record old;
	struct cmk_cert_keys k;
	uint8_t kb[8];
	DBT key, d;
	int ret, rc = 0;

	*old_slot = 0;
	cmk_be64_put(kb, rec->id);
	dbt_in(&key, kb, sizeof(kb));
	dbt_malloc(&d);
	ret = g->certs->get(g->certs, t, &key, &d, DB_RMW);
	if (ret == DB_NOTFOUND)
		return 0;
	if (ret != 0)
		return db_fail(g, ret, "store_cert_put: reading record %" PRIu64, rec->id);
	/* A damaged old record may be overwritten: that is how it gets repaired. */
	if (cmk_codec_cert_keys(d.data, d.size, &k) == 0 &&
	    (k.tenant_len != strlen(rec->tenant) || memcmp(k.tenant, rec->tenant, k.tenant_len) != 0 ||
	     k.type_len != strlen(rec->type) || memcmp(k.type, rec->type, k.type_len) != 0))
		rc = cmk_fail(CMK_ERR_INVALID, "store_cert_put: record %" PRIu64 " belongs to another tenant or type",
			      rec->id);
	else if (cmk_codec_cert_decode_slot(rec->id, d.data, d.size, &old, old_slot) == 0)
		cmk_cert_record_clear(&old);
	cmk_freezero(d.data, d.size);
	return rc;
}

/* At most one active record per (tenant, type) (DESIGN §5). */
static int check_single_active(struct store_gen *g, DB_TXN *t, const struct cmk_cert_record *rec)
{
	uint8_t kb[CMK_TTS_KEY_MAX], pb[8];
	uint64_t other = 0;
	DBT k, p, d;
	DBC *c;
	size_t n;
	int ret;

	n = cmk_codec_tts_key(rec->tenant, strlen(rec->tenant), rec->type, strlen(rec->type), CMK_ST_ACTIVE, kb);
	if ((ret = g->by_tts->cursor(g->by_tts, t, &c, 0)) != 0)
		return db_fail(g, ret, "store_cert_put: %s: opening an index cursor", g->st->path);
	dbt_in(&k, kb, n);
	dbt_user(&p, pb, 0, sizeof(pb));
	dbt_none(&d);
	for (ret = c->pget(c, &k, &p, &d, DB_SET | DB_RMW); ret == 0; ret = c->pget(c, &k, &p, &d, DB_NEXT_DUP | DB_RMW)) {
		if (p.size == 8 && cmk_be64_get(pb) != rec->id) {
			other = cmk_be64_get(pb);
			break;
		}
	}
	c->close(c);
	if (ret != 0 && ret != DB_NOTFOUND)
		return db_fail(g, ret, "store_cert_put: %s: reading the index", g->st->path);
	if (other != 0)
		return cmk_fail(CMK_ERR_STATE, "store_cert_put: %s/%s already has active record %" PRIu64
				"; demote it before activating record %" PRIu64, rec->tenant, rec->type, other, rec->id);
	return 0;
}

/*
 * The record's sealed key into its slot: kept when unchanged, written when
 * new or changed, destroyed (overwritten in place) when the record no
 * longer has one.  *slot: the old slot in, the slot the record names out.
 */
static int put_key(struct store_gen *g, DB_TXN *t, const struct cmk_cert_record *rec, uint32_t *slot)
{
	uint8_t *old = NULL;
	size_t old_len = 0;
	bool same;
	int rc;

	/* No key (or an empty one, which the record itself can say) needs no slot. */
	if (rec->sealed_key == NULL || rec->sealed_key_len == 0) {
		if (*slot == 0)
			return 0;
		rc = store_key_destroy(g, t, *slot);
		*slot = 0;
		return rc;
	}
	if (*slot != 0) {
		if ((rc = store_key_read(g, t, *slot, DB_RMW, &old, &old_len)) != 0 && rc != CMK_ERR_STORE)
			return rc;
		same = rc == 0 && old_len == rec->sealed_key_len && memcmp(old, rec->sealed_key, old_len) == 0;
		free(old);
		if (same)
			return 0;
	}
	return store_key_write(g, t, slot, rec->sealed_key, rec->sealed_key_len);
}

static int cert_put(struct store_gen *g, struct cmk_txn *txn, const struct cmk_cert_record *rec)
{
	struct cmk_cert_refs refs = { 0 };
	uint8_t kb[8], *buf = NULL;
	size_t len = 0;
	DBT k, d;
	int ret, rc;

	if (rec->id == 0 || !is_name(rec->tenant, sizeof(rec->tenant)) || !is_name(rec->type, sizeof(rec->type)))
		return cmk_fail(CMK_ERR_INVALID, "store_cert_put: record needs an id, a tenant and a type");
	if ((rc = check_same_owner(g, txn->t, rec, &refs.key_slot)) != 0 ||
	    (rec->status == CMK_ST_ACTIVE && (rc = check_single_active(g, txn->t, rec)) != 0) ||
	    (rc = put_key(g, txn->t, rec, &refs.key_slot)) != 0)
		return rc;
	/* A store still shared with older code (format 1) gets records those can read: the chain inside. */
	if (rec->chain_pem != NULL && rec->chain_pem[0] != '\0' && g->format == CMK_STORE_FORMAT) {
		if ((rc = chain_keep(g, txn->t, rec->chain_pem, refs.chain_id)) != 0)
			return rc;
		refs.has_chain_id = true;
	}
	if ((rc = cmk_codec_cert_encode_refs(rec, &refs, &buf, &len)) != 0)
		return rc;
	if (len > UINT32_MAX) {
		rc = cmk_fail(CMK_ERR_INVALID, "store_cert_put: record %" PRIu64 " is too large", rec->id);
		goto out;
	}
	cmk_be64_put(kb, rec->id);
	dbt_in(&k, kb, sizeof(kb));
	dbt_in(&d, buf, len);
	if ((ret = g->certs->put(g->certs, txn->t, &k, &d, 0)) != 0) {
		rc = db_fail(g, ret, "store_cert_put: record %" PRIu64, rec->id);
		goto out;
	}
	txn->wrote = true;
	rc = change_append(g, txn->t, rec->tenant, rec->type);
out:
	/* The buffer held the sealed key: not plaintext, but there is no reason to leave it in freed memory. */
	cmk_freezero(buf, len);
	return rc;
}

int cmk_store_cert_put(struct cmk_txn *txn, const struct cmk_cert_record *rec)
{
	int rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	rc = cert_put(txn->g, txn, rec);
	gen_leave(txn->g);
	return rc;
}

/* ---- certificate walks ---- */

/*
 * The orders a walk reads records in, all by increasing id (within one
 * renewal time for BY_RENEW):
 *   BY_ID     certs itself: every record.
 *   BY_KEY    the duplicates of one secondary key, sorted by id: by_tts for
 *             (tenant, type, status), by_status for a status or "revocation
 *             pending".
 *   BY_RENEW  by_renew up to a time.
 *   BY_IDS    a tenant's records lie under several by_tts keys (one per
 *             type and status): their ids are read from by_tts first,
 *             sorted, and the records read by id.
 * Only a walk with no tenant and no status reads every record.
 */
enum walk_by { BY_ID, BY_KEY, BY_RENEW, BY_IDS };
enum walk_index { IX_TTS, IX_STATUS };

struct cert_walk {
	enum walk_by by;
	enum walk_by cur;      /* how this chunk reads: BY_ID in a store without by_status (format 1) */
	enum walk_index ix;    /* BY_KEY, and BY_IDS (by_tts) */
	const struct cmk_cert_filter *f;
	bool revoking;         /* only records whose revocation is pending */
	uint8_t key[CMK_TTS_KEY_MAX];  /* BY_KEY: the key; BY_IDS: the prefix of the keys */
	size_t key_len;
	int64_t now;
	int64_t renew_pos;     /* BY_RENEW: index key of the resume point */
	uint64_t next_id;      /* first id not yet looked at (within renew_pos for BY_RENEW) */
	uint64_t *ids;         /* BY_IDS: the ids, sorted */
	size_t n_ids, pos;
	bool done;
	struct cmk_cert_record recs[WALK_CHUNK];
	size_t n;
};

static bool name_is(const char *want, const char *have, size_t len)
{
	return want == NULL || (strlen(want) == len && memcmp(want, have, len) == 0);
}

/* Records are checked against the whole filter whatever the index: a record may have changed since. */
static bool walk_matches(const struct cert_walk *w, const struct cmk_cert_keys *k)
{
	const struct cmk_cert_filter *f = w->f;

	if (w->revoking && !cmk_codec_is_revoking(k->status, k->flags))
		return false;
	return f == NULL || (name_is(f->tenant, k->tenant, k->tenant_len) && name_is(f->type, k->type, k->type_len) &&
			     (f->status < 0 || f->status == (int)k->status));
}

/* Decode one walked record into the chunk; a damaged one is logged and skipped. */
static int walk_take(struct store_gen *g, DB_TXN *t, struct cert_walk *w, uint64_t id, const DBT *d)
{
	struct cmk_cert_keys k;
	int rc;

	count_read(g);
	if (cmk_codec_cert_keys(d->data, d->size, &k) != 0) {
		cmk_log(CMK_LOG_ERROR, "store: skipping corrupt certificate record %" PRIu64, id);
		return 0;
	}
	if (!walk_matches(w, &k))
		return 0;
	rc = decode_record(g, t, 0, id, d->data, d->size, &w->recs[w->n]);
	if (rc == CMK_ERR_STORE) {
		cmk_log(CMK_LOG_ERROR, "%s; skipped", cmk_errdetail());
		return 0;
	}
	if (rc == 0)
		w->n++;
	return rc;
}

/* Where a chunk starts, for each walk order. */
static int walk_position(struct cert_walk *w, DBC *c, DBT *k, DBT *p, DBT *d, uint8_t *kb, uint8_t *pb)
{
	int ret;

	cmk_be64_put(pb, w->next_id);
	switch (w->cur) {
	case BY_ID:
		return c->get(c, p, d, DB_SET_RANGE);
	case BY_KEY:
		return c->pget(c, k, p, d, DB_GET_BOTH_RANGE);
	case BY_RENEW:
		cmk_be64_put(kb, (uint64_t)w->renew_pos);
		ret = c->pget(c, k, p, d, DB_GET_BOTH_RANGE);
		if (ret != DB_NOTFOUND)
			return ret;
		/* Nothing left under renew_pos: go on with the next renewal time. */
		cmk_be64_put(kb, (uint64_t)w->renew_pos + 1);
		k->size = 8;
		return c->pget(c, k, p, d, DB_SET_RANGE);
	case BY_IDS:
		break;
	}
	return EINVAL;
}

static int walk_next(const struct cert_walk *w, DBC *c, DBT *k, DBT *p, DBT *d)
{
	switch (w->cur) {
	case BY_ID:
		return c->get(c, p, d, DB_NEXT);
	case BY_KEY:
		return c->pget(c, k, p, d, DB_NEXT_DUP);
	case BY_RENEW:
		return c->pget(c, k, p, d, DB_NEXT);
	case BY_IDS:
		break;
	}
	return EINVAL;
}

static DB *walk_db(const struct cert_walk *w, struct store_gen *g)
{
	switch (w->cur) {
	case BY_KEY:
		return w->ix == IX_TTS ? g->by_tts : g->by_status;
	case BY_RENEW:
		return g->by_renew;
	default:
		return g->certs;
	}
}

/* Read the records of the next ids of a BY_IDS walk into w->recs. */
static int walk_fill_ids(struct store_gen *g, DB_TXN *t, struct cert_walk *w)
{
	int ret = 0, rc = 0;

	while (w->pos < w->n_ids && w->n < WALK_CHUNK) {
		uint8_t kb[8];
		DBT k, d;

		cmk_be64_put(kb, w->ids[w->pos]);
		dbt_in(&k, kb, sizeof(kb));
		dbt_malloc(&d);
		ret = g->certs->get(g->certs, t, &k, &d, 0);
		/* Gone since its id was read: nothing to deliver. */
		if (ret == 0)
			rc = walk_take(g, t, w, w->ids[w->pos], &d);
		cmk_freezero(d.data, d.size);
		if (rc != 0)
			return rc;
		if (ret != 0 && ret != DB_NOTFOUND)
			return db_fail(g, ret, "store: %s: reading certificate record %" PRIu64, g->st->path,
				       w->ids[w->pos]);
		w->pos++;
	}
	w->done = w->pos == w->n_ids;
	return 0;
}

/* Read the next chunk of matching records into w->recs (at most WALK_CHUNK, looking at at most WALK_SCAN). */
static int walk_fill(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct cert_walk *w = arg;
	const int64_t start_renew = w->renew_pos;
	const uint64_t start_id = w->next_id;
	const size_t start_pos = w->pos;
	DB *db;
	uint8_t kb[CMK_TTS_KEY_MAX], pb[8];
	size_t scanned = 0;
	DBT k, p, d;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	w->n = 0;
	/* Both resume at next_id: a walk may change from one to the other when the store is upgraded. */
	w->cur = w->by == BY_KEY && w->ix == IX_STATUS && g->by_status == NULL ? BY_ID : w->by;
	db = walk_db(w, g);
	if (w->by == BY_IDS) {
		if ((rc = walk_fill_ids(g, t, w)) != 0)
			goto fail;
		return 0;
	}
	if ((ret = db->cursor(db, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: opening a cursor", g->st->path);
	memcpy(kb, w->key, w->key_len);
	dbt_user(&k, kb, w->cur == BY_KEY ? w->key_len : 8, sizeof(kb));
	dbt_user(&p, pb, 8, sizeof(pb));
	dbt_malloc(&d);
	for (ret = walk_position(w, c, &k, &p, &d, kb, pb); ret == 0; ret = walk_next(w, c, &k, &p, &d)) {
		uint64_t id = p.size == 8 ? cmk_be64_get(pb) : 0;

		if (w->cur == BY_RENEW && (k.size != 8 || (int64_t)cmk_be64_get(kb) > w->now)) {
			ret = DB_NOTFOUND;
			break;
		}
		rc = id != 0 ? walk_take(g, t, w, id, &d) : cmk_fail(CMK_ERR_STORE, "store: %s: damaged record key", g->st->path);
		cmk_freezero(d.data, d.size);
		dbt_malloc(&d);
		if (rc != 0)
			break;
		w->next_id = id + 1;
		if (w->cur == BY_RENEW)
			w->renew_pos = (int64_t)cmk_be64_get(kb);
		if (w->n == WALK_CHUNK || ++scanned == WALK_SCAN)
			break;
	}
	/* When the loop stopped on a record, d holds it; when it ran out, d.data is NULL. */
	cmk_freezero(d.data, d.size);
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: walking certificate records", g->st->path);
	if (rc != 0)
		goto fail;
	w->done = ret == DB_NOTFOUND;
	return 0;
fail:
	/* Forget the partial chunk; a retry starts again where this one did. */
	for (size_t i = 0; i < w->n; i++)
		cmk_cert_record_clear(&w->recs[i]);
	w->n = 0;
	w->renew_pos = start_renew;
	w->next_id = start_id;
	w->pos = start_pos;
	return rc;
}

static int walk_run(struct cmk_store *st, struct cmk_txn *txn, struct cert_walk *w, cmk_cert_cb cb, void *arg)
{
	int rc = 0;

	while (rc == 0 && !w->done) {
		if ((rc = in_read_txn(st, txn, walk_fill, w)) != 0)
			break;
		/* The cursor is closed and the read ended: the callback may use the store freely. */
		for (size_t i = 0; i < w->n; i++) {
			if (rc == 0)
				rc = cb(&w->recs[i], arg);
			cmk_cert_record_clear(&w->recs[i]);
		}
		w->n = 0;
	}
	return rc;
}

static int cmp_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * BY_IDS: the ids under every by_tts key that starts with w->key (a tenant,
 * or a tenant and a type) and, when the filter names one, ends with its
 * status.  Secondary entries only: no record is read here.
 */
static int collect_ids(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct cert_walk *w = arg;
	uint8_t kb[CMK_TTS_KEY_MAX], pb[8];
	size_t cap = 0;
	DBT k, p, d;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	w->n_ids = 0;
	if ((ret = g->by_tts->cursor(g->by_tts, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: opening an index cursor", g->st->path);
	memcpy(kb, w->key, w->key_len);
	dbt_user(&k, kb, w->key_len, sizeof(kb));
	dbt_user(&p, pb, 0, sizeof(pb));
	dbt_none(&d);
	for (ret = c->pget(c, &k, &p, &d, DB_SET_RANGE); ret == 0; ret = c->pget(c, &k, &p, &d, DB_NEXT)) {
		if (k.size <= w->key_len || memcmp(kb, w->key, w->key_len) != 0) {
			ret = DB_NOTFOUND;
			break;
		}
		if ((w->f->status >= 0 && kb[k.size - 1] != (uint8_t)w->f->status) || p.size != 8)
			continue;
		if (w->n_ids == cap) {
			size_t ncap = cap ? 2 * cap : 64;
			uint64_t *v = realloc(w->ids, ncap * sizeof(*v));

			if (v == NULL) {
				rc = CMK_ERR_NOMEM;
				break;
			}
			w->ids = v;
			cap = ncap;
		}
		w->ids[w->n_ids++] = cmk_be64_get(pb);
	}
	c->close(c);
	if (rc == 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: reading the tenant index", g->st->path);
	if (rc != 0)
		w->n_ids = 0;
	return rc;
}

/* How a filter is walked (see enum walk_by); CMK_ERR_INVALID for a malformed one. */
static int walk_plan(struct cert_walk *w, const struct cmk_cert_filter *f)
{
	w->by = BY_ID;
	w->f = f;
	if (f == NULL)
		return 0;
	if (f->status >= CMK_ST_COUNT)
		return cmk_fail(CMK_ERR_INVALID, "store_cert_each: bad status %d in the filter", f->status);
	if (f->tenant != NULL && f->type != NULL && f->status >= 0) {
		w->key_len = cmk_codec_tts_key(f->tenant, strlen(f->tenant), f->type, strlen(f->type),
					       (enum cmk_status)f->status, w->key);
		w->by = BY_KEY;
		w->ix = IX_TTS;
	} else if (f->tenant != NULL) {
		/* The prefix of the tenant's by_tts keys: tenant '\0', or tenant '\0' type '\0'. */
		size_t tl = strlen(f->tenant);

		if (f->type != NULL)
			w->key_len = cmk_codec_ks_key(f->tenant, tl, f->type, strlen(f->type), w->key);
		else if (tl > 0 && tl <= CMK_TENANT_MAX)
			memcpy(w->key, f->tenant, w->key_len = tl);
		if (w->key_len > 0)
			w->key[w->key_len++] = '\0';
		w->by = BY_IDS;
		w->ix = IX_TTS;
	} else if (f->status >= 0) {
		w->key_len = cmk_codec_status_keys((enum cmk_status)f->status, 0, w->key);
		w->by = BY_KEY;
		w->ix = IX_STATUS;
	}
	if (w->by != BY_ID && w->key_len == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_cert_each: bad tenant, type or status in the filter");
	return 0;
}

int cmk_store_cert_each(struct cmk_store *st, struct cmk_txn *txn, const struct cmk_cert_filter *f,
			cmk_cert_cb cb, void *arg)
{
	struct cert_walk *w;
	int rc;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = walk_plan(w, f)) == 0 && w->by == BY_IDS && (rc = in_read_txn(st, txn, collect_ids, w)) == 0 &&
	    w->n_ids > 0)
		qsort(w->ids, w->n_ids, sizeof(*w->ids), cmp_id);
	if (rc == 0)
		rc = walk_run(st, txn, w, cb, arg);
	free(w->ids);
	free(w);
	return rc;
}

int cmk_store_cert_revoking(struct cmk_store *st, struct cmk_txn *txn, cmk_cert_cb cb, void *arg)
{
	struct cert_walk *w;
	int rc;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	w->by = BY_KEY;
	w->ix = IX_STATUS;
	w->revoking = true;
	w->key[0] = CMK_STATUS_KEY_REVOKING;
	w->key_len = 1;
	rc = walk_run(st, txn, w, cb, arg);
	free(w);
	return rc;
}

int cmk_store_cert_due(struct cmk_store *st, struct cmk_txn *txn, int64_t now, cmk_cert_cb cb, void *arg)
{
	struct cert_walk *w;
	int rc;

	if (now <= 0)
		return 0;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	w->by = BY_RENEW;
	w->now = now;
	rc = walk_run(st, txn, w, cb, arg);
	free(w);
	return rc;
}

/* ---- keystores ---- */

static size_t ks_key(const char *tenant, const char *type, uint8_t kb[CMK_KS_KEY_MAX])
{
	if (tenant == NULL || type == NULL)
		return 0;
	return cmk_codec_ks_key(tenant, strnlen(tenant, CMK_TENANT_MAX + 1), type, strnlen(type, CMK_TYPE_MAX + 1), kb);
}

static int keystore_put(struct store_gen *g, struct cmk_txn *txn, const struct cmk_keystore_record *rec)
{
	uint8_t kb[CMK_KS_KEY_MAX], *buf = NULL;
	size_t n, len;
	DBT k, d;
	int ret, rc;

	if ((n = ks_key(rec->tenant, rec->type, kb)) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_keystore_put: record needs a tenant and a type");
	if ((rc = cmk_codec_keystore_encode(rec, &buf, &len)) != 0)
		return rc;
	dbt_in(&k, kb, n);
	dbt_in(&d, buf, len);
	ret = len <= UINT32_MAX ? g->keystores->put(g->keystores, txn->t, &k, &d, 0) : EINVAL;
	free(buf);
	if (ret != 0)
		return db_fail(g, ret, "store_keystore_put: %s/%s", rec->tenant, rec->type);
	txn->wrote = true;
	return change_append(g, txn->t, rec->tenant, rec->type);
}

int cmk_store_keystore_put(struct cmk_txn *txn, const struct cmk_keystore_record *rec)
{
	int rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	rc = keystore_put(txn->g, txn, rec);
	gen_leave(txn->g);
	return rc;
}

struct ks_get_arg {
	uint8_t key[CMK_KS_KEY_MAX];
	size_t n;
	struct cmk_keystore_record *out;
};

static int ks_get_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct ks_get_arg *a = arg;
	DBT k, d;
	int ret, rc;

	dbt_in(&k, a->key, a->n);
	dbt_malloc(&d);
	if ((ret = g->keystores->get(g->keystores, t, &k, &d, rmw)) != 0)
		return db_fail(g, ret, "store_keystore_get: %s", g->st->path);
	rc = cmk_codec_keystore_decode(d.data, d.size, a->out);
	free(d.data);
	return rc;
}

int cmk_store_keystore_get(struct cmk_store *st, struct cmk_txn *txn, const char *tenant, const char *type,
			   struct cmk_keystore_record *out)
{
	struct ks_get_arg a = { .out = out };

	memset(out, 0, sizeof(*out));
	if ((a.n = ks_key(tenant, type, a.key)) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_keystore_get: bad tenant or type");
	return in_read_txn(st, txn, ks_get_fn, &a);
}

static int keystore_del(struct store_gen *g, struct cmk_txn *txn, const char *tenant, const char *type)
{
	uint8_t kb[CMK_KS_KEY_MAX];
	size_t n;
	DBT k;
	int ret;

	if ((n = ks_key(tenant, type, kb)) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_keystore_del: bad tenant or type");
	dbt_in(&k, kb, n);
	if ((ret = g->keystores->del(g->keystores, txn->t, &k, 0)) != 0)
		return db_fail(g, ret, "store_keystore_del: %s/%s", tenant, type);
	txn->wrote = true;
	return change_append(g, txn->t, tenant, type);
}

int cmk_store_keystore_del(struct cmk_txn *txn, const char *tenant, const char *type)
{
	int rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	rc = keystore_del(txn->g, txn, tenant, type);
	gen_leave(txn->g);
	return rc;
}

struct ks_walk {
	uint8_t from[CMK_KS_KEY_MAX + 1];  /* the next chunk starts at the first key >= this */
	size_t from_len;
	bool done;
	struct cmk_keystore_record recs[WALK_CHUNK];
	size_t n;
};

static int ks_fill(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct ks_walk *w = arg;
	uint8_t kb[CMK_KS_KEY_MAX + 1], start[CMK_KS_KEY_MAX + 1];
	const size_t start_len = w->from_len;
	DBT k, d;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	w->n = 0;
	if ((ret = g->keystores->cursor(g->keystores, t, &c, 0)) != 0)
		return db_fail(g, ret, "store_keystore_each: %s", g->st->path);
	memcpy(start, w->from, start_len);
	memcpy(kb, w->from, start_len);
	dbt_user(&k, kb, start_len, sizeof(kb));
	dbt_malloc(&d);
	for (ret = c->get(c, &k, &d, start_len == 0 ? DB_FIRST : DB_SET_RANGE); ret == 0;
	     ret = c->get(c, &k, &d, DB_NEXT)) {
		rc = cmk_codec_keystore_decode(d.data, d.size, &w->recs[w->n]);
		free(d.data);
		dbt_malloc(&d);
		if (rc == CMK_ERR_STORE)
			cmk_log(CMK_LOG_ERROR, "%s; skipped", cmk_errdetail());
		else if (rc != 0)
			break;
		else
			w->n++;
		rc = 0;
		/* key || 0x00 is the smallest key after this one. */
		memcpy(w->from, kb, k.size);
		w->from[k.size] = 0;
		w->from_len = k.size + 1;
		if (w->n == WALK_CHUNK)
			break;
	}
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store_keystore_each: %s", g->st->path);
	if (rc != 0) {
		/* Forget the partial chunk; a retry starts again where this one did. */
		for (size_t i = 0; i < w->n; i++)
			cmk_keystore_record_clear(&w->recs[i]);
		w->n = 0;
		memcpy(w->from, start, start_len);
		w->from_len = start_len;
		return rc;
	}
	w->done = ret == DB_NOTFOUND;
	return 0;
}

int cmk_store_keystore_each(struct cmk_store *st, struct cmk_txn *txn, cmk_keystore_cb cb, void *arg)
{
	struct ks_walk *w;
	int rc = 0;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	while (rc == 0 && !w->done) {
		if ((rc = in_read_txn(st, txn, ks_fill, w)) != 0)
			break;
		for (size_t i = 0; i < w->n; i++) {
			if (rc == 0)
				rc = cb(&w->recs[i], arg);
			cmk_keystore_record_clear(&w->recs[i]);
		}
		w->n = 0;
	}
	free(w);
	return rc;
}

static int set_format(struct store_gen *g, struct cmk_txn *txn, uint32_t version)
{
	uint8_t b[4];
	int rc;

	cmk_be32_put(b, version);
	if ((rc = meta_put(g, txn->t, "version", b, sizeof(b))) == 0)
		txn->wrote = true;
	return rc;
}

int cmk_store_set_format(struct cmk_txn *txn, uint32_t version)
{
	int rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	rc = set_format(txn->g, txn, version);
	gen_leave(txn->g);
	return rc;
}

/* ---- the audit trail's anchor ---- */

#define ANCHOR_KEY "head"
#define ANCHOR_LEN (8 + CMK_AUDIT_MAC_LEN)

static int anchor_get_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct cmk_audit_anchor *out = arg;
	uint8_t buf[ANCHOR_LEN];
	DBT k, d;
	int ret;

	dbt_in(&k, ANCHOR_KEY, strlen(ANCHOR_KEY));
	dbt_user(&d, buf, 0, sizeof(buf));
	ret = g->audit->get(g->audit, t, &k, &d, rmw);
	if (ret == DB_BUFFER_SMALL || (ret == 0 && d.size != sizeof(buf)))
		return cmk_fail(CMK_ERR_STORE, "store: %s: the audit anchor is damaged", g->st->path);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: reading the audit anchor", g->st->path);
	out->seq = cmk_be64_get(buf);
	memcpy(out->mac, buf + 8, CMK_AUDIT_MAC_LEN);
	return 0;
}

int cmk_store_audit_anchor_get(struct cmk_store *st, struct cmk_txn *txn, struct cmk_audit_anchor *out)
{
	memset(out, 0, sizeof(*out));
	return in_read_txn(st, txn, anchor_get_fn, out);
}

static int anchor_put(struct store_gen *g, struct cmk_txn *txn, const struct cmk_audit_anchor *a)
{
	uint8_t buf[ANCHOR_LEN];
	DBT k, d;
	int ret;

	cmk_be64_put(buf, a->seq);
	memcpy(buf + 8, a->mac, CMK_AUDIT_MAC_LEN);
	dbt_in(&k, ANCHOR_KEY, strlen(ANCHOR_KEY));
	dbt_in(&d, buf, sizeof(buf));
	if ((ret = g->audit->put(g->audit, txn->t, &k, &d, 0)) != 0)
		return db_fail(g, ret, "store: %s: writing the audit anchor", g->st->path);
	txn->wrote = true;
	return 0;
}

int cmk_store_audit_anchor_put(struct cmk_txn *txn, const struct cmk_audit_anchor *a)
{
	int rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	rc = anchor_put(txn->g, txn, a);
	gen_leave(txn->g);
	return rc;
}

/* ---- shred bookkeeping ---- */

static int meta_u64(struct store_gen *g, DB_TXN *t, const char *name, u_int32_t rmw, uint64_t *v)
{
	uint8_t b[8];
	int rc = meta_get(g, t, name, b, sizeof(b), rmw);

	*v = rc == 0 ? cmk_be64_get(b) : 0;
	return rc == CMK_ERR_NOTFOUND ? 0 : rc;
}

static int meta_set_u64(struct store_gen *g, DB_TXN *t, const char *name, uint64_t v)
{
	uint8_t b[8];

	cmk_be64_put(b, v);
	return meta_put(g, t, name, b, sizeof(b));
}

int store_note_destroyed(struct store_gen *g, DB_TXN *t)
{
	uint64_t n;
	int rc;

	if ((rc = meta_u64(g, t, "keys_destroyed", DB_RMW, &n)) != 0)
		return rc;
	return meta_set_u64(g, t, "keys_destroyed", n + 1);
}

struct shred_mark {
	uint64_t destroyed, shredded;
};

static int shred_mark_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct shred_mark *m = arg;
	int rc;

	(void)rmw;
	if ((rc = meta_u64(g, t, "keys_destroyed", 0, &m->destroyed)) != 0)
		return rc;
	return meta_u64(g, t, "keys_shredded", 0, &m->shredded);
}

int store_shred_mark(struct store_gen *g, uint64_t *destroyed, uint64_t *shredded)
{
	struct shred_mark m = { 0, 0 };
	int rc = in_read_txn(g->st, NULL, shred_mark_fn, &m);

	*destroyed = m.destroyed;
	*shredded = m.shredded;
	return rc;
}

int store_shred_done(struct store_gen *g, uint64_t upto)
{
	for (int attempt = 1;; attempt++) {
		uint64_t done;
		DB_TXN *t;
		int ret, rc;

		if ((ret = g->env->txn_begin(g->env, NULL, &t, 0)) != 0)
			return db_fail(g, ret, "store: %s: beginning a transaction", g->st->path);
		rc = meta_u64(g, t, "keys_shredded", DB_RMW, &done);
		if (rc == 0 && upto > done)
			rc = meta_set_u64(g, t, "keys_shredded", upto);
		if (rc == 0) {
			if ((ret = t->commit(t, 0)) != 0)
				rc = db_fail(g, ret, "store: %s: committing", g->st->path);
		} else {
			t->abort(t);
		}
		if (rc != CMK_ERR_BUSY || attempt == READ_RETRIES)
			return rc;
		store_backoff(attempt);
	}
}

bool cmk_store_shred_pending(struct cmk_store *st)
{
	struct shred_mark m = { 0, 0 };

	return in_read_txn(st, NULL, shred_mark_fn, &m) == 0 && m.destroyed > m.shredded;
}
