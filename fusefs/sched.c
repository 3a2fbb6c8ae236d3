/*
 * sched.c - the renewal scheduler: one thread that wakes every check
 * interval, and a fixed set of worker contexts that run the due operations
 * of a pass in parallel.
 *
 * Backoff after failures lives in the records (renew_at is moved into the
 * future by the lifecycle), so the scheduler only asks "what is due now";
 * the global rate limit is a token bucket of max_ops_per_minute; the
 * one-operation-per-(tenant, type) rule is the lifecycle's lock.  Nothing
 * here runs inside a FUSE handler.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "keeper.h"
#include "metrics.h"
#include "sched.h"

#define MAX_WORKERS 64

struct sched {
	struct cmk_ctx *ctx;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;

	/* Worker contexts live as long as the scheduler: each keeps its OpenBao login. */
	struct cmk_ctx *workers[MAX_WORKERS];
	int n_workers;

	/* Token bucket: max_ops_per_minute tokens, refilled continuously. */
	double tokens;
	int64_t refilled_ms;

	/* The current pass. */
	uint64_t *ids;
	size_t n_ids, next;
	int64_t now;
	struct cmk_pass_stats stats;
};

/* Wait on the condition until `deadline_ms` (monotonic) or stop; false when stopping. */
static bool sleep_until(struct sched *s, int64_t deadline_ms)
{
	while (!s->stop) {
		int64_t now = cmk_monotonic_ms();
		struct timespec ts;

		if (now >= deadline_ms)
			return true;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (deadline_ms - now) / 1000;
		ts.tv_nsec += ((deadline_ms - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&s->wake, &s->lock, &ts);
	}
	return false;
}

/* Take one operation token, waiting for the bucket to refill; false when stopping.  Called locked. */
static bool take_token(struct sched *s)
{
	double per_ms = s->ctx->cfg->renewal.max_ops_per_minute / 60000.0;
	double cap = s->ctx->cfg->renewal.max_ops_per_minute;

	for (;;) {
		int64_t now = cmk_monotonic_ms();

		s->tokens += (double)(now - s->refilled_ms) * per_ms;
		if (s->tokens > cap)
			s->tokens = cap;
		s->refilled_ms = now;
		if (s->tokens >= 1.0) {
			s->tokens -= 1.0;
			return true;
		}
		if (!sleep_until(s, now + (int64_t)((1.0 - s->tokens) / per_ms) + 1))
			return false;
	}
}

struct worker_arg {
	struct sched *s;
	struct cmk_ctx *ctx;
	struct cmk_pass_stats stats;
};

static void *worker(void *p)
{
	struct worker_arg *w = p;
	struct sched *s = w->s;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && s->next < s->n_ids && take_token(s)) {
		uint64_t id = s->ids[s->next++];
		int64_t now = s->now;

		pthread_mutex_unlock(&s->lock);
		cmk_run_one(w->ctx, id, now, &w->stats);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void add_stats(struct cmk_pass_stats *to, const struct cmk_pass_stats *from)
{
	to->renewed += from->renewed;
	to->failed += from->failed;
	to->busy += from->busy;
	to->expired += from->expired;
	to->cleaned += from->cleaned;
}

/* One pass: what is due now, over the workers. */
static void run_pass(struct sched *s)
{
	struct worker_arg args[MAX_WORKERS];
	pthread_t threads[MAX_WORKERS];
	int started = 0, n;
	uint64_t *ids = NULL;
	size_t n_ids = 0;
	int64_t now = cmk_now();
	unsigned recovered = 0;

	/* Operations a crashed process left behind, and revocations that waited for OpenBao. */
	if (cmk_recover(s->ctx, &recovered) == 0 && recovered > 0)
		cmk_log(CMK_LOG_INFO, "scheduler: %u interrupted operation(s) recovered", recovered);
	if (cmk_due_ids(s->ctx, now, 0, &ids, &n_ids) != 0) {
		cmk_log(CMK_LOG_ERROR, "scheduler: reading what is due: %s", cmk_errdetail());
		return;
	}
	memset(&s->stats, 0, sizeof(s->stats));
	if (n_ids > 0) {
		pthread_mutex_lock(&s->lock);
		s->ids = ids;
		s->n_ids = n_ids;
		s->next = 0;
		s->now = now;
		pthread_mutex_unlock(&s->lock);
		n = s->n_workers < (int)n_ids ? s->n_workers : (int)n_ids;
		for (int i = 0; i < n; i++) {
			args[i] = (struct worker_arg){ s, s->workers[i], { 0 } };
			if (pthread_create(&threads[i], NULL, worker, &args[i]) != 0)
				break;
			started++;
		}
		if (started == 0) {
			/* No thread could be made: do the pass here rather than not at all. */
			args[0] = (struct worker_arg){ s, s->workers[0], { 0 } };
			worker(&args[0]);
			add_stats(&s->stats, &args[0].stats);
		}
		for (int i = 0; i < started; i++) {
			pthread_join(threads[i], NULL);
			add_stats(&s->stats, &args[i].stats);
		}
		pthread_mutex_lock(&s->lock);
		s->ids = NULL;
		s->n_ids = s->next = 0;
		pthread_mutex_unlock(&s->lock);
	}
	free(ids);
	cmk_cleanup_due(s->ctx, cmk_now(), &s->stats);
	metrics_pass(&s->stats);
	if (n_ids > 0 || s->stats.cleaned > 0)
		cmk_log(CMK_LOG_INFO, "scheduler: %zu due: renewed %u, failed %u, busy %u, expired %u; cleaned up %u",
			n_ids, s->stats.renewed, s->stats.failed, s->stats.busy, s->stats.expired, s->stats.cleaned);
}

static void *scheduler(void *p)
{
	struct sched *s = p;
	int64_t interval_ms = s->ctx->cfg->renewal.check_interval * 1000;

	for (;;) {
		run_pass(s);
		pthread_mutex_lock(&s->lock);
		if (!sleep_until(s, cmk_monotonic_ms() + interval_ms)) {
			pthread_mutex_unlock(&s->lock);
			return NULL;
		}
		pthread_mutex_unlock(&s->lock);
	}
}

static void free_sched(struct sched *s)
{
	for (int i = 0; i < s->n_workers; i++)
		cmk_ctx_free(s->workers[i]);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int sched_start(struct cmk_ctx *ctx, struct sched **out)
{
	struct sched *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;
	int rc;

	if (s == NULL)
		return CMK_ERR_NOMEM;
	s->ctx = ctx;
	s->tokens = ctx->cfg->renewal.max_ops_per_minute;
	s->refilled_ms = cmk_monotonic_ms();
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);
	s->n_workers = ctx->cfg->renewal.max_parallel;
	if (s->n_workers < 1)
		s->n_workers = 1;
	if (s->n_workers > MAX_WORKERS)
		s->n_workers = MAX_WORKERS;
	for (int i = 0; i < s->n_workers; i++) {
		if ((rc = cmk_ctx_thread(ctx, &s->workers[i])) != 0) {
			s->n_workers = i;
			free_sched(s);
			return rc;
		}
	}
	if ((rc = pthread_create(&s->thread, NULL, scheduler, s)) != 0) {
		free_sched(s);
		return cmk_fail(CMK_ERR_INTERNAL, "scheduler: pthread_create: %s", strerror(rc));
	}
	*out = s;
	return 0;
}

static void ask_to_stop(struct sched *s)
{
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

void sched_abandon(struct sched *s)
{
	if (s == NULL)
		return;
	/* Its memory stays: a worker may still be inside the store and come back to it. */
	ask_to_stop(s);
	pthread_detach(s->thread);
}

bool sched_stop(struct sched *s, int64_t deadline_ms)
{
	if (s == NULL)
		return true;
	ask_to_stop(s);
	if (!keeper_join_until(s->thread, deadline_ms)) {
		pthread_detach(s->thread);
		cmk_log(CMK_LOG_WARN, "scheduler: an operation did not finish in time; left behind (the next start "
			"recovers it)");
		return false;
	}
	free_sched(s);
	return true;
}
