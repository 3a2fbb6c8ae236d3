/*
 * main.c - cmkcertfs [-c FILE] [-f] [-d] [-v] [-o OPTIONS] MOUNTPOINT
 *
 * Serves the certificates of the store as a read-only file tree (DESIGN §7,
 * cmkcertfs(8)).  Start-up order matters: harden the process before any key
 * can be in memory; fork (in the background) before opening the store; load
 * the tree before mounting so the first lookup sees every certificate; start
 * the audit writer before the first open can happen; start the watcher once
 * the kernel can be told about changes, then the renewal scheduler.  Shutdown (SIGTERM, SIGINT, SIGHUP,
 * or `fusermount3 -u`) runs the same steps backwards and exits 0, within STOP_LIMIT_MS whatever
 * the store's other processes did.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/mounts.h"
#include "cmkcert/util.h"
#include "announce.h"
#include "auditq.h"
#include "cmkfs.h"
#include "control.h"
#include "detach.h"
#include "file.h"
#include "keeper.h"
#include "lockmem.h"
#include "pin.h"
#include "refill.h"
#include "sched.h"
#include "service.h"
#include "tree.h"
#include "watch.h"

#define CMKCERTFS_VERSION "0.1.0"
#define AUDIT_QUEUE_LEN 4096
/* After SIGTERM: worker threads get this long to finish, the whole shutdown at most STOP_LIMIT_MS. */
#define STOP_WORKERS_MS 3000
#define STOP_LIMIT_MS 10000
#define FIXED_OPTS "default_permissions,fsname=cmkcertfs,subtype=cmkcert"

struct options {
	const char *config;       /* NULL: $CMKCERT_CONF or the default path */
	bool foreground;
	bool no_scheduler;        /* -n: serve only; renewals run elsewhere (cmkcert renew --due) */
	bool debug;               /* libfuse request tracing (implies foreground) */
	int verbose;
	char *fuse_opts;          /* -o values joined with ',' */
	char mountpoint[PATH_MAX];
};

/* Set once the daemon runs in the background (stderr is /dev/null then); read by every thread. */
static bool use_syslog;
/* Standard error is the journal (set in main() before any thread): lines carry their priority as "<N>". */
static bool to_journal;

static void log_line(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)arg;
	if (__atomic_load_n(&use_syslog, __ATOMIC_ACQUIRE))
		syslog(cmk_log_priority(level), "%s", msg);
	else if (to_journal)
		fprintf(stderr, "<%d>%s: %s\n", cmk_log_priority(level), cmk_log_level_name(level), msg);
	else
		fprintf(stderr, "cmkcertfs: %s: %s\n", cmk_log_level_name(level), msg);
}

/* libfuse's own messages go the same way, without their trailing newline. */
static void fuse_log_line(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[1024];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	cmk_log(level <= FUSE_LOG_ERR ? CMK_LOG_ERROR : level == FUSE_LOG_WARNING ? CMK_LOG_WARN :
		level == FUSE_LOG_DEBUG ? CMK_LOG_DEBUG : CMK_LOG_INFO, "fuse: %s", msg);
}

static void usage(FILE *f)
{
	fputs("usage: cmkcertfs [-c FILE] [-f] [-n] [-d] [-v] [-o OPTIONS] MOUNTPOINT\n"
	      "\n"
	      "Serve the active certificates of the cmkcert store as a read-only file tree:\n"
	      "  /certs/<tenant>-<type>.crt  /private/<tenant>-<type>.key\n"
	      "  /ca/<type>-ca-chain.pem     /bundle/<tenant>-<type>.pem\n"
	      "\n"
	      "  -c FILE      configuration (default $CMKCERT_CONF or " CMK_CONFIG_DEFAULT_PATH ")\n"
	      "  -f           stay in the foreground, log to standard error\n"
	      "  -n           do not run the renewal scheduler (serve files only)\n"
	      "  -d           trace FUSE requests (implies -f)\n"
	      "  -v           log debug messages\n"
	      "  -o OPTIONS   more FUSE mount options (always: " FIXED_OPTS ", allow_other as root)\n"
	      "  -h, -V       this help, the version\n",
	      f);
}

