/*
 * cmkfs.h - the cmkcertfs daemon as one object: the library context, the
 * in-memory tree, and the threads that work beside the FUSE loop.
 *
 * Threads:
 *   - the FUSE workers (libfuse's multi-threaded loop) answer requests from
 *     the in-memory tree only; the one slow-ish thing they do is unseal a key
 *     (local AES-GCM) at open();
 *   - the watcher tails the store's change log and swaps new versions into
 *     the tree, then tells the kernel what to forget (watch.c);
 *   - the audit writer drains key-read events to the audit trail (auditq.c);
 *   - the renewal scheduler and its workers renew, expire and clean up
 *     (sched.c); they talk to OpenBao and change the store, and the watcher
 *     brings their changes into the tree like any other process's.
 */
#ifndef CMKCERTFS_CMKFS_H
#define CMKCERTFS_CMKFS_H

#define FUSE_USE_VERSION 35

#include <stdbool.h>
#include <fuse_lowlevel.h>

#include "cmkcert/lifecycle.h"

struct tree;
struct lockmem;
struct auditq;
struct watcher;
struct sched;
struct pins;
struct fh;

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
	struct watcher *watcher;      /* store change log -> tree -> kernel */
	struct sched *sched;          /* renewals; NULL with -n (owned by the watcher once it runs: it
					 restarts the scheduler when the store must be reopened) */
	bool run_scheduler;
	struct pins *pins;            /* (process, tenant, type) -> version, under the tree lock (pin.h) */
	struct fh *key_handles;       /* open handles holding a plaintext key (under the tree lock) */
	struct fuse_session *se;
	const char *mountpoint;
};

/* The FUSE operations (ops.c, file.c). */
extern const struct fuse_lowlevel_ops cmkfs_ops;

#endif
