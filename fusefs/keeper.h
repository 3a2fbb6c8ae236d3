/*
 * keeper.h - the daemon's threads that use the store: the watcher and the
 * renewal scheduler, started, replaced and stopped together.
 *
 * The store repairs itself when a process dies (store.h), but a thread of
 * ours that was waiting on something the dead process held never comes
 * back.  The FUSE threads never touch the store, so such a thread is the
 * watcher or one of the scheduler's: when the store reports one wedged, both
 * are abandoned (they never touch the tree again) and new ones start from a
 * full reload.  Until the new watcher has caught up, key files fail closed
 * (watch_is_current()).
 */
#ifndef CMKCERTFS_KEEPER_H
#define CMKCERTFS_KEEPER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmkfs.h"

/* Start the watcher (from change-log position `seq`) and, unless -n, the scheduler. */
int keeper_start(struct cmkfs *fs, uint64_t seq);

/*
 * Stop both, waiting for them at most until `deadline_ms` (monotonic).
 * False when a thread had to be left behind (it is stuck in the store).
 */
bool keeper_stop(struct cmkfs *fs, int64_t deadline_ms);

/* pthread_join(), giving up at `deadline_ms` (monotonic): false when the thread is still running. */
bool keeper_join_until(pthread_t t, int64_t deadline_ms);

#endif
