/*
 * refill.h - the daemon keeps the key pools full (pool.h), in the
 * background, at the lowest priority.
 */
#ifndef CMKCERTFS_REFILL_H
#define CMKCERTFS_REFILL_H

#include <stdbool.h>
#include <stdint.h>

#include "cmkcert/lifecycle.h"

struct refill;

/*
 * Start the refill thread for the pools `ctx`'s configuration asks for
 * (none: *out = NULL and nothing runs).  It uses ctx's store and sealer,
 * which are shared with the other threads.
 */
int refill_start(struct cmk_ctx *ctx, struct refill **out);

/*
 * Stop it.  A key being generated is not waited for (the thread drops it
 * and never touches the store again); false when the thread is stuck in the
 * store until `deadline_ms` (monotonic), and then it is left behind.  NULL
 * is a no-op.
 */
bool refill_stop(struct refill *r, int64_t deadline_ms);

#endif
