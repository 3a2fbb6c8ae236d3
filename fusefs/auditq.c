/*
 * auditq.c - the key-read audit queue and its writer thread (see auditq.h).
 *
 * Events stay in the ring until the trail has them: the writer copies a
 * batch out, appends it without holding the lock, and only then frees the
 * slots, so a failed append is retried with the same events in the same
 * order.
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
#include "auditq.h"

#define BATCH 64
#define RETRY_MS 1000
#define STOP_RETRIES 5            /* at shutdown, give a failing trail this many more tries */

struct auditq {
	pthread_mutex_t mu;
	pthread_cond_t not_empty;     /* also signalled to stop */
	pthread_cond_t not_full;
	struct keyread_event *ring;
	size_t cap, head, n;
	bool stopping;
	bool failing;                 /* the last append failed: refuse new key reads */
	struct cmk_audit *audit;
	char actor[64];
	pthread_t thread;
};

/* Append events in order with one fsync; returns how many reached the trail (all or none). */
static size_t write_events(struct auditq *q, const struct keyread_event *evs, size_t n)
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
		batch[i] = ev;
	}
	if (cmk_audit_append_batch(q->audit, batch, n) != 0) {
		cmk_log(CMK_LOG_ERROR, "audit: privateKeyRead: %s", cmk_errdetail());
		return 0;
	}
	return n;
}

static void wait_ms(struct auditq *q, long ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&q->not_empty, &q->mu, &ts);
}

static void *writer(void *arg)
{
	struct auditq *q = arg;
	struct keyread_event batch[BATCH];
	int stop_tries = 0;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		size_t take, done;

		while (q->n == 0 && !q->stopping)
			pthread_cond_wait(&q->not_empty, &q->mu);
		if (q->n == 0)
			break;
		take = q->n < BATCH ? q->n : BATCH;
		for (size_t i = 0; i < take; i++)
			batch[i] = q->ring[(q->head + i) % q->cap];
		pthread_mutex_unlock(&q->mu);
		done = write_events(q, batch, take);
		pthread_mutex_lock(&q->mu);
		q->head = (q->head + done) % q->cap;
		q->n -= done;
		if (done > 0)
			pthread_cond_broadcast(&q->not_full);
		if (done == take) {
			if (q->failing)
				cmk_log(CMK_LOG_INFO, "audit: trail writable again; key reads resume");
			q->failing = false;
			continue;
		}
		if (!q->failing)
			cmk_log(CMK_LOG_ERROR, "audit: cannot write the trail; refusing key reads until it can "
				"be written (%zu events waiting)", q->n);
		q->failing = true;
		/* Wake waiting open()s so they fail instead of waiting for room. */
		pthread_cond_broadcast(&q->not_full);
		if (q->stopping && ++stop_tries > STOP_RETRIES) {
			cmk_log(CMK_LOG_ERROR, "audit: giving up at shutdown: %zu privateKeyRead events were "
				"not written", q->n);
			q->n = 0;
			break;
		}
		wait_ms(q, RETRY_MS);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int auditq_start(struct cmk_audit *a, const char *actor, size_t cap, struct auditq **out)
{
	struct auditq *q;

	*out = NULL;
	if (cap == 0 || (q = calloc(1, sizeof(*q))) == NULL)
		return CMK_ERR_NOMEM;
	if ((q->ring = calloc(cap, sizeof(*q->ring))) == NULL) {
		free(q);
		return CMK_ERR_NOMEM;
	}
	q->cap = cap;
	q->audit = a;
	snprintf(q->actor, sizeof(q->actor), "%s", actor);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->not_empty, NULL);
	pthread_cond_init(&q->not_full, NULL);
	if (pthread_create(&q->thread, NULL, writer, q) != 0) {
		pthread_cond_destroy(&q->not_full);
		pthread_cond_destroy(&q->not_empty);
		pthread_mutex_destroy(&q->mu);
		free(q->ring);
		free(q);
		return cmk_fail(CMK_ERR_INTERNAL, "audit: cannot start the writer thread");
	}
	*out = q;
	return 0;
}

int auditq_push(struct auditq *q, const struct keyread_event *ev)
{
	int rc = 0;

	pthread_mutex_lock(&q->mu);
	while (q->n == q->cap && !q->stopping && !q->failing)
		pthread_cond_wait(&q->not_full, &q->mu);
	if (q->stopping || q->failing) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit trail cannot be written");
	} else {
		q->ring[(q->head + q->n) % q->cap] = *ev;
		/* The writer only sleeps on an empty queue: wake it once per batch, not per event. */
		if (q->n++ == 0)
			pthread_cond_signal(&q->not_empty);
	}
	pthread_mutex_unlock(&q->mu);
	return rc;
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
	pthread_cond_destroy(&q->not_full);
	pthread_cond_destroy(&q->not_empty);
	pthread_mutex_destroy(&q->mu);
	free(q->ring);
	free(q);
}
