/*
 * watch.c - the watcher thread (see watch.h).
 *
 * One tick: read the change log's last sequence; if it moved, collect the
 * (tenant, type) pairs changed since the last tick, read each one's active
 * record (store reads happen here, never under the tree lock), then apply
 * all of them under one tree lock, so readers see the whole batch at once,
 * and hand the changes of names to the announcer, which makes them through
 * the mount for inotify watchers (announce.h).  A failed read leaves the position where it was and the
 * next tick tries again.  When the log cannot say what changed (it was
 * trimmed past our position, or its sequence went backwards because the
 * store was replaced), the whole tree is reloaded.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "announce.h"
#include "keeper.h"
#include "tree.h"
#include "version.h"
#include "sched.h"
#include "watch.h"

struct pair {
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	size_t order;                 /* position in the log or walk: later wins */
	struct fsver *v;              /* the active version read from the store, NULL = none */
};

struct batch {
	struct pair *v;
	size_t n, cap;
	bool everything;              /* the change log cannot tell: reload all */
	uint64_t last;                /* highest sequence seen */
	const struct cmk_config *cfg;
};

struct watcher {
	struct cmkfs *fs;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	atomic_bool abandoned;        /* replaced by another watcher: must not touch the tree again */
	uint64_t last;
	bool failing;                 /* the last tick failed (log once per streak) */
};

static void batch_clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		fsver_unref(b->v[i].v);
	free(b->v);
	memset(b, 0, sizeof(*b));
}

static int batch_add(struct batch *b, const char *tenant, const char *type)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct pair *v = realloc(b->v, cap * sizeof(*v));
		if (v == NULL)
			return CMK_ERR_NOMEM;
		b->v = v;
		b->cap = cap;
	}
	memset(&b->v[b->n], 0, sizeof(b->v[b->n]));
	snprintf(b->v[b->n].tenant, sizeof(b->v[b->n].tenant), "%s", tenant);
	snprintf(b->v[b->n].type, sizeof(b->v[b->n].type), "%s", type);
	b->v[b->n].order = b->n;
	b->n++;
	return 0;
}

static int pair_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c = strcmp(x->tenant, y->tenant);

	return c != 0 ? c : strcmp(x->type, y->type);
}

static int pair_order_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c = pair_cmp(a, b);

	return c != 0 ? c : x->order < y->order ? -1 : x->order > y->order;
}

/*
 * Sort by (tenant, type) and keep one entry per pair: the last one seen (a
 * busy pair appears many times in the log; a walk of the store may meet an
 * old and a new active record of a pair that changed during the walk).
 */
static void batch_unique(struct batch *b)
{
	size_t out = 0;

	if (b->n == 0)
		return;
	qsort(b->v, b->n, sizeof(*b->v), pair_order_cmp);
	for (size_t i = 1; i < b->n; i++) {
		if (pair_cmp(&b->v[out], &b->v[i]) != 0)
			out++;
		else
			fsver_unref(b->v[out].v);
		b->v[out] = b->v[i];
	}
	b->n = out + 1;
}

static int on_change(const struct cmk_change *ch, void *arg)
{
	struct batch *b = arg;

	if (ch->seq > b->last)
		b->last = ch->seq;
	if (ch->tenant[0] == '\0' || ch->type[0] == '\0') {
		b->everything = true;
		return 0;
	}
	return b->everything ? 0 : batch_add(b, ch->tenant, ch->type);
}

static int on_active(const struct cmk_cert_record *rec, void *arg)
{
	struct batch *b = arg;
	struct fsver *v;
	int rc;

	if ((rc = fsver_new(rec, b->cfg, &v)) != 0) {
		if (rc == CMK_ERR_NOMEM)
			return rc;
		cmk_log(CMK_LOG_WARN, "watch: skipping %s-%s: %s", rec->tenant, rec->type, cmk_errdetail());
		return 0;
	}
	if ((rc = batch_add(b, rec->tenant, rec->type)) != 0) {
		fsver_unref(v);
		return rc;
	}
	b->v[b->n - 1].v = v;
	return 0;
}

