/*
 * testutil.h - small helpers the unit tests share: a substring assertion
 * and temporary directories.  Include after <cmocka.h>.
 */
#ifndef CMKCERT_TESTUTIL_H
#define CMKCERT_TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void tu_check_contains(const char *hay, const char *needle, const char *file, int line)
{
	if (hay == NULL || strstr(hay, needle) == NULL) {
		print_error("\"%s\" does not contain \"%s\"\n", hay ? hay : "(null)", needle);
		_fail(file, line);
	}
}
#define assert_contains(h, n) tu_check_contains((h), (n), __FILE__, __LINE__)

/* Assert that a cmkcert call returned 0; otherwise show its code and detail. */
#define assert_ok(expr)                                                                            \
	do {                                                                                       \
		int rc_ = (expr);                                                                  \
		if (rc_ != 0)                                                                      \
			print_error("%s -> %s: %s\n", #expr, cmk_strerror(rc_), cmk_errdetail()); \
		assert_int_equal(rc_, 0);                                                          \
	} while (0)

/* Make /tmp/cmk-test-<name>-XXXXXX into `dir` (at least 64 bytes); 0 or -1. */
static inline int tu_mkdtemp(char *dir, size_t len, const char *name)
{
	snprintf(dir, len, "/tmp/cmk-test-%s-XXXXXX", name);
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static inline int tu_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove a directory tree made by a test; 0 or -1. */
static inline int tu_rmtree(const char *dir)
{
	return nftw(dir, tu_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
