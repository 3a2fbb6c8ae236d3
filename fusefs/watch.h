/*
 * watch.h - keeping the mount in step with the store.
 *
 * The CLI and the daemon share the Berkeley DB environment; every mutation
 * appends to the store's change log in the same transaction.  The watcher
 * thread polls the log's last sequence number every WATCH_INTERVAL_MS,
 * reloads the active record of each (tenant, type) that changed, swaps the
 * new versions into the tree in one step, and then hands the changes of
 * names to the announcer (announce.h).  It is the only thread that reads the
 * store once the mount is up, besides the scheduler's.
 */
#ifndef CMKCERTFS_WATCH_H
#define CMKCERTFS_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "cmkfs.h"

#define WATCH_INTERVAL_MS 150
/*
 * Keys are served only while the tree is known to show the store as it was
 * at most this long ago (watch_is_current()); otherwise opens of key files
 * fail with EIO rather than serve a key that may have been revoked.
 */
#define WATCH_STALE_MS 1000

/*
 * Load every active certificate into the (empty, not yet mounted) tree.
 * *seq receives the change-log position the tree reflects.
 */
int watch_load(struct cmkfs *fs, uint64_t *seq);

/* Start following the change log after `seq`. */
int watcher_start(struct cmkfs *fs, uint64_t seq, struct watcher **out);

/*
 * Stop and join the thread, waiting at most until `deadline_ms` (monotonic):
 * a watcher stuck inside the store is abandoned instead (false).  NULL is a
 * no-op.
 */
bool watcher_stop(struct watcher *w, int64_t deadline_ms);

/* Let a watcher go without waiting for it: it never touches the tree again.  NULL is a no-op. */
void watcher_abandon(struct watcher *w);

/* Note that the tree shows the store as of now (after loading it). */
void watch_synced(struct cmkfs *fs);

/* True when the tree showed the store as it was at most WATCH_STALE_MS ago. */
bool watch_is_current(struct cmkfs *fs);

/* Wait up to max_ms for the tree to be current (the watcher catching up after a recovery). */
bool watch_wait_current(struct cmkfs *fs, int64_t max_ms);

#endif
