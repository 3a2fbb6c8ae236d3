/*
 * refusals.h - refused key opens, aggregated before they reach the audit
 * trail.
 *
 * A process that opens another tenant's key in a loop is refused tens of
 * thousands of times a second; one fsync'd line for each would fill the disk
 * (about 20 MB/s) and bury every other event.  Refusals are therefore grouped
 * by what a reader of the trail needs to tell them apart: the caller's uid
 * and gid, the file and version (record id), the outcome and the reason (the
 * event's detail).  Per such key:
 *
 *   - the first refusal is written at once, as one line of its own;
 *   - further ones within REFUSALS_INTERVAL_MS of it are only counted;
 *   - when the interval ends, one summary line is written whose "count" is
 *     the number of refusals it stands for, and a new interval begins; an
 *     interval that ends without a refusal forgets the key, so the next one
 *     is written at once again.
 *
 * So a key takes at most one line per interval, plus the first, whatever the
 * rate, and the counts of its lines add up to its refusals.  A summary
 * carries the pid, serial and fingerprint of the most recent refusal it
 * counts.  Successful key reads never come here: each keeps its own line,
 * written ahead of the key (auditq.h).
 *
 * The table holds at most REFUSALS_MAX keys.  When it is full, a refusal of
 * a new key is written at once on its own (nothing is lost, the trail only
 * grows faster), rather than evicting a key whose count is still pending.
 *
 * Not thread-safe: the audit queue calls it under its own lock.  Times are
 * CLOCK_MONOTONIC milliseconds (cmk_monotonic_ms()).
 */
#ifndef CMKCERTFS_REFUSALS_H
#define CMKCERTFS_REFUSALS_H

#include <stdbool.h>
#include <stdint.h>

#include "auditq.h"

/* Both are documented in cmkcertfs(8), AUDIT; the table then takes at most about 600 KB. */
#define REFUSALS_INTERVAL_MS 10000
#define REFUSALS_MAX 1024

struct refusals;

/* An empty table; NULL when out of memory.  Release with refusals_free(). */
struct refusals *refusals_new(void);
/* Free the table and what it still counts (take it out first).  NULL is a no-op. */
void refusals_free(struct refusals *r);

/*
 * A refusal `ev` happened at `now_ms`.  Returns true when it must be written
 * now as a line of its own: the first of its key (or the table is full).
 * Returns false when it was counted for a later summary.  `can_write` says
 * whether the caller can queue a line right now; when it cannot, the first
 * refusal of a key is counted instead (it goes out with the summary), and
 * true then only means that the table is full too and the refusal cannot be
 * recorded at all.
 */
bool refusals_add(struct refusals *r, const struct keyread_event *ev, int64_t now_ms, bool can_write);

/* When the next interval ends (a summary may be due), INT64_MAX when nothing is counted. */
int64_t refusals_next_due(const struct refusals *r);

/*
 * The next summary line due at `now_ms` into `*out`: true when there is
 * one.  With `all` (at shutdown) every key with refusals still counted gives
 * its summary now, whether its interval ended or not, and is forgotten.
 */
bool refusals_take(struct refusals *r, int64_t now_ms, bool all, struct keyread_event *out);

/* Refusals counted and not yet taken as summaries. */
uint64_t refusals_pending(const struct refusals *r);

#endif
