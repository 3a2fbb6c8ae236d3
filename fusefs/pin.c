/*
 * pin.c - load groups: which version each open of a set serves (see pin.h).
 *
 * Each set (slot) keeps a short list of groups, one per process that opened
 * it lately; all groups are also on one list in order of last use, so
 * groups idle for PIN_GAP_MS are dropped from its front as opens go by and
 * an old version is not kept alive by a process that went away.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "pin.h"

#define GROUPS_MAX 65536        /* beyond this, serve the current version without a group */
#define ODD_MAX 8               /* threads with a bundle half-read that a group can tell apart */

struct pin_group {
	struct pin_group *next;             /* the set's list */
	struct pin_group **head;            /* ... and its head, to leave it */
	struct pin_group *lru_prev, *lru_next;
	pid_t tgid;
	struct fsver *ver;                  /* holds a reference */
	int64_t started_ms, last_ms;
	int64_t last_cert_ms;               /* the latest certificate open */
	unsigned outstanding;               /* certificates opened, not yet followed by a key */
	int64_t fresh_key_ms;               /* a key opened with no certificate waiting for it; 0: none */
	bool keyed;                         /* a key or bundle was opened */
	bool must_move;                     /* the store changed the set: move at the next open */
	unsigned bundles;                   /* bundle opens */
	int64_t last_bundle_ms;
	unsigned bundle_open;               /* bundle handles opened and not closed yet */
	bool bundle_overlap;                /* a bundle was opened while another was open: loads run at once
					       (kept for the life of the group) */
	bool odd_overflow;                  /* more threads than `odd` holds */
	unsigned n_odd;
	pid_t odd[ODD_MAX];                 /* threads that opened a bundle an odd number of times */
};

struct pins {
	struct pin_group *lru_first, *lru_last;
	size_t count;
};

int pins_new(struct pins **out)
{
	if ((*out = calloc(1, sizeof(**out))) == NULL)
		return CMK_ERR_NOMEM;
	return 0;
}

static void lru_unlink(struct pins *p, struct pin_group *g)
{
	if (g->lru_prev != NULL)
		g->lru_prev->lru_next = g->lru_next;
	else
		p->lru_first = g->lru_next;
	if (g->lru_next != NULL)
		g->lru_next->lru_prev = g->lru_prev;
	else
		p->lru_last = g->lru_prev;
	g->lru_prev = g->lru_next = NULL;
}

static void lru_append(struct pins *p, struct pin_group *g)
{
	g->lru_prev = p->lru_last;
	g->lru_next = NULL;
	if (p->lru_last != NULL)
		p->lru_last->lru_next = g;
	else
		p->lru_first = g;
	p->lru_last = g;
}

static void group_free(struct pins *p, struct pin_group *g)
{
	struct pin_group **pp;

	for (pp = g->head; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	}
	lru_unlink(p, g);
	fsver_unref(g->ver);
	free(g);
	p->count--;
}

void pins_free(struct pins *p)
{
	if (p == NULL)
		return;
	while (p->lru_first != NULL)
		group_free(p, p->lru_first);
	free(p);
}

void pins_drop(struct pins *p, struct pin_group **groups)
{
	while (*groups != NULL)
		group_free(p, *groups);
}

size_t pins_count(const struct pins *p)
{
	return p->count;
}

void pins_bundle_closed(struct pin_group *groups, pid_t tgid)
{
	for (struct pin_group *g = groups; g != NULL; g = g->next) {
		if (g->tgid == tgid) {
			if (g->bundle_open > 0)
				g->bundle_open--;
			return;
		}
	}
}

void pins_touched(struct pin_group *groups, const struct fsver *cur)
{
	for (struct pin_group *g = groups; g != NULL; g = g->next)
		if (g->ver != cur)
			g->must_move = true;
}

/* Drop the groups idle for PIN_GAP_MS (the list is in order of last use). */
static void expire(struct pins *p, int64_t now_ms)
{
	while (p->lru_first != NULL && now_ms - p->lru_first->last_ms > PIN_GAP_MS)
		group_free(p, p->lru_first);
}

static void move_to(struct pin_group *g, struct fsver *cur, int64_t now_ms)
{
	fsver_unref(g->ver);
	g->ver = fsver_ref(cur);
	g->started_ms = now_ms;
	g->outstanding = 0;
	g->fresh_key_ms = 0;
	g->keyed = false;
	g->must_move = false;
	g->bundles = 0;
	g->odd_overflow = false;
	g->n_odd = 0;
}

/* A certificate not followed by its key within PIN_LOAD_MS was not part of a load. */
static bool cert_waiting(const struct pin_group *g, int64_t now_ms)
{
	return g->outstanding > 0 && now_ms - g->last_cert_ms < PIN_LOAD_MS;
}

/* A key opened just before, with no certificate waiting: the first half of a key-first load. */
static bool key_waiting(const struct pin_group *g, int64_t now_ms)
{
	return g->fresh_key_ms != 0 && now_ms - g->fresh_key_ms < PIN_KEY_FIRST_MS;
}

