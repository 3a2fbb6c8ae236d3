/*
 * store_env.c - the store's Berkeley DB environment: opening it, telling
 * live processes from dead ones, releasing what dead ones held, and
 * replacing the environment when only recovery can help (see the
 * generations in store_bdb_int.h).
 *
 * Several processes share one environment: the daemon for weeks, CLI runs
 * for a second, and any of them may be killed at any moment.
 *
 *   - Failure checking.  Every handle tracks its threads (set_thread_count)
 *     and answers is_alive() for any process it finds in the environment;
 *     every process runs failchk() every MONITOR_MS on a monitor thread,
 *     which aborts the transactions and releases the locks of threads whose
 *     process died outside a Berkeley DB call.  No recovery, nobody else
 *     disturbed.
 *
 *   - Recovery only alone.  A process killed *inside* a Berkeley DB call may
 *     leave shared memory half changed: failchk says DB_RUNRECOVERY.  The
 *     monitor then panics the environment, so every process learns it at its
 *     next call or monitor tick and lets go of it.  Recovery needs the
 *     environment to itself, and gets it through cmkcert.lock in the store:
 *     a process holds a read lock on its first byte for as long as it has an
 *     environment open, and recovery takes the write lock.  Recovery
 *     therefore never runs under a live process (Berkeley DB's own
 *     DB_REGISTER would: it recovers as soon as it sees a dead process, and
 *     its failure checking at open holds its registry lock while it may
 *     wait on what the dead process held).  An epoch counter in the same
 *     file tells the processes queued behind the first one that the
 *     recovery they wanted has been done.  The first process to open a
 *     store nobody else has open recovers it too, unless the last one to
 *     close it left it clean.
 *
 *   - Liveness.  Every process holding a store keeps a lock on the byte at
 *     offset <pid> of cmkcert.procs; the kernel drops it when the process
 *     dies.  A pid reused by an unrelated process therefore still reads as
 *     dead, unlike with kill(pid, 0).
 *
 * The locks are open-file-description locks (F_OFD_SETLK): they belong to
 * the descriptor, not the process, so closing some other descriptor of the
 * file (as Berkeley DB does with its files) never drops them, and a lock
 * turns from read to write and back atomically.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "store_bdb_int.h"

#define CACHE_BYTES (4u << 20)
#define CHECKPOINT_KB 1024u
#define THREADS 256u                  /* thread slots per environment (BDB grows past it when needed) */
#define MONITOR_MS 200                /* failure check period of every process */
#define DRAIN_MS 500                  /* a failed generation waits this long for its callers to leave */
#define WEDGED_MS 500                 /* a thread still inside a retired generation after this is stuck:
					 * every call there fails at once, so only a wait on what
					 * the dead process held lasts (a thread wrongly given up
					 * on comes back to find itself abandoned) */
#define OPEN_WEDGED_MS 45000          /* an open running this long waits on a dead process (it retries locks 30 s) */
#define OPEN_FAILED_GRACE_MS 1000     /* an open of an environment known failed may take this long */
#define RECOVERY_POLL_MS 20           /* waiting to recover: how often to look whether someone else did */
#define OPEN_RETRIES 5

/* cmkcert.lock: byte 0 is the use lock; the recovery epoch and the clean flag follow it. */
#define LOCK_FILE "cmkcert.lock"
#define PROCS_FILE "cmkcert.procs"
#define EPOCH_AT 8
#define CLEAN_AT 16
#define FAILED_AT 24                  /* the epoch whose environment a process found failed */

_Thread_local char cmk_bdb_msg[256];

/*
 * Stores open in this process.  A handle holds the process's liveness lock
 * and its use lock: a second handle on the same store is refused, so that
 * there is one of each per process.  Entries carry the pid: a child made by
 * fork() may open the store itself.
 */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cmk_store *open_stores;

/* What a new handle calls when a thread is wedged (cmk_store_set_wedged_default()); under open_lock. */
static cmk_store_wedged_fn default_wedged;
static void *default_wedged_arg;

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

/* ---- BDB callbacks and results ------------------------------------------ */

static void on_bdb_error(const DB_ENV *env, const char *prefix, const char *msg)
{
	(void)env;
	(void)prefix;
	snprintf(cmk_bdb_msg, sizeof(cmk_bdb_msg), "%s", msg);
	cmk_log(CMK_LOG_WARN, "store: berkeley db: %s", msg);
}

/* Set when failure checking reports what it released (BDB says so through the message callback). */
static _Thread_local bool released_dead;

static void on_bdb_msg(const DB_ENV *env, const char *msg)
{
	(void)env;
	if (strstr(msg, "Freeing") != NULL || strstr(msg, "Aborting") != NULL)
		released_dead = true;
	cmk_log(CMK_LOG_DEBUG, "store: berkeley db: %s", msg);
}

static void note_failed_epoch(struct cmk_store *st);

static void mark_broken(struct store_gen *g, const char *why)
{
	if (atomic_exchange(&g->broken, true))
		return;
	note_failed_epoch(g->st);
	cmk_log(CMK_LOG_WARN, "store: %s: %s; a new environment will be opened", g->st->path, why);
}

