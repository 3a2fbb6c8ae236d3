/*
 * store_env.c - the store's Berkeley DB environment: opening it, telling
 * live processes from dead ones, releasing what dead ones held, and
 * replacing the environment when only recovery can help (see the
 * generations in store_bdb_int.h).
 *
 * Several processes share one environment: the daemon for weeks, CLI runs
 * for a second, and any of them may be killed at any moment.  Berkeley DB's
 * failure checking handles that without recovery in the common case:
 *
 *   - every handle tracks its threads (set_thread_count) and answers
 *     is_alive() for any (pid, thread) it finds in the environment;
 *   - failchk() aborts the transactions and releases the locks of threads
 *     whose process is dead; every process runs it every MONITOR_MS on a
 *     monitor thread, and every open runs it (DB_FAILCHK) when the registry
 *     shows a dead process, instead of the recovery DB_REGISTER would run;
 *   - a process killed *inside* a Berkeley DB call may have left shared
 *     memory half changed: failchk says DB_RUNRECOVERY.  Then the monitor
 *     panics the environment, so every process learns it at its next call
 *     or monitor tick, and each reopens.  The first reopen finds the dead
 *     process in the registry, waits REG_TIMEOUT_US twice for the others to
 *     let go, and runs recovery while holding the registry lock that every
 *     other open waits for.
 *
 * Liveness is judged by the registry itself, not by kill(pid, 0): every
 * process holding the environment keeps a lock on its own slot of
 * __db.register, and the kernel drops it when the process dies.  A pid that
 * was reused by an unrelated process therefore still reads as dead.
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
#define LOG_FILE_BYTES (2u << 20)
#define CHECKPOINT_KB 1024u
#define THREADS 256u                  /* thread slots per environment (BDB grows past it when needed) */
#define REG_TIMEOUT_US 1000000u       /* recovery waits this long, twice, for other processes to let go */
#define MONITOR_MS 200                /* failure check period of every process */
#define DRAIN_MS 500                  /* a failed generation waits this long for its callers to leave */
#define WEDGED_MS 2000                /* a thread still inside a retired generation after this is stuck */
#define OPEN_RETRIES 5

/* BDB's registry: one fixed-width line per process slot, the first byte of a live one locked by its process. */
#define REG_SLOT 25

_Thread_local char cmk_bdb_msg[256];

/*
 * Stores open in this process.  DB_REGISTER keeps one fcntl lock per process
 * on __db.register, and closing any descriptor of that file drops all of the
 * process's locks: a second handle on the same store, even one that fails to
 * open, would make the first look dead to other processes.  So a second open
 * is refused before BDB sees it.  Entries carry the pid: a child made by
 * fork() may open the store itself.
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

static void mark_broken(struct store_gen *g, const char *why)
{
	/* Opening meets the panic of the environment it is about to recover: that is not news. */
	if (g->opening)
		return;
	if (!atomic_exchange(&g->broken, true))
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

/* ---- liveness ------------------------------------------------------------- */

/* Does some process hold the registry slot that names `pid`?  Errors answer "alive": never free a live one's locks. */
static bool registry_holds(int fd, pid_t pid)
{
	char buf[REG_SLOT * 64];
	off_t off = 0;
	ssize_t n;

	if (fd < 0)
		return true;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		for (ssize_t i = 0; i + REG_SLOT <= n; i += REG_SLOT) {
			struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off + i, .l_len = 1 };
			char line[REG_SLOT + 1], *end;
			unsigned long v;

			memcpy(line, buf + i, REG_SLOT);
			line[REG_SLOT] = '\0';
			v = strtoul(line, &end, 10);
			if (end == line || v != (unsigned long)pid)
				continue;
			if (fcntl(fd, F_GETLK, &fl) != 0 || fl.l_type != F_UNLCK)
				return true;
		}
		off += n - n % REG_SLOT;
		if (n % REG_SLOT != 0 && n < (ssize_t)sizeof(buf))
			break;
	}
	return n < 0;
}

