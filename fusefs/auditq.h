/*
 * auditq.h - key-read audit events on their way to the audit trail.
 *
 * A key (or bundle) open succeeds only once its privateKeyRead line is on
 * disk and anchored: the trail is written ahead of the key.  Doing one
 * fsync per open would make every key read wait for its own disk flush, so
 * open() puts its event on a bounded queue and one writer thread appends
 * whatever has accumulated as one batch (one write, one fsync, one anchor
 * commit); every opener waits for the batch that holds its line (group
 * commit).  Refusals never wait (nothing is served), and a caller refused
 * over and over is aggregated: one line for the first refusal, then one
 * summary line per interval with the count (refusals.h).
 *
 * Nothing is dropped.  When the queue is full, open() waits for room.  When
 * the trail cannot be written, the waiting openers of that batch fail (their
 * events are rewritten as failures, "not served", and retried), and new key
 * reads fail at once until a write succeeds again.  At shutdown the queue is
 * drained and every refusal still counted is written as its summary.
 */
#ifndef CMKCERTFS_AUDITQ_H
#define CMKCERTFS_AUDITQ_H

#include <stdbool.h>
#include <stdint.h>

#include "cmkcert/audit.h"
#include "cmkcert/crypto.h"
#include "cmkcert/names.h"

/* One privateKeyRead event; the strings are copies owned by the event. */
struct keyread_event {
	char outcome[16];                 /* "success", "denied", "failure" */
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	char serial[CMK_SERIAL_MAX];
	char fingerprint[CMK_FPR_LEN + 1];
	char detail[200];                 /* which file, and why when not "success" */
	uint64_t record_id;
	uint64_t count;                   /* refusals this event stands for (aggregated), 0 = one */
	long uid, gid, pid;
};

struct auditq;

/* Start the writer thread for `a` with room for `cap` events. */
int auditq_start(struct cmk_audit *a, const char *actor, size_t cap, struct auditq **out);

/*
 * Queue an event (copied), waiting while the queue is full.  With `durable`
 * the call returns only once the event's line is on disk and anchored (0),
 * or fails: CMK_ERR_AUDIT when the trail cannot currently be written, the
 * queue is shutting down, or the line did not get there within
 * AUDITQ_WAIT_MS.  Without it, 0 once queued.  On failure the caller must
 * refuse the key.
 */
#define AUDITQ_WAIT_MS 5000
int auditq_record(struct auditq *q, const struct keyread_event *ev, bool durable);

/*
 * Record a refused key open (any outcome but "success") without waiting:
 * queued at once when it is the first of its kind, otherwise counted for
 * the summary line at the end of its interval (refusals.h).  0 when queued
 * or counted; CMK_ERR_AUDIT when neither was possible (the queue is closing,
 * or it cannot take a line and the table is full): the caller logs that the
 * refusal was not recorded.
 */
int auditq_refused(struct auditq *q, const struct keyread_event *ev);

/* Events written, and batches they took, since the start (for the logs and tests). */
void auditq_stats(struct auditq *q, uint64_t *events, uint64_t *batches);

/*
 * For the control socket's metrics: key reads served (recorded successes),
 * refused (every refusal, also those only counted for a summary line), and
 * the events waiting in the queue now.
 */
struct auditq_counts {
	uint64_t allowed, refused;
	uint64_t depth;
};
void auditq_counts(struct auditq *q, struct auditq_counts *out);

/* Write everything still queued, stop the thread and free.  NULL is a no-op. */
void auditq_stop(struct auditq *q);

#endif
