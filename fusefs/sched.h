/*
 * sched.h - the renewal scheduler of the daemon (DESIGN §8, story 3).
 */
#ifndef CMKCERTFS_SCHED_H
#define CMKCERTFS_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "cmkcert/lifecycle.h"

struct sched;

/*
 * Start the scheduler thread: every [renewal] check_interval it reads what
 * the renew_at index says is due and renews (or expires) each with up to
 * max_parallel workers, at most max_ops_per_minute operations in all, one
 * operation per (tenant, type) at a time; then cleans up rotating
 * certificates past the grace period.  Each worker has its own OpenBao
 * client and shares ctx's store, sealer and audit trail.
 */
int sched_start(struct cmk_ctx *ctx, struct sched **out);

/*
 * Stop: no new operation starts; running ones may finish until
 * `deadline_ms` (monotonic), after which the scheduler is left behind
 * (false; an operation cut short is recovered like a crash).  NULL is a
 * no-op.
 */
bool sched_stop(struct sched *s, int64_t deadline_ms);

/* Let a scheduler go without waiting: it starts nothing new.  NULL is a no-op. */
void sched_abandon(struct sched *s);

#endif