static void on_bdb_event(DB_ENV *env, u_int32_t event, void *info)
{
	struct store_gen *g = env->app_private;

	(void)info;
	if ((event == DB_EVENT_PANIC || event == DB_EVENT_REG_PANIC) && g != NULL)
		mark_broken(g, event == DB_EVENT_REG_PANIC ? "another process is recovering the environment"
							   : "the environment needs recovery");
}

bool gen_is_broken(const struct store_gen *g)
{
	return atomic_load(&((struct store_gen *)g)->broken);
}

int db_fail(struct store_gen *g, int ret, const char *fmt, ...)
{
	char what[256], extra[sizeof(cmk_bdb_msg) + 3] = "";
	va_list ap;
	int code;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (cmk_bdb_msg[0] != '\0')
		snprintf(extra, sizeof(extra), " (%s)", cmk_bdb_msg);
	cmk_bdb_msg[0] = '\0';
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
		mark_broken(g, "the environment needs recovery");
		return cmk_fail(CMK_ERR_BUSY, "%s: the store's environment is being recovered after a process died; "
				"redo the transaction", what);
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

void store_backoff(int attempt)
{
	struct timespec ts = { 0, attempt * 2000000L };

	nanosleep(&ts, NULL);
}

/* ---- locks and liveness -------------------------------------------------- */

static int ofd_lock(int fd, off_t at, short type, bool wait)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };

	while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0) {
		if (errno == EINTR)
			continue;
		return errno;
	}
	return 0;
}

static bool is_locked(int fd, off_t at)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };

	/* An error answers "locked": never release a live process's locks on a guess. */
	return fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
}

static int is_alive(DB_ENV *env, pid_t pid, db_threadid_t tid, u_int32_t flags)
{
	struct store_gen *g = env->app_private;

	(void)tid;
	(void)flags;
	/* This process's threads do not die on their own: the process dies with them. */
	if (pid == getpid())
		return 1;
	return g == NULL || pid <= 0 || is_locked(g->st->procs_fd, (off_t)pid);
}

bool store_process_alive(const struct cmk_store *st, pid_t pid)
{
	if (pid == getpid())
		return true;
	return pid > 0 && is_locked(st->procs_fd, (off_t)pid);
}

static uint64_t read_u64(int fd, off_t at)
{
	uint8_t b[8] = { 0 };

	if (pread(fd, b, sizeof(b), at) != (ssize_t)sizeof(b))
		return 0;
	return cmk_be64_get(b);
}

/*
 * Tell every process that the environment of this epoch failed.  An open
 * that is attaching to it may be waiting on what the dead process held,
 * and its monitor can see that here without touching the environment
 * (check_open()).  Only a hint for the live processes: not synced.
 */
static void note_failed_epoch(struct cmk_store *st)
{
	uint8_t b[8];

	cmk_be64_put(b, st->epoch);
	if (st->lock_fd >= 0 && pwrite(st->lock_fd, b, sizeof(b), FAILED_AT) != (ssize_t)sizeof(b))
		cmk_log(CMK_LOG_DEBUG, "store: %s/%s: %s", st->path, LOCK_FILE, strerror(errno));
}

/* Durable: the next process to open depends on it. */
static int write_u64(struct cmk_store *st, off_t at, uint64_t v)
{
	uint8_t b[8];

	cmk_be64_put(b, v);
	if (pwrite(st->lock_fd, b, sizeof(b), at) != (ssize_t)sizeof(b) || fdatasync(st->lock_fd) != 0)
		return cmk_fail(CMK_ERR_IO, "store: %s/%s: %s", st->path, LOCK_FILE, strerror(errno));
	return 0;
}

static int open_private(struct cmk_store *st, const char *name, int *out)
{
	char *path = cmk_asprintf("%s/%s", st->path, name);
	int fd;

	if (path == NULL)
		return CMK_ERR_NOMEM;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	free(path);
	if (fd < 0)
		return cmk_fail(CMK_ERR_IO, "store_open: %s/%s: %s", st->path, name, strerror(errno));
	*out = fd;
	return 0;
}

/* The process's liveness lock and the descriptors of both lock files. */
static int lock_files_open(struct cmk_store *st)
{
	int rc, err;

	if ((rc = open_private(st, LOCK_FILE, &st->lock_fd)) != 0 ||
	    (rc = open_private(st, PROCS_FILE, &st->procs_fd)) != 0)
		return rc;
	if ((err = ofd_lock(st->procs_fd, (off_t)getpid(), F_WRLCK, false)) != 0)
		return cmk_fail(CMK_ERR_STATE, "store_open: %s/%s: %s", st->path, PROCS_FILE,
				err == EAGAIN ? "another process with this pid holds the store (a pid namespace "
				"shared by two containers?)" : strerror(err));
	return 0;
}

/* ---- region mappings ------------------------------------------------------ */

static bool range_owned(const struct cmk_store *st, uintptr_t start)
{
	for (const struct store_gen *r = st->retired; r != NULL; r = r->next)
		for (size_t i = 0; i < r->n_maps; i++)
			if (r->maps[i].start == start)
				return true;
	return false;
}

/*
 * Note the mappings of this generation's region files: BDB cannot unmap the
 * regions of an environment that panicked, so a retired generation is
 * unmapped here once nothing uses it.  Called under st->mu.
 */
