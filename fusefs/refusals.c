/*
 * refusals.c - the aggregation table of refused key opens (see refusals.h).
 *
 * Keys are found through a hash table and also kept in one list, in the
 * order their current interval began.  Every interval is equally long, so
 * that is the order in which they end too: the summaries due are always at
 * the head of the list, and the head says when the next one is due.  A key
 * whose summary was taken starts its next interval "now" and moves to the
 * tail, which keeps the order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refusals.h"

#define BUCKETS 1024              /* a power of two */

struct refusal {
	struct refusal *hnext;        /* hash chain */
	struct refusal *prev, *next;  /* by start of the current interval */
	uint32_t hash;
	int64_t since_ms;             /* the current interval began */
	uint64_t pending;             /* refusals counted in it, not yet written */
	bool announced;               /* the key's first refusal was written on its own */
	struct keyread_event last;    /* the most recent refusal: what the summary reports */
};

struct refusals {
	struct refusal *buckets[BUCKETS];
	struct refusal *head, *tail;
	size_t n;
	uint64_t pending;
};

static uint32_t fnv(uint32_t h, const void *p, size_t len)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

/* The key: who was refused, which file and version, how and why. */
static uint32_t key_hash(const struct keyread_event *ev)
{
	uint32_t h = 2166136261u;

	h = fnv(h, &ev->uid, sizeof(ev->uid));
	h = fnv(h, &ev->gid, sizeof(ev->gid));
	h = fnv(h, &ev->record_id, sizeof(ev->record_id));
	h = fnv(h, ev->outcome, strlen(ev->outcome));
	return fnv(h, ev->detail, strlen(ev->detail));
}

static bool same_key(const struct keyread_event *a, const struct keyread_event *b)
{
	return a->uid == b->uid && a->gid == b->gid && a->record_id == b->record_id &&
	       strcmp(a->outcome, b->outcome) == 0 && strcmp(a->detail, b->detail) == 0;
}

static void list_append(struct refusals *r, struct refusal *e)
{
	e->next = NULL;
	e->prev = r->tail;
	if (r->tail != NULL)
		r->tail->next = e;
	else
		r->head = e;
	r->tail = e;
}

static void list_unlink(struct refusals *r, struct refusal *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		r->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		r->tail = e->prev;
}

/* Forget a key that is no longer in the list. */
static void forget(struct refusals *r, struct refusal *e)
{
	struct refusal **pp = &r->buckets[e->hash & (BUCKETS - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	r->n--;
	free(e);
}

struct refusals *refusals_new(void)
{
	return calloc(1, sizeof(struct refusals));
}

void refusals_free(struct refusals *r)
{
	if (r == NULL)
		return;
	while (r->head != NULL) {
		struct refusal *e = r->head;
		r->head = e->next;
		free(e);
	}
	free(r);
}

bool refusals_add(struct refusals *r, const struct keyread_event *ev, int64_t now_ms, bool can_write)
{
	uint32_t h = key_hash(ev);
	struct refusal *e;

	for (e = r->buckets[h & (BUCKETS - 1)]; e != NULL; e = e->hnext) {
		if (e->hash == h && same_key(&e->last, ev)) {
			e->pending++;
			r->pending++;
			e->last = *ev;
			return false;
		}
	}
	/* Full (or out of memory): a line of its own now, not a pending count evicted. */
	if (r->n == REFUSALS_MAX || (e = calloc(1, sizeof(*e))) == NULL)
		return true;
	e->hash = h;
	e->since_ms = now_ms;
	e->last = *ev;
	e->announced = can_write;
	if (!can_write) {
		e->pending = 1;
		r->pending++;
	}
	e->hnext = r->buckets[h & (BUCKETS - 1)];
	r->buckets[h & (BUCKETS - 1)] = e;
	r->n++;
	list_append(r, e);
	return can_write;
}

int64_t refusals_next_due(const struct refusals *r)
{
	return r->head != NULL ? r->head->since_ms + REFUSALS_INTERVAL_MS : INT64_MAX;
}

/* The summary line of `e`'s interval: its most recent refusal, with the count and how long it took. */
static void summarize(const struct refusal *e, int64_t now_ms, struct keyread_event *out)
{
	int64_t secs = (now_ms - e->since_ms + 999) / 1000;
	size_t len;

	*out = e->last;
	out->count = e->pending;
	len = strlen(out->detail);
	snprintf(out->detail + len, sizeof(out->detail) - len, "%s%llu %srefusal%s in the last %lld s",
		 len > 0 ? "; " : "", (unsigned long long)e->pending, e->announced ? "more " : "",
		 e->pending == 1 ? "" : "s", (long long)(secs > 0 ? secs : 1));
}

bool refusals_take(struct refusals *r, int64_t now_ms, bool all, struct keyread_event *out)
{
	struct refusal *e;

	while ((e = r->head) != NULL && (all || now_ms - e->since_ms >= REFUSALS_INTERVAL_MS)) {
		list_unlink(r, e);
		if (e->pending == 0) {
			/* A quiet interval: the next refusal of this key is written at once again. */
			forget(r, e);
			continue;
		}
		summarize(e, now_ms, out);
		r->pending -= e->pending;
		if (all) {
			forget(r, e);
		} else {
			e->pending = 0;
			e->announced = true;
			e->since_ms = now_ms;
			list_append(r, e);
		}
		return true;
	}
	return false;
}

uint64_t refusals_pending(const struct refusals *r)
{
	return r->pending;
}
