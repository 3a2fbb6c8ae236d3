/*
 * store_bdb.c - the store (DESIGN §5) on Berkeley DB 5.3, and the only file
 * in the project that includes db.h.  It translates BDB's conventions
 * (0 / errno / DB_NOTFOUND / DB_LOCK_DEADLOCK / DB_RUNRECOVERY) into
 * CMK_ERR_* in one helper, db_fail(), and moves the bytes produced by
 * store_codec.c in and out of the databases.
 *
 * Several processes share one environment: the FUSE daemon for weeks, CLI
 * runs for a second.  DB_REGISTER records each process in __db.register so
 * that DB_RECOVER runs only when one of them died with the environment open;
 * plain DB_RECOVER would rebuild the environment under the feet of a live
 * daemon.  Because DB_REGISTER tracks processes, a process may have only one
 * handle on a given store open at a time; its threads share that handle.
 *
 * Locking: commits are durable.  A deadlock chosen by the detector, or a lock
 * that could not be granted, is CMK_ERR_BUSY: the caller aborts and retries.
 * Reads without a transaction run in a short read-committed transaction of
 * their own and are retried here, since nothing was delivered yet.
 * Walks read a small chunk of records, end the read (closing the cursor and
 * releasing its locks), and only then call the callback, so a callback may
 * start its own transaction and write without waiting on the walk's locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <db.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"
#include "store_int.h"

#define CACHE_BYTES (4u << 20)
#define LOG_FILE_BYTES (2u << 20)
#define CHECKPOINT_KB 1024u
#define READ_RETRIES 5
#define WALK_CHUNK 32
#define WALK_SCAN 256          /* records looked at per chunk of a filtered id walk */
#define TRIM_EVERY 128u        /* trim the change log when seq is a multiple of this */
#define FIND_KEY_MAX CMK_SERIAL_MAX  /* longest secondary key looked up: a serial or a tts key */

_Static_assert(CMK_TTS_KEY_MAX <= FIND_KEY_MAX, "tts keys must fit the lookup buffer");

struct cmk_store {
	struct cmk_store *next;  /* in open_stores */
	dev_t dev;
	ino_t ino;
	pid_t pid;
	DB_ENV *env;
	DB *meta, *certs, *by_tts, *by_renew, *by_serial, *keystores, *changes;
	char *path;
	uint8_t id[CMK_STORE_ID_LEN];
	atomic_bool broken;    /* the environment panicked: close and reopen */
};

struct cmk_txn {
	struct cmk_store *st;
	DB_TXN *t;
	bool wrote;
};

/*
 * Stores open in this process.  DB_REGISTER keeps one fcntl lock per process
 * on __db.register, and closing any descriptor of that file drops all of the
 * process's locks: a second handle on the same store, even one that fails to
 * open, would make the first look dead to other processes, which would then
 * run recovery under it.  So a second open is refused before BDB sees it.
 * Entries carry the pid: a child made by fork() may open the store itself.
 */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cmk_store *open_stores;

static int claim_store(struct cmk_store *st)
{
	struct stat sb;
	int rc = 0;

	if (stat(st->path, &sb) != 0)
		return cmk_fail(CMK_ERR_IO, "store_open: %s: %s", st->path, strerror(errno));
	st->dev = sb.st_dev;
	st->ino = sb.st_ino;
	st->pid = getpid();
	pthread_mutex_lock(&open_lock);
	for (struct cmk_store *o = open_stores; o != NULL; o = o->next)
		if (o->dev == st->dev && o->ino == st->ino && o->pid == st->pid)
			rc = cmk_fail(CMK_ERR_STATE, "store_open: %s is already open in this process; share that handle",
				      st->path);
	if (rc == 0) {
		st->next = open_stores;
		open_stores = st;
	}
	pthread_mutex_unlock(&open_lock);
	return rc;
}

static void release_store(struct cmk_store *st)
{
	pthread_mutex_lock(&open_lock);
	for (struct cmk_store **o = &open_stores; *o != NULL; o = &(*o)->next) {
		if (*o == st) {
			*o = st->next;
			break;
		}
	}
	pthread_mutex_unlock(&open_lock);
}

/* The text of BDB's last error message on this thread, added to the next failure's detail. */
static _Thread_local char bdb_msg[256];

static void on_bdb_error(const DB_ENV *env, const char *prefix, const char *msg)
{
	(void)env;
	(void)prefix;
	snprintf(bdb_msg, sizeof(bdb_msg), "%s", msg);
	cmk_log(CMK_LOG_WARN, "store: berkeley db: %s", msg);
}

static void on_bdb_event(DB_ENV *env, u_int32_t event, void *info)
{
	struct cmk_store *st = env->app_private;

	(void)info;
	if ((event == DB_EVENT_PANIC || event == DB_EVENT_REG_PANIC) && st != NULL) {
		atomic_store(&st->broken, true);
		cmk_log(CMK_LOG_ERROR, "store: %s: the environment needs recovery; close and reopen the store",
			st->path);
	}
}

