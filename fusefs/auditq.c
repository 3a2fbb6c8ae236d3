/*
 * auditq.c - the key-read audit queue and its writer thread (see auditq.h).
 *
 * Every queued event gets a ticket, its position in the order of the trail.
 * Events stay in the ring until the trail has them: the writer copies a
 * batch out, appends it without holding the lock, and only then frees the
 * slots and moves `written` past them, which releases their openers.  A
 * failed append keeps the batch, turns its successes into failures ("not
 * served") and moves `failed` past it, which fails its openers; the same
 * events, in the same order, are retried until the trail takes them.
 *
 * Refusals go through the aggregation table (refusals.h), kept under the
 * same lock.  The writer owns its clock: when idle it sleeps until the next
 * interval ends, then queues the summaries due like any other event.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "auditq.h"
#include "refusals.h"

#define BATCH 256
#define RETRY_MS 1000
#define STOP_RETRIES 5            /* at shutdown, give a failing trail this many more tries */

struct auditq {
	pthread_mutex_t mu;
	pthread_cond_t not_empty;     /* the writer waits here; also signalled to stop */
	pthread_cond_t not_full;
	pthread_cond_t done;          /* openers wait here for their ticket */
	struct keyread_event *ring;
	size_t cap, head, n;
	uint64_t head_ticket;         /* ticket of ring[head] */
	uint64_t in_flight;           /* tickets below this are being written */
	uint64_t failed;              /* tickets below this failed once: their opens were refused */
	bool stopping;
	bool failing;                 /* the last append failed: refuse new key reads */
	uint64_t events, batches;
	uint64_t allowed, refused;    /* key reads recorded as served, refusals seen (auditq_counts()) */
	struct refusals *refusals;    /* refused opens counted for a summary line */
	struct cmk_audit *audit;
	char actor[64];
	pthread_t thread;
};

/* Append events in order with one fsync and one anchor; true when they reached the trail. */
static bool write_events(struct auditq *q, const struct keyread_event *evs, size_t n)
{
	struct cmk_audit_event batch[BATCH];

	for (size_t i = 0; i < n; i++) {
		const struct keyread_event *k = &evs[i];
		struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;

		ev.event = CMK_AUDIT_KEY_READ;
		ev.outcome = k->outcome;
		ev.tenant = k->tenant;
		ev.type = k->type;
		ev.serial = k->serial[0] ? k->serial : NULL;
		ev.fingerprint = k->fingerprint[0] ? k->fingerprint : NULL;
		ev.actor = q->actor;
		ev.detail = k->detail[0] ? k->detail : NULL;
		ev.record_id = k->record_id;
		ev.uid = k->uid;
		ev.gid = k->gid;
		ev.pid = k->pid;
		ev.count = k->count;
		batch[i] = ev;
	}
	if (cmk_audit_append_batch(q->audit, batch, n) != 0) {
		cmk_log(CMK_LOG_ERROR, "audit: privateKeyRead: %s", cmk_errdetail());
		return false;
	}
	return true;
}

