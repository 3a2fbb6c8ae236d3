/*
 * cmkfs.h - the cmkcertfs daemon as one object: the library context, the
 * in-memory tree, and the threads that work beside the FUSE loop.
 *
 * Threads:
 *   - the FUSE workers (libfuse's multi-threaded loop) answer requests from
 *     the in-memory tree only; the one slow-ish thing they do is unseal a key
 *     (local AES-GCM) at open();
 *   - the watcher tails the store's change log and swaps new versions into
 *     the tree (watch.c); while it is behind, key files fail closed;
 *   - the announcer performs the tree's changes of names through the mount,
 *     so that inotify watchers hear of them (announce.c);
 *   - the audit writer drains key-read events to the audit trail (auditq.c);
 *   - the renewal scheduler and its workers renew, expire and clean up
 *     (sched.c); they talk to OpenBao and change the store, and the watcher
 *     brings their changes into the tree like any other process's;
 *   - keeper.c replaces the watcher and the scheduler when one of them is
 *     stuck where a dead process left the store;
 *   - under systemd, the service thread tells the service manager when the
 *     mount serves, what it serves, and that it is alive (service.h).
 */
#ifndef CMKCERTFS_CMKFS_H
#define CMKCERTFS_CMKFS_H

#define FUSE_USE_VERSION 35

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <fuse_lowlevel.h>

#include "cmkcert/lifecycle.h"

struct tree;
struct lockmem;
struct auditq;
struct watcher;
struct sched;
struct fh;
struct announcer;
struct cmk_mount_reg;
struct service;

/* The earliest renewal due among the active certificates, as the watcher last read it (watch.c). */
struct next_due {
	int64_t at;                   /* renew_at, seconds since the epoch; 0: none scheduled */
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
};

/*
 * How long the kernel may cache names and attributes.  Every change is
 * pushed to the kernel as it happens (watch.c), so these only bound how
 * long a lost notification could matter.  Negative entries (a name that
 * does not exist yet) expire quickly: a name added while a lookup for it
 * is in flight cannot be invalidated reliably.
 */
#define CMKFS_ENTRY_TIMEOUT 3600.0
#define CMKFS_ATTR_TIMEOUT 3600.0
#define CMKFS_NEGATIVE_TIMEOUT 1.0

struct cmkfs {
	struct cmk_ctx *ctx;          /* configuration, store, sealer, audit trail */
	struct tree *tree;            /* what the mount shows */
	struct lockmem *lockmem;      /* locked pages for unsealed keys */
	struct auditq *auditq;        /* key-read events on their way to the trail */
	pthread_mutex_t keeper_mu;    /* guards watcher, sched, stopping (keeper.c) */
	struct watcher *watcher;      /* store change log -> tree -> kernel */
	struct sched *sched;          /* renewals; NULL with -n */
	bool run_scheduler;
	bool stopping;                /* shutting down: nothing is restarted */
	bool abandoned_threads;       /* a watcher or scheduler was left behind, stuck in the store */
	atomic_int_fast64_t synced_ms;  /* when the tree last showed the store as it was (watch.h) */
	pthread_mutex_t synced_mu;    /* with synced_cv: key opens wait for the watcher to catch up; guards next_due */
	struct next_due next_due;     /* for the service's STATUS= (service.h) */
	atomic_int_fast64_t watch_beat_ms;  /* when the watcher last finished a tick, whatever its outcome */
	pthread_cond_t synced_cv;     /* CLOCK_MONOTONIC */
	struct announcer *announcer;  /* changes of names, made through the mount (announce.h) */
	atomic_int announcer_tid;     /* its thread id, the only caller allowed to change the mount */
	bool mount_readonly;          /* the mount is read-only for the kernel (announce.h) */
	struct fh *key_handles;       /* open handles holding a plaintext key (under the tree lock) */
	struct fuse_session *se;
	const char *mountpoint;
	struct cmk_mount_reg *mount_reg;  /* this mount in the store's registry (mounts.h), for cmkcert --wait; or NULL */
	struct service *service;      /* systemd notifications (service.h); NULL when not under systemd */
};

/* The FUSE operations (ops.c, file.c). */
extern const struct fuse_lowlevel_ops cmkfs_ops;

#endif