/* Read the active record of every pair in the batch. */
static int read_pairs(struct cmkfs *fs, struct batch *b)
{
	struct cmk_cert_record rec;
	int rc;

	for (size_t i = 0; i < b->n; i++) {
		struct pair *p = &b->v[i];
		rc = cmk_store_cert_find(fs->ctx->store, NULL, p->tenant, p->type, CMK_ST_ACTIVE, &rec);
		if (rc == CMK_ERR_NOTFOUND)
			continue;
		if (rc != 0)
			return rc;
		rc = fsver_new(&rec, fs->ctx->cfg, &p->v);
		if (rc == CMK_ERR_INVALID) {
			cmk_log(CMK_LOG_WARN, "watch: %s-%s: %s", p->tenant, p->type, cmk_errdetail());
			rc = 0;
		}
		cmk_cert_record_clear(&rec);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* While reloading everything: collect the pairs shown that the store no longer has. */
struct scan {
	const struct batch *keep;     /* sorted and unique */
	struct batch *gone;
};

static int find_missing(const char *tenant, const char *type, void *arg)
{
	struct scan *s = arg;
	struct pair key;

	snprintf(key.tenant, sizeof(key.tenant), "%s", tenant);
	snprintf(key.type, sizeof(key.type), "%s", type);
	if (bsearch(&key, s->keep->v, s->keep->n, sizeof(*s->keep->v), pair_cmp) != NULL)
		return 0;
	return batch_add(s->gone, tenant, type);
}

static void log_pair(const struct pair *p)
{
	if (p->v != NULL)
		cmk_log(CMK_LOG_INFO, "%s-%s: serving serial %s (record %llu)", p->tenant, p->type, p->v->serial,
			(unsigned long long)p->v->record_id);
	else
		cmk_log(CMK_LOG_INFO, "%s-%s: no active certificate; files removed", p->tenant, p->type);
}

/*
 * Swap a sorted, unique batch into the tree in one locked section.  `full`:
 * pairs shown but not in the batch are removed.  Changed pairs are logged
 * when `verbose`.
 */
static int apply(struct cmkfs *fs, const atomic_bool *abandoned, struct batch *b, bool full, struct ann_list *ns,
		 bool verbose)
{
	struct batch gone = { 0 };
	struct scan scan = { b, &gone };
	bool *changed;
	int rc = 0;

	if ((changed = calloc(b->n + 1, sizeof(*changed))) == NULL)
		return CMK_ERR_NOMEM;
	tree_lock(fs->tree);
	/* A watcher that was replaced while it read may hold older versions than its successor shows. */
	if (abandoned != NULL && atomic_load(abandoned)) {
		tree_unlock(fs->tree);
		free(changed);
		return CMK_ERR_STATE;
	}
	/* Collected first and removed after the walk: the tree cannot change while it is walked. */
	if (full)
		rc = tree_each_slot(fs->tree, find_missing, &scan);
	for (size_t i = 0; rc >= 0 && i < gone.n; i++)
		rc = tree_put(fs->tree, gone.v[i].tenant, gone.v[i].type, NULL, ns);
	for (size_t i = 0; rc >= 0 && i < b->n; i++) {
		struct fsver *v = b->v[i].v;
		/* tree_put takes the reference; keep one for the log line. */
		rc = tree_put(fs->tree, b->v[i].tenant, b->v[i].type, v ? fsver_ref(v) : NULL, ns);
		changed[i] = rc == 1;
	}
	if (rc >= 0)
		rc = tree_settle(fs->tree, ns);
	tree_unlock(fs->tree);
	for (size_t i = 0; verbose && i < b->n; i++)
		if (changed[i])
			log_pair(&b->v[i]);
	for (size_t i = 0; verbose && i < gone.n; i++)
		log_pair(&gone.v[i]);
	free(changed);
	batch_clear(&gone);
	return rc < 0 ? rc : 0;
}

/* Reload every active record. */
static int load_all(struct cmkfs *fs, const atomic_bool *abandoned, struct ann_list *ns, bool verbose)
{
	struct cmk_cert_filter f = { NULL, NULL, CMK_ST_ACTIVE };
	struct batch b = { .cfg = fs->ctx->cfg };
	int rc;

	rc = cmk_store_cert_each(fs->ctx->store, NULL, &f, on_active, &b);
	if (rc == 0) {
		batch_unique(&b);
		rc = apply(fs, abandoned, &b, true, ns, verbose);
	}
	batch_clear(&b);
	return rc;
}

/* Stops the walk at the first (earliest) record. */
static int on_first_due(const struct cmk_cert_record *rec, void *arg)
{
	struct next_due *d = arg;

	d->at = rec->renew_at;
	snprintf(d->tenant, sizeof(d->tenant), "%s", rec->tenant);
	snprintf(d->type, sizeof(d->type), "%s", rec->type);
	return 1;
}

/*
 * Note the earliest renewal due, for the service's STATUS= (service.h).  The
 * by_renew index holds active records only, earliest first, so this reads
 * one chunk of it.  A failed read keeps what was noted before.
 */
static void note_next_due(struct cmkfs *fs, const atomic_bool *abandoned)
{
	struct next_due d = { 0 };
	int rc;

	rc = cmk_store_cert_due(fs->ctx->store, NULL, INT64_MAX, on_first_due, &d);
	if (rc < 0 || (abandoned != NULL && atomic_load(abandoned)))
		return;
	pthread_mutex_lock(&fs->synced_mu);
	fs->next_due = d;
	pthread_mutex_unlock(&fs->synced_mu);
}

int watch_load(struct cmkfs *fs, uint64_t *seq)
{
	struct ann_list anns = { 0 };
	int rc;

	if ((rc = cmk_store_change_last(fs->ctx->store, seq)) == 0 && (rc = load_all(fs, NULL, &anns, false)) == 0) {
		/* Nothing is mounted yet: every name is simply there from the first lookup on. */
		struct notes none = { 0 };
		tree_lock(fs->tree);
		for (size_t i = 0; i < anns.n; i++)
			tree_ann_force(fs->tree, &anns.v[i], &none);
		tree_ann_release(fs->tree, &anns);
		tree_unlock(fs->tree);
		notes_clear(&none);
		watch_synced(fs);
		note_next_due(fs, NULL);
	}
	ann_list_clear(&anns);
	return rc;
}

static void set_synced(struct cmkfs *fs, int64_t at)
{
	pthread_mutex_lock(&fs->synced_mu);
	atomic_store(&fs->synced_ms, at);
	pthread_cond_broadcast(&fs->synced_cv);
	pthread_mutex_unlock(&fs->synced_mu);
}

void watch_synced(struct cmkfs *fs)
{
	set_synced(fs, cmk_monotonic_ms());
}

bool watch_is_current(struct cmkfs *fs)
{
	return cmk_monotonic_ms() - atomic_load(&fs->synced_ms) <= WATCH_STALE_MS;
}

bool watch_wait_current(struct cmkfs *fs, int64_t max_ms)
{
	int64_t deadline = cmk_monotonic_ms() + max_ms;
	bool current;

	pthread_mutex_lock(&fs->synced_mu);
	while (!(current = watch_is_current(fs)) && cmk_monotonic_ms() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&fs->synced_cv, &fs->synced_mu, &ts);
	}
	pthread_mutex_unlock(&fs->synced_mu);
	return current;
}

/* One tick; returns 0 or the error that kept the position where it was. */
static int tick(struct watcher *w, struct ann_list *ns)
{
	struct cmkfs *fs = w->fs;
	struct batch b = { .cfg = fs->ctx->cfg };
	int64_t started = cmk_monotonic_ms();
	uint64_t seq;
	int rc;

	if ((rc = cmk_store_change_last(fs->ctx->store, &seq)) != 0)
		return rc;
	if (seq == w->last)
		goto synced;
	if (seq < w->last) {
		if (w->last != UINT64_MAX)
			cmk_log(CMK_LOG_WARN, "watch: change log went back from %llu to %llu; reloading everything",
				(unsigned long long)w->last, (unsigned long long)seq);
		if ((rc = load_all(fs, &w->abandoned, ns, true)) != 0)
			return rc;
		w->last = seq;
		note_next_due(fs, &w->abandoned);
		goto synced;
	}
	b.last = w->last;
	rc = cmk_store_changes_since(fs->ctx->store, w->last, on_change, &b);
	if (rc == 0 && b.everything) {
		cmk_log(CMK_LOG_WARN, "watch: fell behind the change log; reloading everything");
		rc = load_all(fs, &w->abandoned, ns, true);
	} else if (rc == 0) {
		batch_unique(&b);
		if ((rc = read_pairs(fs, &b)) == 0)
			rc = apply(fs, &w->abandoned, &b, false, ns, true);
	}
	if (rc == 0)
		w->last = b.last > w->last ? b.last : seq;
	batch_clear(&b);
	if (rc != 0)
		return rc;
	/* Something changed: a renewal may have been scheduled, done or put off. */
	note_next_due(fs, &w->abandoned);
synced:
	/* The tree showed the store as it was when this tick began. */
	if (!atomic_load(&w->abandoned))
		set_synced(fs, started);
	return 0;
}

static void *run(void *arg)
{
	struct watcher *w = arg;
	struct ann_list ns = { 0 };
	struct timespec ts;
	int rc;

	for (;;) {
		pthread_mutex_lock(&w->mu);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += WATCH_INTERVAL_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&w->mu);
		if (w->stop || atomic_load(&w->abandoned))
			break;
		rc = tick(w, &ns);
		if (atomic_load(&w->abandoned))
			break;
		/* Alive, whatever the tick's outcome: the service's watchdog pings only while this moves. */
		atomic_store(&w->fs->watch_beat_ms, cmk_monotonic_ms());
		if (rc != 0 && !w->failing)
			cmk_log(CMK_LOG_WARN, "watch: cannot read changes (will retry): %s", cmk_errdetail());
		else if (rc == 0 && w->failing)
			cmk_log(CMK_LOG_INFO, "watch: reading changes again");
		w->failing = rc != 0;
		/* Changes of a failed tick were made to the tree already: announce them too. */
		if (ns.n > 0 || w->last != announcer_served(w->fs->announcer))
			announcer_submit(w->fs->announcer, &ns, w->last);
	}
	if (ns.n > 0) {
		/* Left by a tick that was abandoned after it changed the tree: show them without the kernel. */
		struct notes none = { 0 };
		tree_lock(w->fs->tree);
		for (size_t i = 0; i < ns.n; i++)
			tree_ann_force(w->fs->tree, &ns.v[i], &none);
		tree_ann_release(w->fs->tree, &ns);
		tree_unlock(w->fs->tree);
		notes_clear(&none);
	}
	ann_list_clear(&ns);
	return NULL;
}

int watcher_start(struct cmkfs *fs, uint64_t seq, struct watcher **out)
{
	struct watcher *w;
	pthread_condattr_t ca;

	*out = NULL;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return CMK_ERR_NOMEM;
	w->fs = fs;
	w->last = seq;
	atomic_store(&fs->watch_beat_ms, cmk_monotonic_ms());
	atomic_init(&w->abandoned, false);
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&w->thread, NULL, run, w) != 0) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mu);
		free(w);
		return cmk_fail(CMK_ERR_INTERNAL, "watch: cannot start the watcher thread");
	}
	*out = w;
	return 0;
}

static void ask_to_stop(struct watcher *w)
{
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void watcher_abandon(struct watcher *w)
{
	if (w == NULL)
		return;
	/* Its memory stays: the thread may still be inside the store, and reads w when it returns. */
	atomic_store(&w->abandoned, true);
	ask_to_stop(w);
	pthread_detach(w->thread);
}

bool watcher_stop(struct watcher *w, int64_t deadline_ms)
{
	if (w == NULL)
		return true;
	ask_to_stop(w);
	if (!keeper_join_until(w->thread, deadline_ms)) {
		watcher_abandon(w);
		return false;
	}
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
	return true;
}
