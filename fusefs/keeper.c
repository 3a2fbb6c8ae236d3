/*
 * keeper.c - starting, replacing and stopping the watcher and the scheduler
 * (see keeper.h).
 */
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <stdint.h>
#include <time.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "keeper.h"
#include "sched.h"
#include "watch.h"

bool keeper_join_until(pthread_t t, int64_t deadline_ms)
{
	int64_t left = deadline_ms - cmk_monotonic_ms();
	struct timespec ts;

	/* pthread_timedjoin_np() measures against CLOCK_REALTIME. */
	clock_gettime(CLOCK_REALTIME, &ts);
	if (left < 0)
		left = 0;
	ts.tv_sec += left / 1000;
	ts.tv_nsec += (left % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

/* Start a watcher and a scheduler.  Called with fs->keeper_mu held (or before any other thread runs). */
static int start_locked(struct cmkfs *fs, uint64_t seq)
{
	int rc;

	if (fs->run_scheduler && (rc = sched_start(fs->ctx, &fs->sched)) != 0)
		return rc;
	return watcher_start(fs, seq, &fs->watcher);
}

/*
 * The store found a thread of ours waiting inside a recovered environment
 * (store monitor thread).  When the store handle itself is stuck (an open
 * that never returns), nothing in this process can use the store again:
 * unmount and exit, and let the service manager start a new daemon.
 */
static void on_wedged(const char *path, bool whole_store, void *arg)
{
	struct cmkfs *fs = arg;

	if (whole_store) {
		cmk_log(CMK_LOG_ERROR, "store %s cannot be used by this process any more; exiting to be restarted",
			path);
		if (fs->se != NULL)
			fuse_session_unmount(fs->se);
		_exit(1);
	}
	pthread_mutex_lock(&fs->keeper_mu);
	if (!fs->stopping) {
		cmk_log(CMK_LOG_ERROR, "store %s: a worker thread is stuck where a dead process left the store; "
			"starting new watcher and scheduler threads", path);
		watcher_abandon(fs->watcher);
		sched_abandon(fs->sched);
		fs->watcher = NULL;
		fs->sched = NULL;
		fs->abandoned_threads = true;
		/* From a full reload: the old watcher may have stopped anywhere. */
		if (start_locked(fs, UINT64_MAX) != 0)
			cmk_log(CMK_LOG_ERROR, "restarting the watcher and scheduler: %s", cmk_errdetail());
	}
	pthread_mutex_unlock(&fs->keeper_mu);
}

int keeper_start(struct cmkfs *fs, uint64_t seq)
{
	int rc;

	pthread_mutex_lock(&fs->keeper_mu);
	rc = start_locked(fs, seq);
	pthread_mutex_unlock(&fs->keeper_mu);
	if (rc == 0)
		cmk_store_on_wedged(fs->ctx->store, on_wedged, fs);
	return rc;
}

bool keeper_stop(struct cmkfs *fs, int64_t deadline_ms)
{
	bool clean;

	pthread_mutex_lock(&fs->keeper_mu);
	fs->stopping = true;
	pthread_mutex_unlock(&fs->keeper_mu);
	/* No replacement can start now: on_wedged() sees `stopping`. */
	cmk_store_on_wedged(fs->ctx->store, NULL, NULL);
	clean = watcher_stop(fs->watcher, deadline_ms);
	clean = sched_stop(fs->sched, deadline_ms) && clean;
	fs->watcher = NULL;
	fs->sched = NULL;
	if (!clean)
		fs->abandoned_threads = true;
	return clean && !fs->abandoned_threads;
}