/* The one translation of a BDB result into CMK_ERR_* with detail "<what>: <BDB text>". */
static int db_fail(struct cmk_store *st, int ret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int db_fail(struct cmk_store *st, int ret, const char *fmt, ...)
{
	char what[256], extra[sizeof(bdb_msg) + 3] = "";
	va_list ap;
	int code;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (bdb_msg[0] != '\0')
		snprintf(extra, sizeof(extra), " (%s)", bdb_msg);
	bdb_msg[0] = '\0';
	switch (ret) {
	case DB_NOTFOUND:
	case DB_KEYEMPTY:
		code = CMK_ERR_NOTFOUND;
		break;
	case DB_LOCK_DEADLOCK:
	case DB_LOCK_NOTGRANTED:
		code = CMK_ERR_BUSY;
		break;
	case DB_RUNRECOVERY:
		atomic_store(&st->broken, true);
		return cmk_fail(CMK_ERR_STORE, "%s: %s%s: run recovery: close and reopen the store; if that fails the "
				"same way, stop every process using %s and run db5.3_recover -h %s",
				what, db_strerror(ret), extra, st->path, st->path);
	case ENOSPC:
	case EIO:
		code = CMK_ERR_IO;
		break;
	case EACCES:
	case EPERM:
		code = CMK_ERR_PERM;
		break;
	/* ENOMEM from BDB usually means one of its regions (locks, cache) is full: a store problem. */
	default:
		code = CMK_ERR_STORE;
		break;
	}
	return cmk_fail(code, "%s: %s%s", what, db_strerror(ret), extra);
}

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

static void backoff(int attempt)
{
	struct timespec ts = { 0, attempt * 2000000L };

	nanosleep(&ts, NULL);
}

/* ---- opening ---- */

static int check_dir(const char *path)
{
	struct stat sb;
	int rc;

	if ((rc = cmk_mkdirs(path, 0700)) != 0)
		return rc;
	if (stat(path, &sb) != 0)
		return cmk_fail(CMK_ERR_IO, "store_open: %s: %s", path, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return cmk_fail(CMK_ERR_INVALID, "store_open: %s: not a directory", path);
	if (sb.st_uid != 0 && sb.st_uid != geteuid())
		return cmk_fail(CMK_ERR_PERM, "store_open: %s: owned by uid %u, must be owned by root",
				path, (unsigned)sb.st_uid);
	if ((sb.st_mode & 077) != 0)
		return cmk_fail(CMK_ERR_PERM, "store_open: %s: mode %04o gives group or others access, must be 0700",
				path, (unsigned)(sb.st_mode & 07777));
	return 0;
}

static int open_env(struct cmk_store *st)
{
	const u_int32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL | DB_THREAD |
				DB_REGISTER | DB_RECOVER;
	DB_ENV *env;
	char *reg;
	int ret;

	if ((ret = db_env_create(&env, 0)) != 0)
		return db_fail(st, ret, "store_open: %s: creating the environment handle", st->path);
	st->env = env;
	env->app_private = st;
	env->set_errcall(env, on_bdb_error);
	if ((ret = env->set_event_notify(env, on_bdb_event)) != 0 ||
	    (ret = env->set_cachesize(env, 0, CACHE_BYTES, 1)) != 0 ||
	    (ret = env->set_lk_detect(env, DB_LOCK_DEFAULT)) != 0 ||
	    (ret = env->set_lg_max(env, LOG_FILE_BYTES)) != 0 ||
	    (ret = env->log_set_config(env, DB_LOG_AUTO_REMOVE, 1)) != 0)
		return db_fail(st, ret, "store_open: %s: configuring the environment", st->path);
	/* Region and log files are created 0600 (the directory is 0700 as well). */
	if ((ret = env->open(env, st->path, flags, 0600)) != 0)
		return db_fail(st, ret, "store_open: %s: opening the environment", st->path);
	/* BDB creates its process registry 0660; it holds only process ids, but keep it private too. */
	if ((reg = cmk_asprintf("%s/__db.register", st->path)) == NULL)
		return CMK_ERR_NOMEM;
	if (chmod(reg, 0600) != 0 && errno != ENOENT)
		cmk_log(CMK_LOG_WARN, "store_open: %s: chmod: %s", reg, strerror(errno));
	free(reg);
	return 0;
}

static int open_db(struct cmk_store *st, DB **out, const char *file, u_int32_t db_flags)
{
	DB *db;
	int ret;

	if ((ret = db_create(&db, st->env, 0)) != 0)
		return db_fail(st, ret, "store_open: %s: creating a handle for %s", st->path, file);
	if ((db_flags != 0 && (ret = db->set_flags(db, db_flags)) != 0) ||
	    (ret = db->open(db, NULL, file, NULL, DB_BTREE, DB_CREATE | DB_AUTO_COMMIT | DB_THREAD, 0600)) != 0) {
		db->close(db, 0);
		return db_fail(st, ret, "store_open: %s: opening %s", st->path, file);
	}
	*out = db;
	return 0;
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

	(void)sdb;
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

	(void)sdb;
	(void)key;
	if (cmk_codec_cert_keys(data->data, data->size, &k) != 0 || k.status != CMK_ST_ACTIVE || k.renew_at <= 0)
		return DB_DONOTINDEX;
	cmk_be64_put(buf, (uint64_t)k.renew_at);
	return index_result(result, buf, sizeof(buf));
}

static int index_serial(DB *sdb, const DBT *key, const DBT *data, DBT *result)
{
	struct cmk_cert_keys k;

	(void)sdb;
	(void)key;
	if (cmk_codec_cert_keys(data->data, data->size, &k) != 0 || k.serial_len == 0)
		return DB_DONOTINDEX;
	return index_result(result, k.serial, k.serial_len);
}

static int open_dbs(struct cmk_store *st)
{
	int ret, rc;

	if ((rc = open_db(st, &st->meta, "meta.db", 0)) != 0 ||
	    (rc = open_db(st, &st->certs, "certs.db", 0)) != 0 ||
	    (rc = open_db(st, &st->by_tts, "by_tts.db", DB_DUP | DB_DUPSORT)) != 0 ||
	    (rc = open_db(st, &st->by_renew, "by_renew.db", DB_DUP | DB_DUPSORT)) != 0 ||
	    (rc = open_db(st, &st->by_serial, "by_serial.db", DB_DUP | DB_DUPSORT)) != 0 ||
	    (rc = open_db(st, &st->keystores, "keystores.db", 0)) != 0 ||
	    (rc = open_db(st, &st->changes, "changes.db", 0)) != 0)
		return rc;
	/* DB_CREATE: an index that is empty (new, or added by a later version) is built from certs. */
	if ((ret = st->certs->associate(st->certs, NULL, st->by_tts, index_tts, DB_CREATE)) != 0 ||
	    (ret = st->certs->associate(st->certs, NULL, st->by_renew, index_renew, DB_CREATE)) != 0 ||
	    (ret = st->certs->associate(st->certs, NULL, st->by_serial, index_serial, DB_CREATE)) != 0)
		return db_fail(st, ret, "store_open: %s: attaching the indexes", st->path);
	return 0;
}

static int meta_get(struct cmk_store *st, DB_TXN *t, const char *name, void *buf, size_t len, u_int32_t flags)
{
	DBT k, d;
	int ret;

	dbt_in(&k, name, strlen(name));
	dbt_user(&d, buf, 0, len);
	ret = st->meta->get(st->meta, t, &k, &d, flags);
	if (ret == DB_BUFFER_SMALL || (ret == 0 && d.size != len))
		return cmk_fail(CMK_ERR_STORE, "store: %s: meta value \"%s\" is damaged", st->path, name);
	if (ret != 0)
		return db_fail(st, ret, "store: %s: reading meta value \"%s\"", st->path, name);
	return 0;
}

static int meta_put(struct cmk_store *st, DB_TXN *t, const char *name, const void *buf, size_t len)
{
	DBT k, d;
	int ret;

	dbt_in(&k, name, strlen(name));
	dbt_in(&d, buf, len);
	if ((ret = st->meta->put(st->meta, t, &k, &d, 0)) != 0)
		return db_fail(st, ret, "store: %s: writing meta value \"%s\"", st->path, name);
	return 0;
}

/* The first open gives the store its random id; every later open reads it and checks the format. */
static int meta_init(struct cmk_store *st, DB_TXN *t)
{
	uint8_t id[CMK_STORE_ID_LEN], ver[4], next[8];
	uint32_t version;
	int rc;

	rc = meta_get(st, t, "store_id", id, sizeof(id), DB_RMW);
	if (rc == CMK_ERR_NOTFOUND) {
		cmk_be32_put(ver, CMK_STORE_FORMAT);
		cmk_be64_put(next, 1);
		if ((rc = cmk_random(id, sizeof(id))) != 0 ||
		    (rc = meta_put(st, t, "version", ver, sizeof(ver))) != 0 ||
		    (rc = meta_put(st, t, "next_id", next, sizeof(next))) != 0 ||
		    (rc = meta_put(st, t, "store_id", id, sizeof(id))) != 0)
			return rc;
		cmk_log(CMK_LOG_INFO, "store_open: %s: created a new store", st->path);
	} else if (rc != 0) {
		return rc;
	}
	if ((rc = meta_get(st, t, "version", ver, sizeof(ver), 0)) != 0)
		return rc;
	version = cmk_be32_get(ver);
	if (version == 0)
		return cmk_fail(CMK_ERR_STORE, "store_open: %s: meta value \"version\" is damaged", st->path);
	if (version > CMK_STORE_FORMAT)
		return cmk_fail(CMK_ERR_STORE, "store_open: %s: store format %" PRIu32 " was written by a newer "
				"cmkcert; this one reads format %u or older", st->path, version, CMK_STORE_FORMAT);
	memcpy(st->id, id, sizeof(id));
	return 0;
}

static int load_meta(struct cmk_store *st)
{
	DB_TXN *t;
	int ret, rc;

	/* Two processes opening a new store at once may deadlock here: retry, as everyone else would. */
	for (int attempt = 1;; attempt++) {
		if ((ret = st->env->txn_begin(st->env, NULL, &t, 0)) != 0)
			return db_fail(st, ret, "store_open: %s: beginning a transaction", st->path);
		if ((rc = meta_init(st, t)) == 0) {
			if ((ret = t->commit(t, 0)) != 0)
				rc = db_fail(st, ret, "store_open: %s: committing the store id", st->path);
		} else {
			t->abort(t);
		}
		if (rc != CMK_ERR_BUSY || attempt == READ_RETRIES)
			return rc;
		backoff(attempt);
	}
}

int cmk_store_open(const char *path, struct cmk_store **out)
{
	struct cmk_store *st;
	int rc;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return cmk_fail(CMK_ERR_INVALID, "store_open: no store path given");
	if ((st = calloc(1, sizeof(*st))) == NULL || (st->path = strdup(path)) == NULL) {
		free(st);
		return CMK_ERR_NOMEM;
	}
	atomic_init(&st->broken, false);
	if ((rc = check_dir(path)) != 0 || (rc = claim_store(st)) != 0 || (rc = open_env(st)) != 0 ||
	    (rc = open_dbs(st)) != 0 || (rc = load_meta(st)) != 0)
		goto out;
	*out = st;
	st = NULL;
out:
	cmk_store_close(st);
	return rc;
}

static void close_db(struct cmk_store *st, DB **db)
{
	int ret;

	if (*db != NULL && (ret = (*db)->close(*db, 0)) != 0 && !atomic_load(&st->broken))
		cmk_log(CMK_LOG_WARN, "store_close: %s: %s", st->path, db_strerror(ret));
	*db = NULL;
}

void cmk_store_close(struct cmk_store *st)
{
	int ret;

	if (st == NULL)
		return;
	/*
	 * A panicked environment refuses every call, close included: BDB only
	 * drops its file handles and registry slot and keeps the handles' memory.
	 * Forcing it (DB_NOPANIC) could flush stale cache or log buffers over the
	 * recovered files, so a few tens of KB are left behind instead.
	 */
	if (atomic_load(&st->broken))
		cmk_log(CMK_LOG_INFO, "store_close: %s: closing a store that needs recovery", st->path);
	/* Indexes before the database they index. */
	close_db(st, &st->by_tts);
	close_db(st, &st->by_renew);
	close_db(st, &st->by_serial);
	close_db(st, &st->certs);
	close_db(st, &st->keystores);
	close_db(st, &st->changes);
	close_db(st, &st->meta);
	if (st->env != NULL) {
		/* A checkpoint at close keeps the next recovery short and lets old log files go. */
		if (!atomic_load(&st->broken) && st->env->txn_checkpoint(st->env, 0, 0, 0) != 0)
			cmk_log(CMK_LOG_WARN, "store_close: %s: checkpoint failed", st->path);
		if ((ret = st->env->close(st->env, 0)) != 0 && !atomic_load(&st->broken))
			cmk_log(CMK_LOG_WARN, "store_close: %s: %s", st->path, db_strerror(ret));
	}
	release_store(st);
	free(st->path);
	free(st);
}

const uint8_t *cmk_store_id(const struct cmk_store *st)
{
	return st->id;
}

bool cmk_store_needs_recovery(const struct cmk_store *st)
{
	return atomic_load(&((struct cmk_store *)st)->broken);
}

/* ---- transactions ---- */

int cmk_store_begin(struct cmk_store *st, struct cmk_txn **txn)
{
	struct cmk_txn *x;
	int ret;

	*txn = NULL;
	if ((x = calloc(1, sizeof(*x))) == NULL)
		return CMK_ERR_NOMEM;
	x->st = st;
	if ((ret = st->env->txn_begin(st->env, NULL, &x->t, 0)) != 0) {
		free(x);
		return db_fail(st, ret, "store_begin: %s", st->path);
	}
	*txn = x;
	return 0;
}

int cmk_store_commit(struct cmk_txn *txn)
{
	struct cmk_store *st;
	bool wrote;
	int ret;

	if (txn == NULL)
		return cmk_fail(CMK_ERR_INVALID, "store_commit: no transaction");
	st = txn->st;
	wrote = txn->wrote;
	ret = txn->t->commit(txn->t, 0);
	free(txn);
	if (ret != 0)
		return db_fail(st, ret, "store_commit: %s", st->path);
	/* Checkpoint once a megabyte of log has accumulated, so DB_LOG_AUTO_REMOVE can drop old files. */
	if (wrote && (ret = st->env->txn_checkpoint(st->env, CHECKPOINT_KB, 0, 0)) != 0)
		cmk_log(CMK_LOG_WARN, "store_commit: %s: checkpoint: %s", st->path, db_strerror(ret));
	return 0;
}

void cmk_store_abort(struct cmk_txn *txn)
{
	int ret;

	if (txn == NULL)
		return;
	if ((ret = txn->t->abort(txn->t)) != 0)
		cmk_log(CMK_LOG_WARN, "store_abort: %s: %s", txn->st->path, db_strerror(ret));
	free(txn);
}

/* A read step: runs inside a transaction; `rmw` is DB_RMW when the caller's transaction will update. */
typedef int (*read_fn)(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg);

/*
 * Run `fn` in the caller's transaction, or else in a short read-committed
 * transaction of its own, retried when chosen as a deadlock victim: it never
 * sees uncommitted data and holds its locks only for the read.
 */
static int in_read_txn(struct cmk_store *st, struct cmk_txn *txn, read_fn fn, void *arg)
{
	DB_TXN *t;
	int ret, rc;

	if (txn != NULL)
		return fn(st, txn->t, DB_RMW, arg);
	for (int attempt = 1;; attempt++) {
		if ((ret = st->env->txn_begin(st->env, NULL, &t, DB_READ_COMMITTED)) != 0)
			return db_fail(st, ret, "store: %s: beginning a read", st->path);
		if ((rc = fn(st, t, 0, arg)) == 0) {
			if ((ret = t->commit(t, 0)) != 0)
				rc = db_fail(st, ret, "store: %s: ending a read", st->path);
		} else {
			t->abort(t);
		}
		if (rc != CMK_ERR_BUSY || attempt == READ_RETRIES)
			return rc;
		backoff(attempt);
	}
}

/* ---- the change log ---- */

/* Drop entries up to `upto`, oldest first; called every TRIM_EVERY appends, so each call removes few. */
static int change_trim(struct cmk_store *st, DB_TXN *t, uint64_t upto)
{
	uint8_t kb[8];
	DBT k, d;
	DBC *c;
	int ret;

	if ((ret = st->changes->cursor(st->changes, t, &c, 0)) != 0)
		return db_fail(st, ret, "store: %s: trimming the change log", st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	while ((ret = c->get(c, &k, &d, DB_NEXT | DB_RMW)) == 0 && k.size == 8 && cmk_be64_get(kb) <= upto)
		if ((ret = c->del(c, 0)) != 0)
			break;
	c->close(c);
	if (ret != 0 && ret != DB_NOTFOUND)
		return db_fail(st, ret, "store: %s: trimming the change log", st->path);
	return 0;
}

/* Append (seq = last + 1, tenant, type, now) inside the mutation's own transaction. */
static int change_append(struct cmk_store *st, DB_TXN *t, const char *tenant, const char *type)
{
	struct cmk_change ch = { .time = cmk_now() };
	uint8_t kb[8], *buf = NULL;
	size_t len;
	DBT k, d;
	DBC *c;
	int ret, rc;

	if ((ret = st->changes->cursor(st->changes, t, &c, 0)) != 0)
		return db_fail(st, ret, "store: %s: appending a change", st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	/* DB_RMW: the last page stays write-locked, so concurrent appenders queue instead of colliding. */
	ret = c->get(c, &k, &d, DB_LAST | DB_RMW);
	c->close(c);
	if (ret == 0 && k.size != 8)
		return cmk_fail(CMK_ERR_STORE, "store: %s: the change log has a damaged key", st->path);
	if (ret != 0 && ret != DB_NOTFOUND)
		return db_fail(st, ret, "store: %s: reading the last change", st->path);
	ch.seq = ret == 0 ? cmk_be64_get(kb) + 1 : 1;
	snprintf(ch.tenant, sizeof(ch.tenant), "%s", tenant);
	snprintf(ch.type, sizeof(ch.type), "%s", type);
	if ((rc = cmk_codec_change_encode(&ch, &buf, &len)) != 0)
		return rc;
	cmk_be64_put(kb, ch.seq);
	dbt_in(&k, kb, sizeof(kb));
	dbt_in(&d, buf, len);
	ret = st->changes->put(st->changes, t, &k, &d, DB_NOOVERWRITE);
	free(buf);
	if (ret == DB_KEYEXIST)
		return cmk_fail(CMK_ERR_BUSY, "store: %s: change %" PRIu64 " was taken concurrently", st->path, ch.seq);
	if (ret != 0)
		return db_fail(st, ret, "store: %s: appending change %" PRIu64, st->path, ch.seq);
	if (ch.seq % TRIM_EVERY == 0 && ch.seq > CMK_STORE_CHANGES_KEPT)
		return change_trim(st, t, ch.seq - CMK_STORE_CHANGES_KEPT);
	return 0;
}

static int change_last_read(struct cmk_store *st, uint64_t *seq)
{
	uint8_t kb[8];
	DBT k, d;
	DBC *c;
	int ret;

	/* No transaction: a read-committed cursor that waits only for a writer of the last page to commit. */
	if ((ret = st->changes->cursor(st->changes, NULL, &c, DB_READ_COMMITTED)) != 0)
		return db_fail(st, ret, "store_change_last: %s", st->path);
	dbt_user(&k, kb, 0, sizeof(kb));
	dbt_none(&d);
	ret = c->get(c, &k, &d, DB_LAST);
	c->close(c);
	if (ret == DB_NOTFOUND) {
		*seq = 0;
		return 0;
	}
	if (ret != 0)
		return db_fail(st, ret, "store_change_last: %s", st->path);
	if (k.size != 8)
		return cmk_fail(CMK_ERR_STORE, "store_change_last: %s: the change log has a damaged key", st->path);
	*seq = cmk_be64_get(kb);
	return 0;
}

int cmk_store_change_last(struct cmk_store *st, uint64_t *seq)
{
	int rc;

	*seq = 0;
	for (int attempt = 1;; attempt++) {
		rc = change_last_read(st, seq);
		if (rc != CMK_ERR_BUSY || attempt == READ_RETRIES)
			return rc;
		backoff(attempt);
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

static int change_fill(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct change_walk *w = arg;
	uint64_t next = w->next, seq;
	uint8_t kb[8];
	DBT k, d;
	DBC *c;
	int ret;

	(void)rmw;
	w->n = 0;
	if ((ret = st->changes->cursor(st->changes, t, &c, 0)) != 0)
		return db_fail(st, ret, "store_changes_since: %s", st->path);
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
		return db_fail(st, ret, "store_changes_since: %s", st->path);
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

int cmk_store_cert_next_id(struct cmk_txn *txn, uint64_t *id)
{
	struct cmk_store *st = txn->st;
	uint8_t b[8];
	uint64_t v;
	int rc;

	*id = 0;
	if ((rc = meta_get(st, txn->t, "next_id", b, sizeof(b), DB_RMW)) != 0)
		return rc;
	if ((v = cmk_be64_get(b)) == 0 || v == UINT64_MAX)
		return cmk_fail(CMK_ERR_STORE, "store: %s: meta value \"next_id\" is damaged", st->path);
	cmk_be64_put(b, v + 1);
	if ((rc = meta_put(st, txn->t, "next_id", b, sizeof(b))) != 0)
		return rc;
	txn->wrote = true;
	*id = v;
	return 0;
}

static int cert_read(struct cmk_store *st, DB_TXN *t, uint64_t id, u_int32_t flags, struct cmk_cert_record *out)
{
	uint8_t kb[8];
	DBT k, d;
	int ret, rc;

	cmk_be64_put(kb, id);
	dbt_in(&k, kb, sizeof(kb));
	dbt_malloc(&d);
	if ((ret = st->certs->get(st->certs, t, &k, &d, flags)) != 0)
		return db_fail(st, ret, "store: certificate record %" PRIu64, id);
	rc = cmk_codec_cert_decode(id, d.data, d.size, out);
	cmk_freezero(d.data, d.size);
	return rc;
}

struct cert_get_arg {
	uint64_t id;
	struct cmk_cert_record *out;
};

static int cert_get_fn(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct cert_get_arg *a = arg;

	return cert_read(st, t, a->id, rmw, a->out);
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
static int find_last(struct cmk_store *st, DB_TXN *t, DB *sdb, const uint8_t *key, size_t n, u_int32_t rmw,
		     struct cmk_cert_record *out)
{
	uint8_t kb[FIND_KEY_MAX + 1], pb[8];
	DBT k, p, d;
	DBC *c;
	int ret, rc;

	memcpy(kb, key, n);
	kb[n] = 0;
	if ((ret = sdb->cursor(sdb, t, &c, 0)) != 0)
		return db_fail(st, ret, "store: %s: opening an index cursor", st->path);
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
		return db_fail(st, ret, "store: %s: index lookup", st->path);
	if (k.size != n || memcmp(kb, key, n) != 0 || p.size != 8)
		rc = cmk_fail(CMK_ERR_NOTFOUND, "store: no matching certificate record");
	else
		rc = cmk_codec_cert_decode(cmk_be64_get(pb), d.data, d.size, out);
	cmk_freezero(d.data, d.size);
	return rc;
}

struct find_arg {
	DB *index;
	uint8_t key[FIND_KEY_MAX];
	size_t n;
	struct cmk_cert_record *out;
};

static int find_fn(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct find_arg *a = arg;

	return find_last(st, t, a->index, a->key, a->n, rmw, a->out);
}

int cmk_store_cert_find(struct cmk_store *st, struct cmk_txn *txn, const char *tenant, const char *type,
			enum cmk_status status, struct cmk_cert_record *out)
{
	struct find_arg a = { .index = st->by_tts, .out = out };

	memset(out, 0, sizeof(*out));
	if (tenant == NULL || type == NULL ||
	    (a.n = cmk_codec_tts_key(tenant, strlen(tenant), type, strlen(type), status, a.key)) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_cert_find: bad tenant, type or status");
	return in_read_txn(st, txn, find_fn, &a);
}

int cmk_store_cert_by_serial(struct cmk_store *st, struct cmk_txn *txn, const char *serial,
			     struct cmk_cert_record *out)
{
	struct find_arg a = { .index = st->by_serial, .out = out };

	memset(out, 0, sizeof(*out));
	if (serial == NULL || (a.n = strlen(serial)) == 0 || a.n >= CMK_SERIAL_MAX)
		return cmk_fail(CMK_ERR_INVALID, "store_cert_by_serial: serial is empty or too long");
	memcpy(a.key, serial, a.n);
	return in_read_txn(st, txn, find_fn, &a);
}

/* A record never moves to another (tenant, type): the change log and file names depend on it. */
static int check_same_owner(struct cmk_store *st, DB_TXN *t, const struct cmk_cert_record *rec)
{
	struct cmk_cert_keys k;
	uint8_t kb[8];
	DBT key, d;
	int ret, rc = 0;

	cmk_be64_put(kb, rec->id);
	dbt_in(&key, kb, sizeof(kb));
	dbt_malloc(&d);
	ret = st->certs->get(st->certs, t, &key, &d, DB_RMW);
	if (ret == DB_NOTFOUND)
		return 0;
	if (ret != 0)
		return db_fail(st, ret, "store_cert_put: reading record %" PRIu64, rec->id);
	/* A damaged old record may be overwritten: that is how it gets repaired. */
	if (cmk_codec_cert_keys(d.data, d.size, &k) == 0 &&
	    (k.tenant_len != strlen(rec->tenant) || memcmp(k.tenant, rec->tenant, k.tenant_len) != 0 ||
	     k.type_len != strlen(rec->type) || memcmp(k.type, rec->type, k.type_len) != 0))
		rc = cmk_fail(CMK_ERR_INVALID, "store_cert_put: record %" PRIu64 " belongs to another tenant or type",
			      rec->id);
	cmk_freezero(d.data, d.size);
	return rc;
}

/* At most one active record per (tenant, type) (DESIGN §5). */
static int check_single_active(struct cmk_store *st, DB_TXN *t, const struct cmk_cert_record *rec)
{
	uint8_t kb[CMK_TTS_KEY_MAX], pb[8];
	uint64_t other = 0;
	DBT k, p, d;
	DBC *c;
	size_t n;
	int ret;

	n = cmk_codec_tts_key(rec->tenant, strlen(rec->tenant), rec->type, strlen(rec->type), CMK_ST_ACTIVE, kb);
	if ((ret = st->by_tts->cursor(st->by_tts, t, &c, 0)) != 0)
		return db_fail(st, ret, "store_cert_put: %s: opening an index cursor", st->path);
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
		return db_fail(st, ret, "store_cert_put: %s: reading the index", st->path);
	if (other != 0)
		return cmk_fail(CMK_ERR_STATE, "store_cert_put: %s/%s already has active record %" PRIu64
				"; demote it before activating record %" PRIu64, rec->tenant, rec->type, other, rec->id);
	return 0;
}

int cmk_store_cert_put(struct cmk_txn *txn, const struct cmk_cert_record *rec)
{
	struct cmk_store *st = txn->st;
	uint8_t kb[8], *buf = NULL;
	size_t len = 0;
	DBT k, d;
	int ret, rc;

	if (rec->id == 0 || !is_name(rec->tenant, sizeof(rec->tenant)) || !is_name(rec->type, sizeof(rec->type)))
		return cmk_fail(CMK_ERR_INVALID, "store_cert_put: record needs an id, a tenant and a type");
	if ((rc = cmk_codec_cert_encode(rec, &buf, &len)) != 0)
		return rc;
	if (len > UINT32_MAX) {
		rc = cmk_fail(CMK_ERR_INVALID, "store_cert_put: record %" PRIu64 " is too large", rec->id);
		goto out;
	}
	if ((rc = check_same_owner(st, txn->t, rec)) != 0 ||
	    (rec->status == CMK_ST_ACTIVE && (rc = check_single_active(st, txn->t, rec)) != 0))
		goto out;
	cmk_be64_put(kb, rec->id);
	dbt_in(&k, kb, sizeof(kb));
	dbt_in(&d, buf, len);
	if ((ret = st->certs->put(st->certs, txn->t, &k, &d, 0)) != 0) {
		rc = db_fail(st, ret, "store_cert_put: record %" PRIu64, rec->id);
		goto out;
	}
	txn->wrote = true;
	rc = change_append(st, txn->t, rec->tenant, rec->type);
out:
	/* The buffer held the sealed key: not plaintext, but there is no reason to leave it in freed memory. */
	cmk_freezero(buf, len);
	return rc;
}

/* ---- certificate walks ---- */

enum walk_by { BY_ID, BY_TTS, BY_RENEW };

struct cert_walk {
	enum walk_by by;
	const struct cmk_cert_filter *f;
	uint8_t tts[CMK_TTS_KEY_MAX];
	size_t tts_len;
	int64_t now;
	int64_t renew_pos;     /* BY_RENEW: index key of the resume point */
	uint64_t next_id;      /* first id not yet looked at (within renew_pos for BY_RENEW) */
	bool done;
	struct cmk_cert_record recs[WALK_CHUNK];
	size_t n;
};

static bool name_is(const char *want, const char *have, size_t len)
{
	return want == NULL || (strlen(want) == len && memcmp(want, have, len) == 0);
}

static bool walk_matches(const struct cert_walk *w, const struct cmk_cert_keys *k)
{
	const struct cmk_cert_filter *f = w->f;

	return f == NULL || (name_is(f->tenant, k->tenant, k->tenant_len) && name_is(f->type, k->type, k->type_len) &&
			     (f->status < 0 || f->status == (int)k->status));
}

/* Decode one walked record into the chunk; a damaged one is logged and skipped. */
static int walk_take(struct cert_walk *w, uint64_t id, const DBT *d)
{
	struct cmk_cert_keys k;
	int rc;

	if (cmk_codec_cert_keys(d->data, d->size, &k) != 0) {
		cmk_log(CMK_LOG_ERROR, "store: skipping corrupt certificate record %" PRIu64, id);
		return 0;
	}
	if (!walk_matches(w, &k))
		return 0;
	rc = cmk_codec_cert_decode(id, d->data, d->size, &w->recs[w->n]);
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
	switch (w->by) {
	case BY_ID:
		return c->get(c, p, d, DB_SET_RANGE);
	case BY_TTS:
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
	}
	return EINVAL;
}

static int walk_next(const struct cert_walk *w, DBC *c, DBT *k, DBT *p, DBT *d)
{
	switch (w->by) {
	case BY_ID:
		return c->get(c, p, d, DB_NEXT);
	case BY_TTS:
		return c->pget(c, k, p, d, DB_NEXT_DUP);
	case BY_RENEW:
		return c->pget(c, k, p, d, DB_NEXT);
	}
	return EINVAL;
}

/* Read the next chunk of matching records into w->recs (at most WALK_CHUNK, looking at at most WALK_SCAN). */
static int walk_fill(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct cert_walk *w = arg;
	const int64_t start_renew = w->renew_pos;
	const uint64_t start_id = w->next_id;
	DB *db = w->by == BY_ID ? st->certs : w->by == BY_TTS ? st->by_tts : st->by_renew;
	uint8_t kb[CMK_TTS_KEY_MAX], pb[8];
	size_t scanned = 0;
	DBT k, p, d;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	w->n = 0;
	if ((ret = db->cursor(db, t, &c, 0)) != 0)
		return db_fail(st, ret, "store: %s: opening a cursor", st->path);
	memcpy(kb, w->tts, w->tts_len);
	dbt_user(&k, kb, w->by == BY_TTS ? w->tts_len : 8, sizeof(kb));
	dbt_user(&p, pb, 8, sizeof(pb));
	dbt_malloc(&d);
	for (ret = walk_position(w, c, &k, &p, &d, kb, pb); ret == 0; ret = walk_next(w, c, &k, &p, &d)) {
		uint64_t id = p.size == 8 ? cmk_be64_get(pb) : 0;

		if (w->by == BY_RENEW && (k.size != 8 || (int64_t)cmk_be64_get(kb) > w->now)) {
			ret = DB_NOTFOUND;
			break;
		}
		rc = id != 0 ? walk_take(w, id, &d) : cmk_fail(CMK_ERR_STORE, "store: %s: damaged record key", st->path);
		cmk_freezero(d.data, d.size);
		dbt_malloc(&d);
		if (rc != 0)
			break;
		w->next_id = id + 1;
		if (w->by == BY_RENEW)
			w->renew_pos = (int64_t)cmk_be64_get(kb);
		if (w->n == WALK_CHUNK || ++scanned == WALK_SCAN)
			break;
	}
	/* When the loop stopped on a record, d holds it; when it ran out, d.data is NULL. */
	cmk_freezero(d.data, d.size);
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(st, ret, "store: %s: walking certificate records", st->path);
	if (rc != 0) {
		/* Forget the partial chunk; a retry starts again where this one did. */
		for (size_t i = 0; i < w->n; i++)
			cmk_cert_record_clear(&w->recs[i]);
		w->n = 0;
		w->renew_pos = start_renew;
		w->next_id = start_id;
		return rc;
	}
	w->done = ret == DB_NOTFOUND;
	return 0;
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

int cmk_store_cert_each(struct cmk_store *st, struct cmk_txn *txn, const struct cmk_cert_filter *f,
			cmk_cert_cb cb, void *arg)
{
	struct cert_walk *w;
	int rc;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	w->by = BY_ID;
	w->f = f;
	if (f != NULL && f->tenant != NULL && f->type != NULL && f->status >= 0) {
		w->tts_len = cmk_codec_tts_key(f->tenant, strlen(f->tenant), f->type, strlen(f->type),
					       (enum cmk_status)f->status, w->tts);
		if (w->tts_len == 0) {
			free(w);
			return cmk_fail(CMK_ERR_INVALID, "store_cert_each: bad tenant, type or status in the filter");
		}
		w->by = BY_TTS;
	}
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

int cmk_store_keystore_put(struct cmk_txn *txn, const struct cmk_keystore_record *rec)
{
	struct cmk_store *st = txn->st;
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
	ret = len <= UINT32_MAX ? st->keystores->put(st->keystores, txn->t, &k, &d, 0) : EINVAL;
	free(buf);
	if (ret != 0)
		return db_fail(st, ret, "store_keystore_put: %s/%s", rec->tenant, rec->type);
	txn->wrote = true;
	return change_append(st, txn->t, rec->tenant, rec->type);
}

struct ks_get_arg {
	uint8_t key[CMK_KS_KEY_MAX];
	size_t n;
	struct cmk_keystore_record *out;
};

static int ks_get_fn(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct ks_get_arg *a = arg;
	DBT k, d;
	int ret, rc;

	dbt_in(&k, a->key, a->n);
	dbt_malloc(&d);
	if ((ret = st->keystores->get(st->keystores, t, &k, &d, rmw)) != 0)
		return db_fail(st, ret, "store_keystore_get: %s", st->path);
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

int cmk_store_keystore_del(struct cmk_txn *txn, const char *tenant, const char *type)
{
	struct cmk_store *st = txn->st;
	uint8_t kb[CMK_KS_KEY_MAX];
	size_t n;
	DBT k;
	int ret;

	if ((n = ks_key(tenant, type, kb)) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_keystore_del: bad tenant or type");
	dbt_in(&k, kb, n);
	if ((ret = st->keystores->del(st->keystores, txn->t, &k, 0)) != 0)
		return db_fail(st, ret, "store_keystore_del: %s/%s", tenant, type);
	txn->wrote = true;
	return change_append(st, txn->t, tenant, type);
}

struct ks_walk {
	uint8_t from[CMK_KS_KEY_MAX + 1];  /* the next chunk starts at the first key >= this */
	size_t from_len;
	bool done;
	struct cmk_keystore_record recs[WALK_CHUNK];
	size_t n;
};

static int ks_fill(struct cmk_store *st, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct ks_walk *w = arg;
	uint8_t kb[CMK_KS_KEY_MAX + 1], start[CMK_KS_KEY_MAX + 1];
	const size_t start_len = w->from_len;
	DBT k, d;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	w->n = 0;
	if ((ret = st->keystores->cursor(st->keystores, t, &c, 0)) != 0)
		return db_fail(st, ret, "store_keystore_each: %s", st->path);
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
		rc = db_fail(st, ret, "store_keystore_each: %s", st->path);
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

int cmk_store_set_format(struct cmk_txn *txn, uint32_t version)
{
	uint8_t b[4];
	int rc;

	cmk_be32_put(b, version);
	if ((rc = meta_put(txn->st, txn->t, "version", b, sizeof(b))) == 0)
		txn->wrote = true;
	return rc;
}
