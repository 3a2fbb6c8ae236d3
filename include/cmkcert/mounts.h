/*
 * mounts.h - the registry of running cmkcertfs mounts of a store: which
 * mounts serve it, and how far along the store's change log each one is.
 *
 * The mountpoint is a command-line argument of cmkcertfs, not part of the
 * configuration, so the CLI learns it here.  The registry is a plain file
 * beside the Berkeley DB files, <store>/cmkcert.mounts, of fixed-size
 * records.  A daemon claims a free record with an open-file-description
 * write lock on the record's byte range and holds it for as long as it
 * runs: the kernel drops the lock when the process dies, so a killed
 * daemon's record is free (not live) at once, whatever the file still says.
 * The daemon's watcher publishes the change-log sequence (store.h,
 * cmk_store_change_last()) its tree serves after each tick; `cmkcert --wait`
 * compares it with the sequence its own commit reached.
 *
 * The file is created 0644 (the store directory, 0700, decides who can read
 * it); one whose owner is not this user and that group or others may write
 * is refused.
 */
#ifndef CMKCERT_MOUNTS_H
#define CMKCERT_MOUNTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CMK_MOUNTS_FILE "cmkcert.mounts"
#define CMK_MOUNT_PATH_MAX 4096       /* mountpoint bytes, NUL included */
#define CMK_MOUNTS_MAX 256            /* records in one registry: daemons serving one store at once */
/*
 * How often cmkcertfs looks at the change log (fusefs/watch.h,
 * WATCH_INTERVAL_MS): a mount that follows the store shows a change within
 * about this long.
 */
#define CMK_MOUNTS_FOLLOW_MS 150
/* A mount that published nothing for this long is not following the store (stopped, stuck, failing). */
#define CMK_MOUNTS_STALE_MS 2000
/* How often cmk_mounts_wait() looks at the registry. */
#define CMK_MOUNTS_POLL_MS 10

/* A daemon's claim on a record.  Owned by the daemon; released by cmk_mounts_unregister(). */
struct cmk_mount_reg;

/* One live mount, as read from the registry. */
struct cmk_mount_info {
	pid_t pid;                          /* of the cmkcertfs process */
	char mountpoint[CMK_MOUNT_PATH_MAX];/* absolute */
	uint64_t seq;                       /* change-log position the mount serves (0 before the first publish) */
	int64_t updated_ms;                 /* wall clock, ms since the epoch, of the last publish; 0 = none yet */
	int64_t age_ms;                     /* ms between the last publish and the read; -1 = none yet */
};

/*
 * Claim a record in <store_dir>/cmkcert.mounts (created when missing) for
 * `mountpoint` (absolute, shorter than CMK_MOUNT_PATH_MAX) and this process.
 * The record serves sequence 0 until the first cmk_mounts_publish().
 * Returns 0 and *out (release with cmk_mounts_unregister()); CMK_ERR_INVALID
 * for a relative or too long mountpoint or a store directory that is not one;
 * CMK_ERR_NOTFOUND when the store directory does not exist; CMK_ERR_PERM for
 * a registry file others may write or that cannot be opened for lack of
 * permission; CMK_ERR_BUSY when CMK_MOUNTS_MAX daemons hold every record;
 * CMK_ERR_IO otherwise.  Detail names the file.
 */
int cmk_mounts_register(const char *store_dir, const char *mountpoint, struct cmk_mount_reg **out);

/*
 * The mount now serves change-log position `seq`; stamps the time.  One
 * pwrite(): cheap enough for every watcher tick.  Readers never see a torn
 * value (a check value is written with it; they read again on a mismatch).
 * Call from one thread at a time.  CMK_ERR_IO with detail on failure.
 */
int cmk_mounts_publish(struct cmk_mount_reg *r, uint64_t seq);

/* Give the record up (its lock is dropped) and free `r`.  NULL is a no-op. */
void cmk_mounts_unregister(struct cmk_mount_reg *r);

/*
 * The live mounts of the store: records whose lock a running process holds,
 * in record order.  No registry file means no mount (0, *n = 0).  Returns 0
 * with *out (cmk_mounts_free(); NULL when *n is 0); errors as for
 * cmk_mounts_register() about the store directory and the file.
 */
int cmk_mounts_live(const char *store_dir, struct cmk_mount_info **out, size_t *n);

/*
 * Wait until every live mount of the store serves sequence `seq` or later,
 * looking every CMK_MOUNTS_POLL_MS, at most until `deadline_ms`
 * (cmk_monotonic_ms() time; a deadline already past looks once).  Mounts
 * that start or stop meanwhile count from the next look.  Returns 0 when
 * they all serve it, also when no mount runs (*n = 0); CMK_ERR_TIMEOUT when
 * the deadline passed, with detail naming the first mount behind (pid,
 * mountpoint, the sequence it serves).  On 0 and CMK_ERR_TIMEOUT, *out and *n
 * list the mounts of the last look (cmk_mounts_free()): those behind have
 * seq < `seq`.  Other errors as cmk_mounts_live(), with *out NULL.
 */
int cmk_mounts_wait(const char *store_dir, uint64_t seq, int64_t deadline_ms, struct cmk_mount_info **out,
		    size_t *n);

/* Free what cmk_mounts_live() or cmk_mounts_wait() returned.  NULL is a no-op. */
void cmk_mounts_free(struct cmk_mount_info *v);

#endif
