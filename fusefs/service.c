/*
 * service.c - the service thread: READY=1, STATUS=, WATCHDOG=1 (see service.h).
 *
 * One loop, once a second or every half watchdog interval if that is
 * shorter.  Each turn asks the kernel for a statfs of the mount point: FUSE
 * passes it to this daemon's session (it is never answered from a cache),
 * so an answer proves the session loop serves requests.  The first answer
 * after the announcer has set itself up (it too needs the session) makes
 * the service ready.  A watchdog ping also needs the watcher to have
 * finished a tick within the last half interval: it polls the store every
 * 150 ms, so a watcher that stops moving is stuck (and one keeper.c could
 * not replace).  The statfs blocks while the session does not answer;
 * that is the point, and service_stop() is called after the unmount, which
 * makes any statfs in flight return.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "announce.h"
#include "notify_sd.h"
#include "service.h"
#include "tree.h"
#include "watch.h"

#define FUSE_SUPER_MAGIC 0x65735546
#define TURN_MS 1000
#define STATUS_MAX 512

struct service {
	struct cmkfs *fs;
	struct sd_notifier sock;
	uint64_t watchdog_usec;       /* 0: no watchdog */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;            /* CLOCK_MONOTONIC */
	bool stop;
	bool send_failed;             /* logged once */
};

static int count_slot(const char *tenant, const char *type, void *arg)
{
	(void)tenant;
	(void)type;
	(*(size_t *)arg)++;
	return 0;
}

void service_status(struct cmkfs *fs, char *buf, size_t size)
{
	struct next_due due;
	size_t n = 0, len;
	char when[64];

	tree_lock(fs->tree);
	tree_each_slot(fs->tree, count_slot, &n);
	tree_unlock(fs->tree);
	pthread_mutex_lock(&fs->synced_mu);
	due = fs->next_due;
	pthread_mutex_unlock(&fs->synced_mu);

	snprintf(buf, size, "serving %zu certificate%s at %s", n, n == 1 ? "" : "s", fs->mountpoint);
	len = strlen(buf);
	if (due.at > 0) {
		cmk_format_time(due.at, when, sizeof(when));
		snprintf(buf + len, size - len, "; %s %s (%s-%s)", due.at <= cmk_now() ? "renewal due since" :
			 "next renewal", when, due.tenant, due.type);
	} else {
		snprintf(buf + len, size - len, "; no renewal scheduled");
	}
	len = strlen(buf);
	if (!fs->run_scheduler && len < size)
		snprintf(buf + len, size - len, "; renewals run elsewhere (-n)");
	len = strlen(buf);
	if (!watch_is_current(fs) && len < size)
		snprintf(buf + len, size - len, "; the store is not being read, key files fail closed");
}

static void send_msg(struct service *s, const char *msg)
{
	if (notify_sd_send(&s->sock, msg) == 0) {
		s->send_failed = false;
	} else if (!s->send_failed) {
		s->send_failed = true;
		cmk_log(CMK_LOG_WARN, "service: %s", cmk_errdetail());
	}
}

/* True when this daemon's FUSE session answered a statfs of the mount point. */
static bool session_answers(const struct cmkfs *fs)
{
	struct statfs st;
	int rc;

	do
		rc = statfs(fs->mountpoint, &st);
	while (rc != 0 && errno == EINTR);
	return rc == 0 && st.f_type == FUSE_SUPER_MAGIC;
}

/* Wait until `deadline_ms` (monotonic) or stop; false when stopping. */
static bool wait_turn(struct service *s, int64_t deadline_ms)
{
	bool go_on;

	pthread_mutex_lock(&s->mu);
	while (!s->stop && cmk_monotonic_ms() < deadline_ms) {
		int64_t left = deadline_ms - cmk_monotonic_ms();
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	go_on = !s->stop;
	pthread_mutex_unlock(&s->mu);
	return go_on;
}

static void *run(void *arg)
{
	struct service *s = arg;
	struct cmkfs *fs = s->fs;
	int64_t turn_ms = TURN_MS, next = cmk_monotonic_ms();
	char status[STATUS_MAX], sent[STATUS_MAX] = "", msg[STATUS_MAX + 32];
	bool ready = false;

	if (s->watchdog_usec > 0 && (int64_t)(s->watchdog_usec / 2000) < turn_ms)
		turn_ms = (int64_t)(s->watchdog_usec / 2000) > 0 ? (int64_t)(s->watchdog_usec / 2000) : 1;
	/* The first turn at once: READY=1 as soon as the session answers. */
	while (wait_turn(s, next)) {
		bool answers = session_answers(fs);
		int64_t now = cmk_monotonic_ms();

		next = now + turn_ms;
		if (!answers)
			continue;
		service_status(fs, status, sizeof(status));
		if (!ready && !announcer_is_set_up(fs->announcer)) {
			/* Answering, but the announcer is still looking at the mount: soon. */
			next = now + 10;
			continue;
		}
		if (!ready) {
			snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
			send_msg(s, msg);
			ready = true;
			memcpy(sent, status, sizeof(sent));
			cmk_log(CMK_LOG_DEBUG, "service: ready");
		} else if (strcmp(status, sent) != 0) {
			snprintf(msg, sizeof(msg), "STATUS=%s", status);
			send_msg(s, msg);
			memcpy(sent, status, sizeof(sent));
		}
		if (s->watchdog_usec > 0 && now - atomic_load(&fs->watch_beat_ms) <= (int64_t)(s->watchdog_usec / 2000))
			send_msg(s, "WATCHDOG=1");
	}
	return NULL;
}

int service_start(struct cmkfs *fs, struct service **out)
{
	struct service *s;
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = notify_sd_open(getenv("NOTIFY_SOCKET"), &s->sock)) <= 0) {
		free(s);
		return rc;
	}
	s->fs = fs;
	s->watchdog_usec = notify_sd_watchdog_usec(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid());
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&s->thread, NULL, run, s) != 0) {
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
		notify_sd_close(&s->sock);
		free(s);
		return cmk_fail(CMK_ERR_INTERNAL, "service: cannot start the notification thread");
	}
	if (s->watchdog_usec > 0)
		cmk_log(CMK_LOG_INFO, "service: watchdog every %llu ms", (unsigned long long)(s->watchdog_usec / 1000));
	*out = s;
	return 0;
}

void service_stopping(struct service *s)
{
	if (s == NULL)
		return;
	/* From the main thread: send directly (send_msg() belongs to the service thread). */
	(void)notify_sd_send(&s->sock, "STOPPING=1\nSTATUS=stopping");
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

void service_stop(struct service *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	notify_sd_close(&s->sock);
	free(s);
}