static int append_opts(struct options *o, const char *more)
{
	char *joined = o->fuse_opts ? cmk_asprintf("%s,%s", o->fuse_opts, more) : cmk_strdup(more);

	if (joined == NULL)
		return -1;
	free(o->fuse_opts);
	o->fuse_opts = joined;
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	int c;

	while ((c = getopt(argc, argv, "c:fndvo:hV")) != -1) {
		switch (c) {
		case 'c': o->config = optarg; break;
		case 'f': o->foreground = true; break;
		case 'n': o->no_scheduler = true; break;
		case 'd': o->debug = o->foreground = true; o->verbose++; break;
		case 'v': o->verbose++; break;
		case 'o':
			if (append_opts(o, optarg) != 0)
				return 1;
			break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("cmkcertfs %s\n", CMKCERTFS_VERSION); exit(0);
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	/* Absolute, because the daemon changes to "/" once it runs in the background. */
	if (realpath(argv[optind], o->mountpoint) == NULL) {
		fprintf(stderr, "cmkcertfs: %s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	return 0;
}

/* The session with our fixed mount options last, so they win over anything in -o. */
static struct fuse_session *new_session(const struct options *o, struct cmkfs *fs)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	char *fixed;

	fixed = cmk_asprintf("%s%s", FIXED_OPTS, geteuid() == 0 ? ",allow_other" : "");
	if (fixed == NULL || fuse_opt_add_arg(&args, "cmkcertfs") != 0 ||
	    (o->debug && fuse_opt_add_arg(&args, "-d") != 0) ||
	    (o->fuse_opts != NULL && (fuse_opt_add_arg(&args, "-o") != 0 ||
				      fuse_opt_add_arg(&args, o->fuse_opts) != 0)) ||
	    fuse_opt_add_arg(&args, "-o") != 0 || fuse_opt_add_arg(&args, fixed) != 0)
		goto out;
	se = fuse_session_new(&args, &cmkfs_ops, sizeof(cmkfs_ops), fs);
out:
	fuse_opt_free_args(&args);
	free(fixed);
	return se;
}

/*
 * The last resort of a bounded shutdown: if stopping takes longer than
 * STOP_LIMIT_MS (a thread stuck where a dead process left the store, a
 * trail that cannot be written), log it and exit anyway.  Nothing is lost:
 * the store recovers unfinished operations at the next start.
 */
static void *stop_watchdog(void *arg)
{
	(void)arg;
	usleep(STOP_LIMIT_MS * 1000);
	cmk_log(CMK_LOG_ERROR, "shutdown took longer than %d s; exiting now", STOP_LIMIT_MS / 1000);
	_exit(1);
	return NULL;
}

/* Before the keeper takes over (keeper.c): the first open of the store is wedged. */
static void on_wedged_at_start(const char *path, bool whole_store, void *arg)
{
	(void)arg;
	if (!whole_store)
		return;
	cmk_log(CMK_LOG_ERROR, "store %s cannot be opened (it waits on what a killed process held); exiting to be "
		"restarted", path);
	_exit(1);
}

static void arm_stop_watchdog(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, stop_watchdog, NULL) == 0)
		pthread_detach(t);
}

/* Start a helper thread with signals blocked, so they reach libfuse's threads. */
static void block_signals(sigset_t *old)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

static int serve(const struct options *o)
{
	struct fuse_loop_config loop = { .clone_fd = 0, .max_idle_threads = 10 };
	struct cmkfs fs = { .mountpoint = o->mountpoint, .keeper_mu = PTHREAD_MUTEX_INITIALIZER };
	struct control *control = NULL;
	struct refill *refill = NULL;
	bool mounted = false, handlers = false, started = false;
	uint64_t seq = 0;
	pthread_condattr_t ca;
	sigset_t old;
	int rc, ret = 1;

	cmk_store_set_wedged_default(on_wedged_at_start, NULL);
	if ((rc = cmk_ctx_open(o->config, "cmkcertfs", &fs.ctx)) != 0) {
		cmk_log(CMK_LOG_ERROR, "%s: %s", cmk_strerror(rc), cmk_errdetail());
		goto out;
	}
	pthread_mutex_init(&fs.synced_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs.synced_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (tree_new(fs.ctx->cfg, &fs.tree) != 0 || lockmem_new(&fs.lockmem) != 0) {
		cmk_log(CMK_LOG_ERROR, "out of memory");
		goto out;
	}
	if ((rc = watch_load(&fs, &seq)) != 0) {
		cmk_log(CMK_LOG_ERROR, "loading certificates: %s: %s", cmk_strerror(rc), cmk_errdetail());
		goto out;
	}
	if ((fs.se = new_session(o, &fs)) == NULL)
		goto out;     /* libfuse said why */
	if (fuse_set_signal_handlers(fs.se) != 0)
		goto out;
	handlers = true;
	/* Before the mount: nothing may look into the mount point until the loop answers. */
	if ((rc = control_open(&fs, &control)) != 0) {
		cmk_log(CMK_LOG_ERROR, "%s", cmk_errdetail());
		goto out;
	}
	if (fuse_session_mount(fs.se, o->mountpoint) != 0)
		goto out;
	mounted = true;
	if (!(fs.mount_readonly = announce_protect_mount(o->mountpoint)))
		cmk_log(CMK_LOG_INFO, "cannot make the mount read-only for the kernel (%s); cmkcertfs refuses every "
			"change to it itself", strerror(errno));
	/* Tell cmkcert --wait that this mount serves the store, as of the position loaded above (mounts.h). */
	if ((rc = cmk_mounts_register(fs.ctx->cfg->store.path, o->mountpoint, &fs.mount_reg)) != 0 ||
	    (rc = cmk_mounts_publish(fs.mount_reg, seq)) != 0)
		cmk_log(CMK_LOG_WARN, "%s; cmkcert --wait will not see this mount", cmk_errdetail());
	block_signals(&old);
	rc = auditq_start(fs.ctx->audit, fs.ctx->actor, AUDIT_QUEUE_LEN, &fs.auditq);
	fs.run_scheduler = !o->no_scheduler;
	if (rc == 0)
		rc = announcer_start(&fs, &fs.announcer);
	if (rc == 0 && (rc = keeper_start(&fs, seq)) == 0)
		started = true;
	if (rc == 0)
		rc = service_start(&fs, &fs.service);
	/* Key pools are kept full where renewals run; a failure costs speed, not service. */
	if (rc == 0 && fs.run_scheduler && refill_start(fs.ctx, &refill) != 0)
		cmk_log(CMK_LOG_WARN, "key pool refill not started: %s", cmk_errdetail());
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0)
		rc = control_start(control);
	if (rc != 0) {
		cmk_log(CMK_LOG_ERROR, "%s", cmk_errdetail());
		goto out;
	}
	tree_lock(fs.tree);
	cmk_log(CMK_LOG_INFO, "serving %zu files at %s", tree_files(fs.tree), o->mountpoint);
	tree_unlock(fs.tree);
	if (!o->foreground)
		__atomic_store_n(&use_syslog, true, __ATOMIC_RELEASE);
	detach_done(0);

	rc = fuse_session_loop_mt(fs.se, &loop);
	/* 0: unmounted (fusermount3 -u); > 0: the signal that stopped us; < 0: an error. */
	ret = rc < 0 ? 1 : 0;
	if (rc < 0)
		cmk_log(CMK_LOG_ERROR, "fuse loop: %s", strerror(-rc));
out:
	service_stopping(fs.service);
	block_signals(&old);
	arm_stop_watchdog();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* First: no request may start an operation while the threads it needs are stopped. */
	if (!control_stop(control, cmk_monotonic_ms() + STOP_WORKERS_MS))
		fs.abandoned_threads = true;
	if (!refill_stop(refill, cmk_monotonic_ms() + STOP_WORKERS_MS))
		fs.abandoned_threads = true;
	if (started && !keeper_stop(&fs, cmk_monotonic_ms() + STOP_WORKERS_MS))
		cmk_log(CMK_LOG_WARN, "a worker thread stuck in the store was left behind");
	if (mounted)
		fuse_session_unmount(fs.se);
	service_stop(fs.service);
	/* After the unmount: an operation it has in flight on the mount fails now. */
	if (!announcer_stop(fs.announcer, cmk_monotonic_ms() + STOP_WORKERS_MS))
		fs.abandoned_threads = true;
	/* Nothing publishes any more: leave the registry (a thread left behind might: the exit drops it). */
	if (!fs.abandoned_threads)
		cmk_mounts_unregister(fs.mount_reg);
	auditq_stop(fs.auditq);
	if (handlers)
		fuse_remove_signal_handlers(fs.se);
	if (fs.se != NULL)
		fuse_session_destroy(fs.se);
	if (fs.tree != NULL && fs.lockmem != NULL)
		file_shutdown(&fs);
	/* A thread left behind may still point at the tree and the store: leave them to the exit. */
	if (!fs.abandoned_threads) {
		tree_free(fs.tree);
		lockmem_free(fs.lockmem);
		cmk_ctx_free(fs.ctx);
	}
	detach_done(ret != 0 ? ret : 1);
	return ret;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	int rc;

	if ((rc = parse_args(argc, argv, &o)) != 0)
		return rc;
	/* Before anything secret is in memory: no core dumps, no ptrace by other users. */
	if (cmk_harden_process() != 0) {
		fprintf(stderr, "cmkcertfs: %s\n", cmk_errdetail());
		return 1;
	}
	to_journal = cmk_log_stderr_is_journal();
	cmk_set_log(log_line, NULL, o.verbose > 0 ? CMK_LOG_DEBUG : CMK_LOG_INFO);
	fuse_set_log_func(fuse_log_line);
	openlog("cmkcertfs", LOG_PID, LOG_DAEMON);
	if (!o.foreground)
		detach_start();
	rc = serve(&o);
	free(o.fuse_opts);
	closelog();
	return rc;
}