static void deadline_in(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Append `ev` to the ring (the caller checked for room); returns its ticket. */
static uint64_t push_locked(struct auditq *q, const struct keyread_event *ev)
{
	uint64_t ticket = q->head_ticket + q->n;

	q->ring[(q->head + q->n) % q->cap] = *ev;
	/* The writer only sleeps on an empty queue: wake it once per batch, not per event. */
	if (q->n++ == 0)
		pthread_cond_signal(&q->not_empty);
	return ticket;
}

/* Queue the refusal summaries that are due (at shutdown, all of them) while there is room. */
static void queue_summaries(struct auditq *q)
{
	struct keyread_event ev;
	int64_t now = cmk_monotonic_ms();

	while (q->n < q->cap && refusals_take(q->refusals, now, q->stopping, &ev))
		push_locked(q, &ev);
}

/* Sleep until an event is queued, the queue stops, or the next refusal interval ends. */
static void wait_for_work(struct auditq *q)
{
	int64_t due = refusals_next_due(q->refusals);
	struct timespec ts;

	if (due == INT64_MAX) {
		pthread_cond_wait(&q->not_empty, &q->mu);
		return;
	}
	ts.tv_sec = (time_t)(due / 1000);
	ts.tv_nsec = (long)(due % 1000) * 1000000L;
	pthread_cond_timedwait(&q->not_empty, &q->mu, &ts);
}

/* A queued success whose open was refused after all is recorded as what it became. */
static void mark_not_served(struct keyread_event *ev, const char *why)
{
	size_t len = strlen(ev->detail);

	if (strcmp(ev->outcome, "success") != 0)
		return;
	snprintf(ev->outcome, sizeof(ev->outcome), "failure");
	snprintf(ev->detail + len, sizeof(ev->detail) - len, "%snot served: %s", len ? "; " : "", why);
}

static void *writer(void *arg)
{
	struct auditq *q = arg;
	struct keyread_event *batch;
	int stop_tries = 0;

	if ((batch = malloc(BATCH * sizeof(*batch))) == NULL) {
		cmk_log(CMK_LOG_ERROR, "audit: out of memory; key reads are refused");
		pthread_mutex_lock(&q->mu);
		q->failing = true;
		pthread_cond_broadcast(&q->done);
		pthread_mutex_unlock(&q->mu);
		return NULL;
	}
	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct timespec ts;
		size_t take;
		bool ok;

		queue_summaries(q);
		/*
		 * A refusal that starts a new interval is always queued as a line
		 * of its own (or comes while the queue is busy), so this wait sees
		 * every new end of an interval.
		 */
		while (q->n == 0 && !q->stopping) {
			wait_for_work(q);
			queue_summaries(q);
		}
		/* Stopping: with room for them, every summary is queued by now. */
		if (q->n == 0)
			break;
		take = q->n < BATCH ? q->n : BATCH;
		for (size_t i = 0; i < take; i++)
			batch[i] = q->ring[(q->head + i) % q->cap];
		q->in_flight = q->head_ticket + take;
		pthread_mutex_unlock(&q->mu);
		ok = write_events(q, batch, take);
		pthread_mutex_lock(&q->mu);
		if (ok) {
			q->head = (q->head + take) % q->cap;
			q->n -= take;
			q->head_ticket += take;
			q->events += take;
			q->batches++;
			if (q->failing)
				cmk_log(CMK_LOG_INFO, "audit: trail writable again; key reads resume");
			q->failing = false;
			pthread_cond_broadcast(&q->done);
			pthread_cond_broadcast(&q->not_full);
			continue;
		}
		if (!q->failing)
			cmk_log(CMK_LOG_ERROR, "audit: cannot write the trail; refusing key reads until it can "
				"be written (%zu events waiting)", q->n);
		q->failing = true;
		/* The openers of this batch are refused, and the trail will say so. */
		for (size_t i = 0; i < take; i++)
			mark_not_served(&q->ring[(q->head + i) % q->cap], "the audit trail could not be written");
		if (q->head_ticket + take > q->failed)
			q->failed = q->head_ticket + take;
		q->in_flight = q->head_ticket;
		pthread_cond_broadcast(&q->done);
		pthread_cond_broadcast(&q->not_full);
		if (q->stopping && ++stop_tries > STOP_RETRIES) {
			cmk_log(CMK_LOG_ERROR, "audit: giving up at shutdown: %zu privateKeyRead events, and "
				"%llu refusals counted for summaries, were not written", q->n,
				(unsigned long long)refusals_pending(q->refusals));
			q->n = 0;
			break;
		}
		deadline_in(&ts, RETRY_MS);
		pthread_cond_timedwait(&q->not_empty, &q->mu, &ts);
	}
	pthread_mutex_unlock(&q->mu);
	free(batch);
	return NULL;
}

