/*
 * auditq.h - key-read audit events on their way to the audit trail.
 *
 * Every append to the trail is fsync'd; doing that inside open() would make
 * each key read wait for a disk flush.  open() instead puts its event on a
 * bounded in-memory queue and one writer thread appends events in order.
 * Nothing is dropped: when the queue is full, open() waits for room
 * (back-pressure); at shutdown the queue is drained.  If the trail cannot be
 * written, events stay queued and are retried, and new key reads are refused
 * (auditq_push fails) until a write succeeds again: a key is never served
 * without its record.
 */
#ifndef CMKCERTFS_AUDITQ_H
#define CMKCERTFS_AUDITQ_H

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
	char detail[160];                 /* which file, and why when not "success" */
	uint64_t record_id;
	long uid, gid, pid;
};

struct auditq;

/* Start the writer thread for `a` with room for `cap` events. */
int auditq_start(struct cmk_audit *a, const char *actor, size_t cap, struct auditq **out);

/*
 * Queue an event (copied), waiting while the queue is full.  Returns 0, or
 * CMK_ERR_AUDIT when the trail cannot currently be written or the queue is
 * shutting down: the caller must then refuse the key.
 */
int auditq_push(struct auditq *q, const struct keyread_event *ev);

/* Write everything still queued, stop the thread and free.  NULL is a no-op. */
void auditq_stop(struct auditq *q);

#endif
