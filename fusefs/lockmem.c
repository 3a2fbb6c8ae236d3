/*
 * lockmem.c - locked pages for unsealed keys (see lockmem.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "lockmem.h"

#define POOL_CLASSES 8                /* runs of 1..8 pages are pooled */
#define POOL_DEPTH 32                 /* buffers kept per class */

struct lockmem {
	pthread_mutex_t mu;
	size_t page;
	bool warned;                      /* the RLIMIT_MEMLOCK warning was logged */
	uint8_t *pool[POOL_CLASSES][POOL_DEPTH];
	size_t n_pool[POOL_CLASSES];
};

int lockmem_new(struct lockmem **out)
{
	struct lockmem *m = calloc(1, sizeof(*m));

	*out = NULL;
	if (m == NULL)
		return CMK_ERR_NOMEM;
	if (pthread_mutex_init(&m->mu, NULL) != 0) {
		free(m);
		return CMK_ERR_NOMEM;
	}
	m->page = (size_t)sysconf(_SC_PAGESIZE);
	*out = m;
	return 0;
}

static void unmap(uint8_t *p, size_t len)
{
	cmk_wipe(p, len);
	munlock(p, len);
	munmap(p, len);
}

void lockmem_free(struct lockmem *m)
{
	if (m == NULL)
		return;
	for (size_t c = 0; c < POOL_CLASSES; c++)
		for (size_t i = 0; i < m->n_pool[c]; i++)
			unmap(m->pool[c][i], (c + 1) * m->page);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

int lockmem_get(struct lockmem *m, size_t len, struct lockbuf *out)
{
	size_t pages = len == 0 ? 1 : (len + m->page - 1) / m->page;
	size_t cap = pages * m->page;
	uint8_t *p = NULL;
	bool warn = false;
	int err;

	out->p = NULL;
	out->cap = 0;
	if (pages <= POOL_CLASSES) {
		pthread_mutex_lock(&m->mu);
		if (m->n_pool[pages - 1] > 0)
			p = m->pool[pages - 1][--m->n_pool[pages - 1]];
		pthread_mutex_unlock(&m->mu);
	}
	if (p == NULL) {
		p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return CMK_ERR_NOMEM;
		/* Not in a core dump, and not inherited by a child of this process. */
		(void)madvise(p, cap, MADV_DONTDUMP);
		(void)madvise(p, cap, MADV_DONTFORK);
		if (mlock(p, cap) != 0) {
			err = errno;
			pthread_mutex_lock(&m->mu);
			warn = !m->warned;
			m->warned = true;
			pthread_mutex_unlock(&m->mu);
			if (warn)
				cmk_log(CMK_LOG_WARN, "mlock: %s: unsealed keys may be swapped out (raise "
					"RLIMIT_MEMLOCK / LimitMEMLOCK)", strerror(err));
		}
	}
	out->p = p;
	out->cap = cap;
	return 0;
}

void lockmem_put(struct lockmem *m, struct lockbuf *b)
{
	size_t pages;

	if (b->p == NULL)
		return;
	cmk_wipe(b->p, b->cap);
	pages = b->cap / m->page;
	if (pages <= POOL_CLASSES) {
		pthread_mutex_lock(&m->mu);
		if (m->n_pool[pages - 1] < POOL_DEPTH) {
			m->pool[pages - 1][m->n_pool[pages - 1]++] = b->p;
			b->p = NULL;
		}
		pthread_mutex_unlock(&m->mu);
	}
	if (b->p != NULL)
		unmap(b->p, b->cap);
	b->p = NULL;
	b->cap = 0;
}
