/*
 * watch.h - keeping the mount in step with the store.
 *
 * The CLI and the daemon share the Berkeley DB environment; every mutation
 * appends to the store's change log in the same transaction.  The watcher
 * thread polls the log's last sequence number every WATCH_INTERVAL_MS,
 * reloads the active record of each (tenant, type) that changed, swaps the
 * new versions into the tree in one step, and then tells the kernel which
 * names, inodes and directories to forget.  It is the only thread that reads
 * the store once the mount is up.
 */
#ifndef CMKCERTFS_WATCH_H
#define CMKCERTFS_WATCH_H

#include <stdint.h>

#include "cmkfs.h"

#define WATCH_INTERVAL_MS 150

/*
 * Load every active certificate into the (empty, not yet mounted) tree.
 * *seq receives the change-log position the tree reflects.
 */
int watch_load(struct cmkfs *fs, uint64_t *seq);

/* Start following the change log after `seq`. */
int watcher_start(struct cmkfs *fs, uint64_t seq, struct watcher **out);

/* Stop and join the thread.  NULL is a no-op. */
void watcher_stop(struct watcher *w);

#endif