int auditq_start(struct cmk_audit *a, const char *actor, size_t cap, struct auditq **out)
{
	pthread_condattr_t ca;
	struct auditq *q;

	*out = NULL;
	if (cap == 0 || (q = calloc(1, sizeof(*q))) == NULL)
		return CMK_ERR_NOMEM;
	if ((q->ring = calloc(cap, sizeof(*q->ring))) == NULL || (q->refusals = refusals_new()) == NULL) {
		free(q->ring);
		free(q);
		return CMK_ERR_NOMEM;
	}
	q->cap = cap;
	q->audit = a;
	q->head_ticket = q->in_flight = q->failed = 1;
	snprintf(q->actor, sizeof(q->actor), "%s", actor);
	pthread_mutex_init(&q->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->not_empty, &ca);
	pthread_cond_init(&q->not_full, &ca);
	pthread_cond_init(&q->done, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&q->thread, NULL, writer, q) != 0) {
		pthread_cond_destroy(&q->done);
		pthread_cond_destroy(&q->not_full);
		pthread_cond_destroy(&q->not_empty);
		pthread_mutex_destroy(&q->mu);
		refusals_free(q->refusals);
		free(q->ring);
		free(q);
		return cmk_fail(CMK_ERR_INTERNAL, "audit: cannot start the writer thread");
	}
	*out = q;
	return 0;
}

int auditq_record(struct auditq *q, const struct keyread_event *ev, bool durable)
{
	struct timespec ts;
	uint64_t ticket;
	int rc = 0;

	deadline_in(&ts, AUDITQ_WAIT_MS);
	pthread_mutex_lock(&q->mu);
	while (q->n == q->cap && !q->stopping && !q->failing)
		if (pthread_cond_timedwait(&q->not_full, &q->mu, &ts) == ETIMEDOUT)
			break;
	if (q->stopping || q->failing || q->n == q->cap) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit trail cannot be written");
		goto out;
	}
	ticket = push_locked(q, ev);
	if (!durable)
		goto out;
	/* Group commit: whichever batch takes this ticket, its write releases us. */
	while (ticket >= q->head_ticket && ticket >= q->failed)
		if (pthread_cond_timedwait(&q->done, &q->mu, &ts) == ETIMEDOUT)
			break;
	if (ticket < q->failed) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit trail cannot be written");
	} else if (ticket >= q->head_ticket) {
		/* Not written in time.  Unless the writer already has it, record it as refused. */
		if (ticket >= q->in_flight)
			mark_not_served(&q->ring[(q->head + (ticket - q->head_ticket)) % q->cap],
					"its audit record was not written in time");
		rc = cmk_fail(CMK_ERR_AUDIT, "audit record not written within %d ms", AUDITQ_WAIT_MS);
	}
out:
	/* A key read whose record could not be written is refused (EIO). */
	if (strcmp(ev->outcome, "success") == 0) {
		if (rc == 0)
			q->allowed++;
		else
			q->refused++;
	}
	pthread_mutex_unlock(&q->mu);
	return rc;
}

int auditq_refused(struct auditq *q, const struct keyread_event *ev)
{
	bool room;
	int rc = 0;

	pthread_mutex_lock(&q->mu);
	q->refused++;
	if (q->stopping) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit trail is closing");
		goto out;
	}
	/* Never wait: when no line can be queued now, the table counts the refusal for later. */
	room = !q->failing && q->n < q->cap;
	if (!refusals_add(q->refusals, ev, cmk_monotonic_ms(), room))
		goto out;
	if (!room) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit trail cannot be written and too many kinds of refusal are "
			      "counted already");
		goto out;
	}
	push_locked(q, ev);
out:
	pthread_mutex_unlock(&q->mu);
	return rc;
}

void auditq_stats(struct auditq *q, uint64_t *events, uint64_t *batches)
{
	pthread_mutex_lock(&q->mu);
	*events = q->events;
	*batches = q->batches;
	pthread_mutex_unlock(&q->mu);
}

void auditq_counts(struct auditq *q, struct auditq_counts *out)
{
	pthread_mutex_lock(&q->mu);
	out->allowed = q->allowed;
	out->refused = q->refused;
	out->depth = q->n;
	pthread_mutex_unlock(&q->mu);
}

void auditq_stop(struct auditq *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = true;
	pthread_cond_broadcast(&q->not_empty);
	pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->done);
	pthread_cond_destroy(&q->not_full);
	pthread_cond_destroy(&q->not_empty);
	pthread_mutex_destroy(&q->mu);
	refusals_free(q->refusals);
	free(q->ring);
	free(q);
}