static void record_maps(struct store_gen *g)
{
	struct cmk_store *st = g->st;
	char *line = NULL, *prefix;
	size_t cap = 0, plen;
	FILE *f;

	if (st->real_path == NULL || (prefix = cmk_asprintf("%s/__db.", st->real_path)) == NULL)
		return;
	plen = strlen(prefix);
	if ((f = fopen("/proc/self/maps", "re")) != NULL) {
		while (getline(&line, &cap, f) > 0) {
			unsigned long start, end;
			int path_at = 0;
			struct region_map *v;

			if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &start, &end, &path_at) < 2 || path_at == 0 ||
			    strncmp(line + path_at, prefix, plen) != 0 || strstr(line + path_at, "(deleted)") != NULL ||
			    range_owned(st, start))
				continue;
			if ((v = realloc(g->maps, (g->n_maps + 1) * sizeof(*v))) == NULL)
				break;
			g->maps = v;
			g->maps[g->n_maps++] = (struct region_map){ start, end };
		}
		fclose(f);
	}
	free(line);
	free(prefix);
}

/* ---- generations ---------------------------------------------------------- */

static int open_env(struct store_gen *g, bool recover)
{
	u_int32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL | DB_THREAD;
	struct cmk_store *st = g->st;
	DB_ENV *env;
	int ret;

	if (recover)
		flags |= DB_RECOVER;
	if ((ret = db_env_create(&env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating the environment handle", st->path);
	g->env = env;
	env->app_private = g;
	env->set_errcall(env, on_bdb_error);
	env->set_msgcall(env, on_bdb_msg);
	if ((ret = env->set_event_notify(env, on_bdb_event)) != 0 ||
	    (ret = env->set_cachesize(env, 0, CACHE_BYTES, 1)) != 0 ||
	    (ret = env->set_lk_detect(env, DB_LOCK_DEFAULT)) != 0 ||
	    (ret = env->set_lg_max(env, CMK_LOG_FILE_BYTES)) != 0 ||
	    (ret = env->set_lg_bsize(env, CMK_LOG_BUFFER_BYTES)) != 0 ||
	    /* Old log files may hold destroyed keys: they are overwritten before removal (store_keys.c). */
	    (ret = env->log_set_config(env, DB_LOG_AUTO_REMOVE, 0)) != 0 ||
	    (ret = env->set_thread_count(env, THREADS)) != 0 ||
	    (ret = env->set_isalive(env, is_alive)) != 0)
		return db_fail(g, ret, "store_open: %s: configuring the environment", st->path);
	/* Region and log files are created 0600 (the directory is 0700 as well). */
	if ((ret = env->open(env, st->path, flags, 0600)) != 0)
		return db_fail(g, ret, "store_open: %s: %s the environment", st->path,
			       recover ? "recovering" : "opening");
	return 0;
}

/* Close a generation whose environment is healthy: databases, a checkpoint, the environment. */
static void close_gen_env(struct store_gen *g)
{
	int ret;

	store_close_dbs(g, !gen_is_broken(g));
	if (g->env != NULL) {
		/* A checkpoint at close keeps the next recovery short and lets old log files go. */
		if (!gen_is_broken(g) && g->env->txn_checkpoint(g->env, 0, 0, 0) != 0)
			cmk_log(CMK_LOG_WARN, "store_close: %s: checkpoint failed", g->st->path);
		if ((ret = g->env->close(g->env, 0)) != 0 && !gen_is_broken(g))
			cmk_log(CMK_LOG_WARN, "store_close: %s: %s", g->st->path, db_strerror(ret));
		g->env = NULL;
	}
}

/*
 * The last close of a healthy generation by a process.  Every commit is
 * already durable in the log; what is left are pages in the shared cache.
 * The last process to leave (`alone`) writes them out in one checkpoint
 * (which syncs each written file once) and then closes the handles without
 * flushing them again, so the next lone opener can skip recovery.  Any
 * other process leaves its pages in the cache for the processes still
 * there: the last of them checkpoints, and if all of them die instead, the
 * next opener recovers from the log.  A short-lived CLI run next to a
 * daemon so never pays for a checkpoint.
 */
static void close_gen_env_last(struct store_gen *g, bool alone)
{
	int ret;

	if (alone && g->env->txn_checkpoint(g->env, 0, 0, 0) != 0)
		cmk_log(CMK_LOG_WARN, "store_close: %s: checkpoint failed", g->st->path);
	store_close_dbs(g, false);
	if ((ret = g->env->close(g->env, 0)) != 0)
		cmk_log(CMK_LOG_WARN, "store_close: %s: %s", g->st->path, db_strerror(ret));
	g->env = NULL;
}

static int gen_open(struct cmk_store *st, uint64_t number, bool recover, uint8_t id[CMK_STORE_ID_LEN],
		    struct store_gen **out)
{
	struct store_gen *g;
	int rc;

	*out = NULL;
	if ((g = calloc(1, sizeof(*g))) == NULL)
		return CMK_ERR_NOMEM;
	g->st = st;
	g->number = number;
	atomic_init(&g->broken, false);
	atomic_init(&g->inside, 0);
	atomic_init(&g->txns, 0);
	/* Alone and recovering, nothing can hold it up; attaching, a dead process can (check_open()). */
	if (!recover)
		atomic_store(&st->opening_since, cmk_monotonic_ms());
	if ((rc = open_env(g, recover)) != 0 || (rc = store_open_dbs(g, id)) != 0) {
		/* A failed environment is left as it is: recovery is the next step, not a normal close. */
		if (gen_is_broken(g) && g->env != NULL) {
			g->env->set_errcall(g->env, NULL);
			g->env->close(g->env, 0);
			g->env = NULL;
		}
		close_gen_env(g);
		free(g);
		atomic_store(&st->opening_since, 0);
		return rc;
	}
	atomic_store(&st->opening_since, 0);
	*out = g;
	return 0;
}

/*
 * Open a generation under the read lock, recovering first when that is
 * needed: `failed` says this process saw the environment of epoch
 * st->epoch fail.  On success the read lock is held.  Called under st->mu
 * with no lock of cmkcert.lock held.
 */
static int open_locked_gen(struct cmk_store *st, bool failed, uint8_t id[CMK_STORE_ID_LEN], struct store_gen **out)
{
	uint64_t number = atomic_load(&st->generations) + 1, epoch;
	bool alone, recover;
	int err, rc;

	/*
	 * Alone (nobody else has the environment open), or after a failure:
	 * wait until everyone let go of the failed environment - unless some
	 * other process recovers it first (the epoch moves on), and then
	 * simply join the recovered one.
	 */
	alone = true;
	if (failed) {
		while ((err = ofd_lock(st->lock_fd, 0, F_WRLCK, false)) == EAGAIN || err == EACCES) {
			if (read_u64(st->lock_fd, EPOCH_AT) != st->epoch) {
				failed = false;
				break;
			}
			usleep(RECOVERY_POLL_MS * 1000);
		}
	}
	if (!failed && (err = ofd_lock(st->lock_fd, 0, F_WRLCK, false)) != 0 && (err == EAGAIN || err == EACCES)) {
		alone = false;
		err = ofd_lock(st->lock_fd, 0, F_RDLCK, true);
	}
	if (err != 0)
		return cmk_fail(CMK_ERR_IO, "store_open: %s/%s: lock: %s", st->path, LOCK_FILE, strerror(err));
	epoch = read_u64(st->lock_fd, EPOCH_AT);
	/*
	 * Alone, recover unless the last process left the environment clean,
	 * or, after a failure, unless a process queued before us already
	 * recovered it (the epoch moved on).
	 */
	recover = alone && (failed ? epoch == st->epoch : read_u64(st->lock_fd, CLEAN_AT) != 1);
	if (alone && (rc = write_u64(st, CLEAN_AT, 0)) != 0)
		goto fail;
	if (recover) {
		cmk_log(failed ? CMK_LOG_WARN : CMK_LOG_DEBUG, "store: %s: running recovery%s", st->path,
			failed ? " (a process died inside Berkeley DB)" : "");
		epoch++;
	} else {
		st->epoch = epoch;      /* the environment we attach to; if it turns out failed, this is the one */
		atomic_store(&st->opening_epoch, epoch);
	}
	if ((rc = gen_open(st, number, recover, id, out)) != 0)
		goto fail;
	if (recover && (rc = write_u64(st, EPOCH_AT, epoch)) != 0) {
		close_gen_env(*out);
		free(*out);
		*out = NULL;
		goto fail;
	}
	/*
	 * A store of an older format is upgraded by a process that has it alone,
	 * before anyone else gets in; otherwise an older process may be using
	 * it, and it is used in its own format until then.
	 */
	if ((*out)->format < CMK_STORE_FORMAT) {
		if (alone && (rc = store_upgrade(*out, id)) != 0) {
			close_gen_env(*out);
			free(*out);
			*out = NULL;
			goto fail;
		}
		if (!alone)
			cmk_log(CMK_LOG_INFO, "store: %s: format %" PRIu32 " is in use by another process; the store "
				"is upgraded when a process opens it alone", st->path, (*out)->format);
	}
	st->epoch = epoch;
	/* Let the others in: the write lock turns into a read lock atomically. */
	if (alone && (err = ofd_lock(st->lock_fd, 0, F_RDLCK, false)) != 0)
		cmk_log(CMK_LOG_WARN, "store: %s/%s: unlock: %s", st->path, LOCK_FILE, strerror(err));
	return 0;
fail:
	ofd_lock(st->lock_fd, 0, F_UNLCK, false);
	return rc;
}

/* Free a retired generation nobody uses any more.  Called under st->mu. */
/*
 * The handles of environments that panicked.  BDB has no call that frees
 * them (its close of a panicked environment only drops file handles): the
 * few kilobytes each stay allocated on purpose, listed here.
 */
static struct store_gen *abandoned;

static void gen_free(struct store_gen *g)
{
	/* The regions themselves BDB leaves mapped: unmap them, nothing refers to them any more. */
	for (size_t i = 0; i < g->n_maps; i++)
		munmap((void *)g->maps[i].start, g->maps[i].end - g->maps[i].start);
	free(g->maps);
	g->maps = NULL;
	g->n_maps = 0;
	pthread_mutex_lock(&open_lock);
	g->next = abandoned;
	abandoned = g;
	pthread_mutex_unlock(&open_lock);
}

/*
 * Close a retired generation's environment handle once no thread of ours is
 * inside it (none can enter: it is broken).  Closing drops its file
 * handles; a thread still inside could go on to use one of those numbers,
 * which by then may be another file's (a FUSE channel, a socket): closing
 * or writing it would hit that file.  A thread that never comes back (it
 * waits on what a dead process held) keeps its generation's descriptors
 * open for good.
 */
static void close_retired_env(struct store_gen *g)
{
	if (g->env_closed || atomic_load(&g->inside) != 0)
		return;
	/* BDB lists every file handle it drops as an error: expected here, not worth a warning each. */
	g->env->set_errcall(g->env, NULL);
	g->env->close(g->env, 0);
	g->env_closed = true;
}

static void reap_retired(struct cmk_store *st)
{
	for (struct store_gen **p = &st->retired; *p != NULL;) {
		struct store_gen *g = *p;
		close_retired_env(g);
		if (g->env_closed && atomic_load(&g->txns) == 0) {
			*p = g->next;
			gen_free(g);
		} else {
			p = &g->next;
		}
	}
}

/*
 * Take a failed generation out of service and let go of the environment.
 * Called under st->mu with no thread of ours entering it any more (it is
 * broken).  The environment is panicked first, so every other process stops
 * using it too, and the threads merely running in it leave at their next
 * step; once none is inside, BDB's panic close drops its file handles and
 * keeps its memory (close_retired_env); then the read lock goes, so that
 * recovery can run (it does not need our handles closed).
 */
static void retire_locked(struct cmk_store *st, struct store_gen *g)
{
	int64_t deadline = cmk_monotonic_ms() + DRAIN_MS;

	atomic_store(&g->broken, true);
	g->env->set_flags(g->env, DB_PANIC_ENVIRONMENT, 1);
	/* Callers that are merely running see the panic at their next step and leave. */
	while (atomic_load(&g->inside) > 0 && cmk_monotonic_ms() < deadline)
		usleep(2000);
	close_retired_env(g);
	ofd_lock(st->lock_fd, 0, F_UNLCK, false);
	g->retired = true;
	g->retired_ms = cmk_monotonic_ms();
	g->next = st->retired;
	st->retired = g;
	reap_retired(st);
}

/* Replace the current generation (when there is one) by a new environment.  Called under st->mu. */
static int reopen_locked(struct cmk_store *st)
{
	struct store_gen *g;
	uint8_t id[CMK_STORE_ID_LEN];
	bool failed = st->gen != NULL || st->reopen_failed;
	int rc;

	if (st->gen != NULL) {
		retire_locked(st, st->gen);
		st->gen = NULL;
	}
	st->reopen_failed = failed;
	for (int attempt = 1;; attempt++) {
		if ((rc = open_locked_gen(st, failed, id, &g)) == 0)
			break;
		/* The environment failed while it was opened (a process died inside it): recover it. */
		if (rc != CMK_ERR_BUSY || attempt == OPEN_RETRIES)
			return rc;
		failed = true;
	}
	if (atomic_load(&st->generations) > 0 && memcmp(id, st->id, sizeof(id)) != 0)
		rc = cmk_fail(CMK_ERR_STORE, "store: %s: the store was replaced by another one while open", st->path);
	if (rc != 0) {
		close_gen_env(g);
		free(g);
		ofd_lock(st->lock_fd, 0, F_UNLCK, false);
		return rc;
	}
	memcpy(st->id, id, sizeof(id));
	record_maps(g);
	st->gen = g;
	st->reopen_failed = false;
	if (atomic_fetch_add(&st->generations, 1) > 0)
		cmk_log(CMK_LOG_INFO, "store: %s: opened a new environment (generation %" PRIu64 ")", st->path,
			g->number);
	return 0;
}

int gen_enter(struct cmk_store *st, struct store_gen **out)
{
	int rc = 0;

	*out = NULL;
	pthread_mutex_lock(&st->mu);
	if (st->gen == NULL || gen_is_broken(st->gen))
		rc = reopen_locked(st);
	if (rc == 0) {
		*out = st->gen;
		atomic_fetch_add(&st->gen->inside, 1);
	}
	pthread_mutex_unlock(&st->mu);
	return rc;
}

void gen_leave(struct store_gen *g)
{
	atomic_fetch_sub(&g->inside, 1);
}

void gen_txn_begun(struct store_gen *g)
{
	atomic_fetch_add(&g->txns, 1);
}

void gen_txn_ended(struct store_gen *g)
{
	atomic_fetch_sub(&g->txns, 1);
}

/* ---- the monitor ---------------------------------------------------------- */

/*
 * fork() copies only the calling thread: a monitor caught in the middle of a
 * check (inside Berkeley DB or the allocator) would leave the child with
 * locks nobody releases.  Monitors check under the read side of this lock
 * and fork takes the write side, so a fork happens between checks.
 */
static pthread_rwlock_t fork_guard = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t fork_guard_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
	pthread_rwlock_wrlock(&fork_guard);
}

static void fork_parent(void)
{
	pthread_rwlock_unlock(&fork_guard);
}

/*
 * Not an unlock: glibc knows the writer by thread id, and the child's one
 * thread has a new id, so its unlock would count as a reader's and leave the
 * lock held for good.  The child is single-threaded here: start afresh.
 */
static void fork_child(void)
{
	pthread_rwlock_init(&fork_guard, NULL);
}

static void install_fork_guard(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Retired generations with a thread inside for too long: report each once.  Called under st->mu. */
static unsigned find_wedged(struct cmk_store *st, bool *report)
{
	int64_t now = cmk_monotonic_ms();
	unsigned stuck = 0;

	*report = false;
	for (struct store_gen *g = st->retired; g != NULL; g = g->next) {
		int inside = atomic_load(&g->inside);
		if (inside <= 0 || now - g->retired_ms < WEDGED_MS)
			continue;
		stuck += (unsigned)inside;
		if (!g->wedge_reported) {
			g->wedge_reported = true;
			*report = true;
		}
	}
	return stuck;
}

/*
 * The failure check, as the monitor runs it: release what dead processes
 * held; when only recovery helps, retire the environment at once (so the
 * processes waiting to recover it are not held back by this one) and leave
 * the reopen to the next call.  It never waits for st->mu: a thread holding
 * it (an open) may be the one that is stuck.
 */
static void monitor_check(struct cmk_store *st)
{
	struct store_gen *g;
	bool report;
	unsigned stuck;
	int ret;

	if (atomic_load(&st->opening_since) != 0 || pthread_mutex_trylock(&st->mu) != 0)
		return;
	if ((g = st->gen) != NULL && !gen_is_broken(g)) {
		atomic_fetch_add(&g->inside, 1);
		pthread_mutex_unlock(&st->mu);
		released_dead = false;
		ret = g->env->failchk(g->env, 0);
		if (ret == 0 && released_dead)
			cmk_log(CMK_LOG_INFO, "store: %s: released the locks and transactions of a process that died",
				st->path);
		if (ret == DB_RUNRECOVERY)
			mark_broken(g, "a process died inside Berkeley DB");
		else if (ret != 0)
			cmk_log(CMK_LOG_WARN, "store: %s: failure check: %s", st->path, db_strerror(ret));
		cmk_bdb_msg[0] = '\0';
		gen_leave(g);
		if (pthread_mutex_trylock(&st->mu) != 0)
			return;
	}
	if (st->gen != NULL && gen_is_broken(st->gen)) {
		retire_locked(st, st->gen);
		st->gen = NULL;
		st->reopen_failed = true;
	}
	reap_retired(st);
	stuck = find_wedged(st, &report);
	atomic_store(&st->stuck, stuck);
	pthread_mutex_unlock(&st->mu);
	if (report) {
		cmk_log(CMK_LOG_ERROR, "store: %s: %u thread(s) wait inside an environment that was recovered; "
			"they will not come back", st->path, stuck);
		if (st->wedged != NULL)
			st->wedged(st->path, false, st->wedged_arg);
	}
}

/*
 * An open that attaches to an environment some process found failed, and
 * has not returned a second later, waits on something the dead process
 * held: it never will.  (So does one that has not returned for
 * OPEN_WEDGED_MS, should the hint in the lock file be lost.)
 */
static void check_open(struct cmk_store *st)
{
	int64_t since = atomic_load(&st->opening_since), age;
	bool failed;

	if (since == 0 || st->open_wedge_reported == since)
		return;
	age = cmk_monotonic_ms() - since;
	failed = read_u64(st->lock_fd, FAILED_AT) == (uint64_t)atomic_load(&st->opening_epoch);
	if (age < (failed ? OPEN_FAILED_GRACE_MS : OPEN_WEDGED_MS))
		return;
	st->open_wedge_reported = since;
	cmk_log(CMK_LOG_WARN, "store: %s: opening the environment waits on something a killed process held; "
		"this process cannot use the store any more", st->path);
	if (st->wedged != NULL)
		st->wedged(st->path, true, st->wedged_arg);
}

int cmk_store_check(struct cmk_store *st)
{
	struct store_gen *g;
	int rc;

	monitor_check(st);
	/* Reopen now rather than at the next call. */
	if ((rc = gen_enter(st, &g)) == 0)
		gen_leave(g);
	return rc;
}

static void *monitor(void *arg)
{
	struct cmk_store *st = arg;
	struct timespec ts;

	for (;;) {
		pthread_mutex_lock(&st->monitor_mu);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += MONITOR_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!st->monitor_stop && pthread_cond_timedwait(&st->monitor_cv, &st->monitor_mu, &ts) != ETIMEDOUT)
			;
		if (st->monitor_stop) {
			pthread_mutex_unlock(&st->monitor_mu);
			break;
		}
		pthread_mutex_unlock(&st->monitor_mu);
		check_open(st);
		pthread_rwlock_rdlock(&fork_guard);
		monitor_check(st);
		pthread_rwlock_unlock(&fork_guard);
	}
	return NULL;
}

/* ---- opening and closing -------------------------------------------------- */

static int check_dir(const char *path)
{
	struct stat sb;
	int rc;

	if ((rc = cmk_mkdirs(path, 0700)) != 0)
		return rc;
	if (lstat(path, &sb) != 0)
		return cmk_fail(CMK_ERR_IO, "store_open: %s: %s", path, strerror(errno));
	if (S_ISLNK(sb.st_mode))
		return cmk_fail(CMK_ERR_INVALID, "store_open: %s: is a symbolic link; give the directory it points to",
				path);
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

static void stop_monitor(struct cmk_store *st)
{
	if (!st->monitor_running)
		return;
	pthread_mutex_lock(&st->monitor_mu);
	st->monitor_stop = true;
	pthread_cond_signal(&st->monitor_cv);
	pthread_mutex_unlock(&st->monitor_mu);
	pthread_join(st->monitor, NULL);
	st->monitor_running = false;
}

static void free_store(struct cmk_store *st)
{
	/* Closing the descriptors drops the use and liveness locks. */
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	if (st->procs_fd >= 0)
		close(st->procs_fd);
	pthread_cond_destroy(&st->monitor_cv);
	pthread_mutex_destroy(&st->monitor_mu);
	pthread_mutex_destroy(&st->mu);
	free(st->real_path);
	free(st->path);
	free(st);
}

int cmk_store_open(const char *path, struct cmk_store **out)
{
	struct cmk_store *st;
	pthread_condattr_t ca;
	bool claimed = false;
	int rc;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return cmk_fail(CMK_ERR_INVALID, "store_open: no store path given");
	if ((st = calloc(1, sizeof(*st))) == NULL || (st->path = strdup(path)) == NULL) {
		free(st);
		return CMK_ERR_NOMEM;
	}
	st->lock_fd = st->procs_fd = -1;
	pthread_mutex_init(&st->mu, NULL);
	pthread_mutex_init(&st->monitor_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->monitor_cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&st->generations, 0);
	atomic_init(&st->stuck, 0);
	atomic_init(&st->records_read, 0);
	atomic_init(&st->log_file, 0);
	if ((rc = check_dir(path)) != 0 || (rc = claim_store(st)) != 0)
		goto fail;
	claimed = true;
	pthread_mutex_lock(&open_lock);
	st->wedged = default_wedged;
	st->wedged_arg = default_wedged_arg;
	pthread_mutex_unlock(&open_lock);
	st->real_path = realpath(path, NULL);
	if ((rc = lock_files_open(st)) != 0)
		goto fail;
	/* Before the first open: an open that never returns is one of the things it watches for. */
	pthread_once(&fork_guard_once, install_fork_guard);
	if (pthread_create(&st->monitor, NULL, monitor, st) != 0) {
		rc = cmk_fail(CMK_ERR_INTERNAL, "store_open: %s: cannot start the monitor thread", path);
		goto fail;
	}
	st->monitor_running = true;
	pthread_mutex_lock(&st->mu);
	rc = reopen_locked(st);
	pthread_mutex_unlock(&st->mu);
	if (rc != 0)
		goto fail;
	*out = st;
	return 0;
fail:
	stop_monitor(st);
	if (st->gen != NULL) {
		close_gen_env(st->gen);
		free(st->gen);
	}
	if (claimed)
		release_store(st);
	free_store(st);
	return rc;
}

/*
 * A clean close: when no other process has the environment open (the write
 * lock is free; holding it keeps newcomers out until the close is done),
 * checkpoint, close, and say that it was left clean, so the next process to
 * open it alone need not recover it.
 */
static void close_clean(struct cmk_store *st, struct store_gen *g)
{
	bool alone = ofd_lock(st->lock_fd, 0, F_WRLCK, false) == 0;

	close_gen_env_last(g, alone);
	if (alone && write_u64(st, CLEAN_AT, 1) != 0)
		cmk_log(CMK_LOG_WARN, "%s", cmk_errdetail());
	ofd_lock(st->lock_fd, 0, F_UNLCK, false);
}

void cmk_store_close(struct cmk_store *st)
{
	struct store_gen *g;
	bool leak;

	if (st == NULL)
		return;
	stop_monitor(st);
	pthread_mutex_lock(&st->mu);
	if ((g = st->gen) != NULL) {
		st->gen = NULL;
		if (gen_is_broken(g)) {
			retire_locked(st, g);
		} else {
			close_clean(st, g);
			free(g->maps);
			free(g);
		}
	}
	reap_retired(st);
	/* Threads wedged in a retired generation may still point at this handle: leave it to them. */
	leak = st->retired != NULL;
	pthread_mutex_unlock(&st->mu);
	release_store(st);
	if (leak)
		cmk_log(CMK_LOG_WARN, "store_close: %s: threads are still wedged in a recovered environment; "
			"its memory stays with them", st->path);
	else
		free_store(st);
}

const uint8_t *cmk_store_id(const struct cmk_store *st)
{
	return st->id;
}

bool cmk_store_needs_recovery(const struct cmk_store *st)
{
	struct cmk_store *s = (struct cmk_store *)st;
	bool broken;

	pthread_mutex_lock(&s->mu);
	broken = s->gen == NULL || gen_is_broken(s->gen);
	pthread_mutex_unlock(&s->mu);
	return broken;
}

uint64_t cmk_store_generation(const struct cmk_store *st)
{
	return atomic_load(&((struct cmk_store *)st)->generations);
}

unsigned cmk_store_stuck(const struct cmk_store *st)
{
	return atomic_load(&((struct cmk_store *)st)->stuck);
}

void cmk_store_set_wedged_default(cmk_store_wedged_fn fn, void *arg)
{
	pthread_mutex_lock(&open_lock);
	default_wedged = fn;
	default_wedged_arg = arg;
	pthread_mutex_unlock(&open_lock);
}

void cmk_store_on_wedged(struct cmk_store *st, cmk_store_wedged_fn fn, void *arg)
{
	pthread_mutex_lock(&st->mu);
	st->wedged = fn;
	st->wedged_arg = arg;
	pthread_mutex_unlock(&st->mu);
}

/* ---- transactions --------------------------------------------------------- */

int cmk_store_begin(struct cmk_store *st, struct cmk_txn **txn)
{
	struct store_gen *g;
	struct cmk_txn *x;
	int ret, rc;

	*txn = NULL;
	if ((x = calloc(1, sizeof(*x))) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = gen_enter(st, &g)) != 0) {
		free(x);
		return rc;
	}
	x->g = g;
	if ((ret = g->env->txn_begin(g->env, NULL, &x->t, 0)) != 0) {
		rc = db_fail(g, ret, "store_begin: %s", st->path);
		gen_leave(g);
		free(x);
		return rc;
	}
	gen_txn_begun(g);
	gen_leave(g);
	*txn = x;
	return 0;
}

/*
 * Whether the log went on to a new file since this handle last looked (and
 * at its first write): then the files before the last checkpoint can go.
 * Looking at every commit keeps the log to the two or three newest files,
 * in a daemon and in a CLI run that commits once alike; the look itself is
 * cheap, the removal (overwrite, sync, unlink) runs once per file.
 */
static bool log_moved_on(struct store_gen *g)
{
	DB_LOG_STAT *sp = NULL;
	uint32_t file;

	if (g->env->log_stat(g->env, &sp, 0) != 0)
		return false;
	file = sp->st_cur_file;
	free(sp);
	return atomic_exchange(&g->st->log_file, file) != file;
}

/* Enter the transaction's own generation; CMK_ERR_BUSY when it failed since (redo the transaction). */
int gen_enter_txn(struct cmk_txn *txn)
{
	struct store_gen *g = txn->g;

	atomic_fetch_add(&g->inside, 1);
	if (gen_is_broken(g)) {
		atomic_fetch_sub(&g->inside, 1);
		return cmk_fail(CMK_ERR_BUSY, "store: %s: the environment was recovered during this transaction; "
				"redo it", g->st->path);
	}
	return 0;
}

int cmk_store_commit(struct cmk_txn *txn)
{
	struct store_gen *g;
	bool wrote;
	int ret, rc;

	if (txn == NULL)
		return cmk_fail(CMK_ERR_INVALID, "store_commit: no transaction");
	g = txn->g;
	wrote = txn->wrote;
	if ((rc = gen_enter_txn(txn)) != 0) {
		/* Nothing reached the disk: recovery rolled the transaction back. */
		gen_txn_ended(g);
		free(txn);
		return rc;
	}
	ret = txn->t->commit(txn->t, 0);
	gen_txn_ended(g);
	free(txn);
	if (ret == DB_RUNRECOVERY) {
		rc = db_fail(g, ret, "store_commit: %s", g->st->path);
		gen_leave(g);
		/* Whether the commit record reached the log is unknown: this is not a plain retry. */
		return cmk_fail(CMK_ERR_STORE, "%s (the commit may or may not have taken effect)", cmk_errdetail());
	}
	if (ret != 0) {
		rc = db_fail(g, ret, "store_commit: %s", g->st->path);
		gen_leave(g);
		return rc;
	}
	/* Checkpoint once a megabyte of log has accumulated, so that old log files can go. */
	if (wrote && (ret = g->env->txn_checkpoint(g->env, CHECKPOINT_KB, 0, 0)) != 0) {
		/* The commit is durable; a process that died since broke the environment, not this commit. */
		if (ret == DB_RUNRECOVERY)
			mark_broken(g, "a process died inside Berkeley DB (seen at a checkpoint)");
		else
			cmk_log(CMK_LOG_WARN, "store: %s: checkpoint after a commit: %s", g->st->path, db_strerror(ret));
	}
	if (wrote && log_moved_on(g)) {
		unsigned removed;

		if (store_remove_old_logs(g, &removed) != 0)
			cmk_log(CMK_LOG_WARN, "%s", cmk_errdetail());
	}
	gen_leave(g);
	return 0;
}

void cmk_store_abort(struct cmk_txn *txn)
{
	struct store_gen *g;
	int ret;

	if (txn == NULL)
		return;
	g = txn->g;
	/* In a failed environment there is nothing to undo here: recovery does it. */
	if (gen_enter_txn(txn) == 0) {
		if ((ret = txn->t->abort(txn->t)) != 0 && ret != DB_RUNRECOVERY)
			cmk_log(CMK_LOG_WARN, "store_abort: %s: %s", g->st->path, db_strerror(ret));
		gen_leave(g);
	}
	gen_txn_ended(g);
	free(txn);
}
