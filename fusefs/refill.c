/*
 * refill.c - one thread that keeps the key pools full.
 *
 * Generating an RSA key is seconds of one CPU, and nothing is waiting for
 * it: the thread runs at nice 19 (its own, not the process's), so FUSE
 * requests, the watcher and the renewal workers always come first.  Not
 * SCHED_IDLE: a thread that never runs while the CPUs are busy could hold
 * the random generator's lock (taken briefly per draw) for as long as they
 * stay busy, and a renewal would wait behind it.
 *
 * Every REFILL_POLL_MS it looks at each pool (a cheap read) and fills what
 * is short, one key at a time.  The store is touched only under `mu`, and
 * never once stop is set: a stop during a key generation does not wait for
 * it, and the thread, when it comes back, drops the key and leaves.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/pool.h"
#include "cmkcert/util.h"
#include "keeper.h"
#include "refill.h"

#define REFILL_POLL_MS 5000
#define REFILL_NICE 19
#define STOP_POLL_MS 10

struct refill {
	struct cmk_ctx *ctx;
	struct cmk_pool_spec *specs;
	size_t n_specs;
	pthread_t thread;
	pthread_mutex_t mu;           /* held while the thread uses the store; guards stop */
	pthread_cond_t wake;          /* CLOCK_MONOTONIC */
	bool stop;
};

/* Lower this thread alone: on Linux a thread's nice value is its own (setpriority on its tid). */
static void lower_priority(void)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);

	if (setpriority(PRIO_PROCESS, (id_t)tid, REFILL_NICE) != 0)
		cmk_log(CMK_LOG_INFO, "key pool refill: cannot lower its priority (%s)", strerror(errno));
}

/* Fill one pool a key at a time; false when stopping. */
static bool fill(struct refill *r, const struct cmk_pool_spec *spec)
{
	for (;;) {
		struct cmk_pool_counts c;
		struct cmk_key *key = NULL;
		bool added;
		int rc;

		pthread_mutex_lock(&r->mu);
		if (r->stop) {
			pthread_mutex_unlock(&r->mu);
			return false;
		}
		rc = cmk_store_pool_counts(r->ctx->store, NULL, spec->name, &c);
		pthread_mutex_unlock(&r->mu);
		if (rc != 0) {
			cmk_log(CMK_LOG_WARN, "key pool %s: %s", spec->name, cmk_errdetail());
			return true;
		}
		if (c.free + c.claimed >= spec->target)
			return true;
		/* The slow part, with nothing held. */
		if ((rc = cmk_key_generate(spec->type, spec->bits, &key)) != 0) {
			cmk_log(CMK_LOG_WARN, "key pool %s: %s", spec->name, cmk_errdetail());
			return true;
		}
		pthread_mutex_lock(&r->mu);
		if (!r->stop)
			rc = cmk_pool_put(r->ctx->store, r->ctx->sealer, spec->name, key);
		added = !r->stop && rc == 0;
		pthread_mutex_unlock(&r->mu);
		cmk_key_free(key);
		if (rc != 0) {
			cmk_log(CMK_LOG_WARN, "key pool %s: %s", spec->name, cmk_errdetail());
			return true;
		}
		if (!added)
			return false;
	}
}

static void *run(void *arg)
{
	struct refill *r = arg;

	lower_priority();
	for (;;) {
		unsigned reaped = 0;
		struct timespec ts;

		pthread_mutex_lock(&r->mu);
		if (!r->stop && cmk_store_pool_reap(r->ctx->store, &reaped) != 0)
			cmk_log(CMK_LOG_WARN, "key pool: %s", cmk_errdetail());
		pthread_mutex_unlock(&r->mu);
		for (size_t i = 0; i < r->n_specs; i++)
			if (!fill(r, &r->specs[i]))
				goto out;
		pthread_mutex_lock(&r->mu);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += REFILL_POLL_MS / 1000;
		ts.tv_nsec += (long)(REFILL_POLL_MS % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!r->stop && pthread_cond_timedwait(&r->wake, &r->mu, &ts) != ETIMEDOUT)
			;
		if (r->stop) {
			pthread_mutex_unlock(&r->mu);
			break;
		}
		pthread_mutex_unlock(&r->mu);
	}
out:
	return NULL;
}

int refill_start(struct cmk_ctx *ctx, struct refill **out)
{
	struct refill *r;
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = cmk_pool_specs(ctx->cfg, &r->specs, &r->n_specs)) != 0 || r->n_specs == 0) {
		free(r->specs);
		free(r);
		return rc;
	}
	r->ctx = ctx;
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->wake, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pthread_create(&r->thread, NULL, run, r)) != 0) {
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->mu);
		free(r->specs);
		free(r);
		return cmk_fail(CMK_ERR_INTERNAL, "key pool refill: pthread_create: %s", strerror(rc));
	}
	cmk_log(CMK_LOG_INFO, "key pool refill: %zu pool(s), at nice %d", r->n_specs, REFILL_NICE);
	*out = r;
	return 0;
}

bool refill_stop(struct refill *r, int64_t deadline_ms)
{
	bool locked = false;

	if (r == NULL)
		return true;
	/* Taking the lock means the thread is not in the store, and will not enter it again. */
	while (!(locked = pthread_mutex_trylock(&r->mu) == 0) && cmk_monotonic_ms() < deadline_ms)
		usleep(STOP_POLL_MS * 1000);
	if (!locked) {
		cmk_log(CMK_LOG_WARN, "key pool refill: stuck in the store; left behind");
		return false;
	}
	r->stop = true;
	pthread_cond_broadcast(&r->wake);
	pthread_mutex_unlock(&r->mu);
	/* Waiting for a key generation to end is not needed: it leaves without the store. */
	if (keeper_join_until(r->thread, cmk_monotonic_ms() + STOP_POLL_MS * 5)) {
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->mu);
		free(r->specs);
		free(r);
	} else {
		/* Its memory stays: the thread reads `stop` when its key is ready. */
		pthread_detach(r->thread);
	}
	return true;
}