/* Could this open be the second half of a load of the group's version? */
static bool between_loads(const struct pin_group *g, enum pin_role role, int64_t now_ms)
{
	if (role == PIN_FOLLOW)
		return false;
	if (role == PIN_CERT && !g->keyed && now_ms - g->started_ms >= PIN_CERTS_ONLY_MS)
		return true;            /* a reader of certificates only: there is no pair to break */
	if (cert_waiting(g, now_ms) || (role == PIN_CERT && key_waiting(g, now_ms)))
		return false;
	/*
	 * Bundles: loads one after the other (whatever threads they run on) are
	 * between two loads after an even number of opens.  Loads at once are
	 * told apart by thread, but a runtime that moves a task between threads
	 * (Go) makes that meaningless: then also wait for a pause.
	 */
	if (g->bundles % 2 != 0)
		return false;
	if (!g->bundle_overlap)
		return true;
	return g->n_odd == 0 && !g->odd_overflow && now_ms - g->last_bundle_ms >= PIN_QUIET_MS;
}

static void count_open(struct pin_group *g, pid_t tid, enum pin_role role, int64_t now_ms)
{
	switch (role) {
	case PIN_CERT:
		if (key_waiting(g, now_ms)) {
			g->fresh_key_ms = 0;        /* the second half of a key-first load */
			break;
		}
		if (!cert_waiting(g, now_ms))
			g->outstanding = 0;
		if (g->outstanding < 1u << 30)
			g->outstanding++;
		g->last_cert_ms = now_ms;
		break;
	case PIN_KEY:
		g->keyed = true;
		if (cert_waiting(g, now_ms))
			g->outstanding--;
		else
			g->fresh_key_ms = now_ms;
		break;
	case PIN_BUNDLE:
		g->keyed = true;
		g->bundles++;
		g->last_bundle_ms = now_ms;
		if (g->bundle_open > 0)
			g->bundle_overlap = true;
		g->bundle_open++;
		for (unsigned i = 0; i < g->n_odd; i++) {
			if (g->odd[i] == tid) {
				g->odd[i] = g->odd[--g->n_odd];
				return;
			}
		}
		if (g->n_odd < ODD_MAX)
			g->odd[g->n_odd++] = tid;
		else
			g->odd_overflow = true;
		break;
	case PIN_FOLLOW:
		break;
	}
}

struct fsver *pins_choose(struct pins *p, struct pin_group **groups, struct fsver *cur, int64_t switched_ms,
			  pid_t tgid, pid_t tid, enum pin_role role, int64_t now_ms)
{
	struct pin_group *g;

	expire(p, now_ms);
	for (g = *groups; g != NULL; g = g->next)
		if (g->tgid == tgid)
			break;
	if (g == NULL) {
		if (p->count >= GROUPS_MAX || (g = calloc(1, sizeof(*g))) == NULL)
			return fsver_ref(cur);
		g->tgid = tgid;
		g->ver = fsver_ref(cur);
		g->started_ms = now_ms;
		g->head = groups;
		g->next = *groups;
		*groups = g;
		p->count++;
	} else {
		lru_unlink(p, g);
		if (g->ver != cur && (g->must_move || now_ms - switched_ms >= PIN_MOVE_MAX_MS ||
				      between_loads(g, role, now_ms)))
			move_to(g, cur, now_ms);
	}
	count_open(g, tid, role, now_ms);
	g->last_ms = now_ms;
	lru_append(p, g);
	return fsver_ref(g->ver);
}

/* Reading /proc costs more than the rest of an open: remember recent answers for a second. */
#define TGID_SLOTS 256
#define TGID_TTL_MS 1000

static struct {
	pid_t tid, tgid;
	int64_t at_ms;
} tgid_cache[TGID_SLOTS];
static pthread_mutex_t tgid_lock = PTHREAD_MUTEX_INITIALIZER;

static pid_t read_tgid(pid_t tid)
{
	char path[64], buf[512];
	ssize_t n;
	char *t;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return tid;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return tid;
	buf[n] = '\0';
	if ((t = strstr(buf, "\nTgid:")) == NULL)
		return tid;
	return (pid_t)strtol(t + 6, NULL, 10);
}

pid_t pins_tgid(pid_t tid, int64_t now_ms)
{
	size_t slot = (size_t)tid % TGID_SLOTS;
	pid_t tgid;

	pthread_mutex_lock(&tgid_lock);
	if (tgid_cache[slot].tid == tid && now_ms - tgid_cache[slot].at_ms < TGID_TTL_MS) {
		tgid = tgid_cache[slot].tgid;
		pthread_mutex_unlock(&tgid_lock);
		return tgid;
	}
	pthread_mutex_unlock(&tgid_lock);
	tgid = read_tgid(tid);
	pthread_mutex_lock(&tgid_lock);
	tgid_cache[slot].tid = tid;
	tgid_cache[slot].tgid = tgid;
	tgid_cache[slot].at_ms = now_ms;
	pthread_mutex_unlock(&tgid_lock);
	return tgid;
}
