/*
 * store_cond.c - keeping Berkeley DB's failure checking from hanging in
 * pthread_cond_destroy().
 *
 * Berkeley DB 5.3 puts process-shared condition variables in its region
 * files: a thread waiting for a lock sleeps on one.  glibc 2.25 and later
 * count every waiter inside the condition variable, and
 * pthread_cond_destroy() waits until each counted waiter has left.  A
 * waiter whose process was killed never leaves.  Failure checking frees the
 * dead process's lockers, destroying their condition variables, and would
 * wait forever - holding the registry lock every other process needs to
 * open the store.  tests/helpers/cond_destroy_dead_waiter.c shows the glibc
 * behaviour alone, in a few lines.
 *
 * glibc's destroy frees nothing; it only waits.  Berkeley DB never unmaps a
 * region while it uses it and initialises a condition variable again before
 * it reuses one.  So for memory inside a mapping of one of the store's
 * region files (__db.NNN) the destroy is skipped; every other condition
 * variable is destroyed by the C library as usual.  This definition takes
 * the place of the C library's for the whole program (libdb calls it
 * through its PLT); a program embedding libcmkcert.a gets it too.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANGES 64

static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	uintptr_t start, end;
} ranges[MAX_RANGES];
static size_t n_ranges;

static bool in_ranges(uintptr_t p)
{
	for (size_t i = 0; i < n_ranges; i++)
		if (p >= ranges[i].start && p < ranges[i].end)
			return true;
	return false;
}

/* Re-read the mappings of Berkeley DB region files. */
static void scan_regions(void)
{
	char line[4096];
	FILE *f = fopen("/proc/self/maps", "re");

	if (f == NULL)
		return;
	n_ranges = 0;
	while (fgets(line, sizeof(line), f) != NULL && n_ranges < MAX_RANGES) {
		unsigned long start, end;
		int path_at = 0;
		const char *base;

		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &start, &end, &path_at) < 2 || path_at == 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		base = strrchr(line + path_at, '/');
		if (base == NULL || strncmp(base + 1, "__db.", 5) != 0)
			continue;
		ranges[n_ranges].start = start;
		ranges[n_ranges].end = end;
		n_ranges++;
	}
	fclose(f);
}

static bool in_region_file(const void *p)
{
	bool found;

	pthread_mutex_lock(&ranges_lock);
	if (!(found = in_ranges((uintptr_t)p))) {
		scan_regions();
		found = in_ranges((uintptr_t)p);
	}
	pthread_mutex_unlock(&ranges_lock);
	return found;
}

int pthread_cond_destroy(pthread_cond_t *cond)
{
	static int (*libc_destroy)(pthread_cond_t *);

	if (in_region_file(cond))
		return 0;
	if (libc_destroy == NULL) {
		void *sym = dlvsym(RTLD_NEXT, "pthread_cond_destroy", "GLIBC_2.3.2");

		if (sym == NULL)
			sym = dlsym(RTLD_NEXT, "pthread_cond_destroy");
		if (sym == NULL)
			abort();
		*(void **)&libc_destroy = sym;
	}
	return libc_destroy(cond);
}