static int is_alive(DB_ENV *env, pid_t pid, db_threadid_t tid, u_int32_t flags)
{
	struct store_gen *g = env->app_private;

	(void)tid;
	(void)flags;
	/* This process's threads do not die on their own: the process dies with them. */
	if (pid == getpid())
		return 1;
	return g == NULL || registry_holds(g->reg_fd, pid);
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

static int open_env(struct store_gen *g)
{
	const u_int32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL | DB_THREAD |
				DB_REGISTER | DB_RECOVER | DB_FAILCHK;
	struct cmk_store *st = g->st;
	DB_ENV *env;
	int ret;

	if ((ret = db_env_create(&env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating the environment handle", st->path);
	g->env = env;
	env->app_private = g;
	env->set_errcall(env, on_bdb_error);
	env->set_msgcall(env, on_bdb_msg);
	if ((ret = env->set_event_notify(env, on_bdb_event)) != 0 ||
	    (ret = env->set_cachesize(env, 0, CACHE_BYTES, 1)) != 0 ||
	    (ret = env->set_lk_detect(env, DB_LOCK_DEFAULT)) != 0 ||
	    (ret = env->set_lg_max(env, LOG_FILE_BYTES)) != 0 ||
	    (ret = env->log_set_config(env, DB_LOG_AUTO_REMOVE, 1)) != 0 ||
	    (ret = env->set_thread_count(env, THREADS)) != 0 ||
	    (ret = env->set_isalive(env, is_alive)) != 0 ||
	    (ret = env->set_timeout(env, REG_TIMEOUT_US, DB_SET_REG_TIMEOUT)) != 0)
		return db_fail(g, ret, "store_open: %s: configuring the environment", st->path);
	/* Region and log files are created 0600 (the directory is 0700 as well). */
	if ((ret = env->open(env, st->path, flags, 0600)) != 0)
		return db_fail(g, ret, "store_open: %s: opening the environment", st->path);
	return 0;
}

/* Close a generation whose environment is healthy: databases, a checkpoint, the environment. */
static void close_gen_env(struct store_gen *g)
{
	int ret;

	store_close_dbs(g);
	if (g->env != NULL) {
		/* A checkpoint at close keeps the next recovery short and lets old log files go. */
		if (!gen_is_broken(g) && g->env->txn_checkpoint(g->env, 0, 0, 0) != 0)
			cmk_log(CMK_LOG_WARN, "store_close: %s: checkpoint failed", g->st->path);
		if ((ret = g->env->close(g->env, 0)) != 0 && !gen_is_broken(g))
			cmk_log(CMK_LOG_WARN, "store_close: %s: %s", g->st->path, db_strerror(ret));
		g->env = NULL;
	}
	/* Only after the environment let go of its registry slot: closing this descriptor drops our locks. */
	if (g->reg_fd >= 0)
		close(g->reg_fd);
	g->reg_fd = -1;
}

/*
 * An environment created before thread tracking has no thread table, and
 * BDB only makes one when it creates the regions.  Remove the regions (only
 * possible when no other process has them open) and let the next open
 * create them again.
 */
static bool lacks_thread_table(int rc)
{
	return rc == CMK_ERR_STORE && strstr(cmk_errdetail(), "thread") != NULL &&
	       (strstr(cmk_errdetail(), "thread table must be allocated") != NULL ||
		strstr(cmk_errdetail(), "no thread region") != NULL);
}

static int remove_regions(struct cmk_store *st)
{
	DB_ENV *env;
	int ret;

	if ((ret = db_env_create(&env, 0)) != 0)
		return cmk_fail(CMK_ERR_STORE, "store_open: %s: %s", st->path, db_strerror(ret));
	/* remove() frees the handle whatever it returns; without DB_FORCE it refuses regions in use. */
	if ((ret = env->remove(env, st->path, 0)) != 0)
		return cmk_fail(CMK_ERR_STORE, "store_open: %s: the environment was created by an older cmkcert and "
				"is in use; stop every process using the store once so it can be upgraded (%s)",
				st->path, db_strerror(ret));
	cmk_log(CMK_LOG_INFO, "store_open: %s: upgraded the environment's regions (thread tracking)", st->path);
	return 0;
}

static int gen_open(struct cmk_store *st, uint64_t number, struct store_gen **out)
{
	struct store_gen *g;
	char *reg;
	int rc;

	*out = NULL;
	if ((g = calloc(1, sizeof(*g))) == NULL)
		return CMK_ERR_NOMEM;
	g->st = st;
	g->number = number;
	g->reg_fd = -1;
	g->opening = true;
	atomic_init(&g->broken, false);
	atomic_init(&g->inside, 0);
	atomic_init(&g->txns, 0);
	if ((reg = cmk_asprintf("%s/__db.register", st->path)) == NULL) {
		free(g);
		return CMK_ERR_NOMEM;
	}
	/* Our own descriptor for is_alive(), opened before BDB may need it during open. */
	g->reg_fd = open(reg, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (g->reg_fd < 0) {
		rc = cmk_fail(CMK_ERR_IO, "store_open: %s: %s", reg, strerror(errno));
		free(reg);
		free(g);
		return rc;
	}
	for (int attempt = 0;; attempt++) {
		if ((rc = open_env(g)) == 0)
			break;
		close_gen_env(g);
		if (attempt > 0 || !lacks_thread_table(rc) || (rc = remove_regions(st)) != 0)
			goto fail;
		if ((g->reg_fd = open(reg, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
			rc = cmk_fail(CMK_ERR_IO, "store_open: %s: %s", reg, strerror(errno));
			goto fail;
		}
	}
	/* BDB creates its process registry 0660; it holds only process ids, but keep it private too. */
	if (fchmod(g->reg_fd, 0600) != 0)
		cmk_log(CMK_LOG_WARN, "store_open: %s: chmod: %s", reg, strerror(errno));
	if ((rc = store_open_dbs(g)) != 0) {
		close_gen_env(g);
		goto fail;
	}
	g->opening = false;
	free(reg);
	*out = g;
	return 0;
fail:
	free(reg);
	free(g);
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

static void reap_retired(struct cmk_store *st)
{
	for (struct store_gen **p = &st->retired; *p != NULL;) {
		struct store_gen *g = *p;
		if (atomic_load(&g->inside) == 0 && atomic_load(&g->txns) == 0) {
			*p = g->next;
			gen_free(g);
		} else {
			p = &g->next;
		}
	}
}

/*
 * Take a failed generation out of service.  Called under st->mu with no
 * thread of ours entering it any more (it is broken).  The environment is
 * panicked first, so every other process stops using it too; then BDB's
 * panic close drops its file handles and registry slot and keeps its memory,
 * so a thread still inside (waiting on a mutex a dead process held) never
 * touches freed memory.
 */
static void retire_locked(struct cmk_store *st, struct store_gen *g)
{
	int64_t deadline = cmk_monotonic_ms() + DRAIN_MS;

	atomic_store(&g->broken, true);
	g->env->set_flags(g->env, DB_PANIC_ENVIRONMENT, 1);
	/* Callers that are merely running see the panic at their next step and leave. */
	while (atomic_load(&g->inside) > 0 && cmk_monotonic_ms() < deadline)
		usleep(2000);
	/* BDB lists every file handle it drops as an error: expected here, not worth a warning each. */
	g->env->set_errcall(g->env, NULL);
	g->env->close(g->env, 0);
	if (g->reg_fd >= 0)
		close(g->reg_fd);
	g->reg_fd = -1;
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
	int rc;

	if (st->gen != NULL) {
		retire_locked(st, st->gen);
		st->gen = NULL;
	}
	for (int attempt = 1;; attempt++) {
		if ((rc = gen_open(st, atomic_load(&st->generations) + 1, &g)) == 0)
			break;
		/* Another process may be recovering at the same moment: its panic reached our new handle. */
		if (rc != CMK_ERR_BUSY || attempt == OPEN_RETRIES)
			return rc;
		store_backoff(attempt * 10);
	}
	if ((rc = store_load_meta(g, id)) == 0 && atomic_load(&st->generations) > 0 &&
	    memcmp(id, st->id, sizeof(id)) != 0)
		rc = cmk_fail(CMK_ERR_STORE, "store: %s: the store was replaced by another one while open", st->path);
	if (rc != 0) {
		close_gen_env(g);
		free(g);
		return rc;
	}
	memcpy(st->id, id, sizeof(id));
	record_maps(g);
	st->gen = g;
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

int cmk_store_check(struct cmk_store *st)
{
	struct store_gen *g;
	bool report;
	unsigned stuck;
	int ret, rc;

	if ((rc = gen_enter(st, &g)) != 0)
		return rc;
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
	pthread_mutex_lock(&st->mu);
	if (st->gen == g && gen_is_broken(g))
		rc = reopen_locked(st);
	reap_retired(st);
	stuck = find_wedged(st, &report);
	atomic_store(&st->stuck, stuck);
	pthread_mutex_unlock(&st->mu);
	if (report) {
		cmk_log(CMK_LOG_ERROR, "store: %s: %u thread(s) wait inside an environment that was recovered; "
			"they will not come back", st->path, stuck);
		if (st->wedged != NULL)
			st->wedged(st->path, st->wedged_arg);
	}
	return rc;
}

static void *monitor(void *arg)
{
	struct cmk_store *st = arg;
	struct timespec ts;

	pthread_mutex_lock(&st->mu);
	while (!st->monitor_stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += MONITOR_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!st->monitor_stop && pthread_cond_timedwait(&st->monitor_cv, &st->mu, &ts) != ETIMEDOUT)
			;
		if (st->monitor_stop)
			break;
		pthread_mutex_unlock(&st->mu);
		if (cmk_store_check(st) != 0)
			cmk_log(CMK_LOG_WARN, "store: %s: %s", st->path, cmk_errdetail());
		pthread_mutex_lock(&st->mu);
	}
	pthread_mutex_unlock(&st->mu);
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

static void free_store(struct cmk_store *st)
{
	pthread_cond_destroy(&st->monitor_cv);
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
	pthread_mutex_init(&st->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->monitor_cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&st->generations, 0);
	atomic_init(&st->stuck, 0);
	if ((rc = check_dir(path)) != 0 || (rc = claim_store(st)) != 0)
		goto fail;
	claimed = true;
	st->real_path = realpath(path, NULL);
	pthread_mutex_lock(&st->mu);
	rc = reopen_locked(st);
	pthread_mutex_unlock(&st->mu);
	if (rc != 0)
		goto fail;
	if (pthread_create(&st->monitor, NULL, monitor, st) != 0) {
		rc = cmk_fail(CMK_ERR_INTERNAL, "store_open: %s: cannot start the monitor thread", path);
		goto fail;
	}
	st->monitor_running = true;
	*out = st;
	return 0;
fail:
	if (st->gen != NULL) {
		close_gen_env(st->gen);
		free(st->gen);
	}
	if (claimed)
		release_store(st);
	free_store(st);
	return rc;
}

void cmk_store_close(struct cmk_store *st)
{
	struct store_gen *g;
	bool leak;

	if (st == NULL)
		return;
	if (st->monitor_running) {
		pthread_mutex_lock(&st->mu);
		st->monitor_stop = true;
		pthread_cond_signal(&st->monitor_cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->monitor, NULL);
	}
	pthread_mutex_lock(&st->mu);
	if ((g = st->gen) != NULL) {
		st->gen = NULL;
		if (gen_is_broken(g)) {
			retire_locked(st, g);
		} else {
			close_gen_env(g);
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
	/* Checkpoint once a megabyte of log has accumulated, so DB_LOG_AUTO_REMOVE can drop old files. */
	if (wrote && (ret = g->env->txn_checkpoint(g->env, CHECKPOINT_KB, 0, 0)) != 0) {
		cmk_log(CMK_LOG_WARN, "store_commit: %s: checkpoint: %s", g->st->path, db_strerror(ret));
		if (ret == DB_RUNRECOVERY)
			atomic_store(&g->broken, true);
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
