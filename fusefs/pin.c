/*
 * pin.c - (process, tenant, type) -> version pins with a time window; see pin.h.
 *
 * A small chained hash table.  Expired pins are removed as their bucket is
 * visited, and the whole table is swept now and then, so a pin never keeps
 * an old version alive much longer than the window.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "pin.h"

#define BUCKETS 1024
#define PINS_MAX 65536          /* beyond this, serve the current version without pinning */
#define SWEEP_EVERY 4096        /* pins_choose calls between full sweeps */

struct pin {
	struct pin *next;
	pid_t tgid;
	struct fsver *ver;           /* holds a reference */
	unsigned files;              /* enum pin_file bits opened under this pin */
	int64_t expires_ms;
};

struct pins {
	struct pin *bucket[BUCKETS];
	size_t count;
	unsigned calls;
};

int pins_new(struct pins **out)
{
	if ((*out = calloc(1, sizeof(**out))) == NULL)
		return CMK_ERR_NOMEM;
	return 0;
}

static void pin_free(struct pins *p, struct pin *x)
{
	fsver_unref(x->ver);
	free(x);
	p->count--;
}

void pins_free(struct pins *p)
{
	if (p == NULL)
		return;
	for (size_t b = 0; b < BUCKETS; b++) {
		while (p->bucket[b] != NULL) {
			struct pin *x = p->bucket[b];
			p->bucket[b] = x->next;
			pin_free(p, x);
		}
	}
	free(p);
}

static size_t bucket_of(pid_t tgid, const char *tenant, const char *type)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)tgid;

	for (const char *s = tenant; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	h = (h ^ '-') * 1099511628211ull;
	for (const char *s = type; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)(h % BUCKETS);
}

/* Remove expired pins from one bucket chain. */
static void sweep_bucket(struct pins *p, size_t b, int64_t now_ms)
{
	struct pin **pp = &p->bucket[b];

	while (*pp != NULL) {
		struct pin *x = *pp;
		if (x->expires_ms <= now_ms) {
			*pp = x->next;
			pin_free(p, x);
		} else {
			pp = &x->next;
		}
	}
}

struct fsver *pins_choose(struct pins *p, pid_t tgid, enum pin_file file, struct fsver *cur, int64_t now_ms)
{
	size_t b = bucket_of(tgid, cur->tenant, cur->type);
	struct pin *x;

	if (++p->calls % SWEEP_EVERY == 0)
		for (size_t i = 0; i < BUCKETS; i++)
			sweep_bucket(p, i, now_ms);
	else
		sweep_bucket(p, b, now_ms);
	for (x = p->bucket[b]; x != NULL; x = x->next) {
		if (x->tgid != tgid || strcmp(x->ver->tenant, cur->tenant) != 0 || strcmp(x->ver->type, cur->type) != 0)
			continue;
		if (!(x->files & file)) {
			x->files |= file;          /* the rest of the set this process started */
			return fsver_ref(x->ver);
		}
		/* This file again: a new set, from the current version. */
		fsver_unref(x->ver);
		x->ver = fsver_ref(cur);
		x->files = file;
		x->expires_ms = now_ms + PIN_WINDOW_MS;
		return fsver_ref(cur);
	}
	if (p->count < PINS_MAX && (x = malloc(sizeof(*x))) != NULL) {
		x->tgid = tgid;
		x->ver = fsver_ref(cur);
		x->files = file;
		x->expires_ms = now_ms + PIN_WINDOW_MS;
		x->next = p->bucket[b];
		p->bucket[b] = x;
		p->count++;
	}
	return fsver_ref(cur);
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
