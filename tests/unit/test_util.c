/*
 * test_util.c - durations, time formatting, file reading, the atomic file
 * writer, the secret file check, mkdir -p, secret wiping, locked buffers,
 * escaping untrusted text and the log limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"


/* ---- fixture: a temporary directory ----------------------------------- */

struct fx {
	char dir[64];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	if (tu_mkdtemp(fx->dir, sizeof(fx->dir), "util") != 0) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	int rc = tu_rmtree(fx->dir);

	free(fx);
	return rc;
}

/* "<dir>/<name>", malloc'd. */
static char *at(const struct fx *fx, const char *name)
{
	char *p = cmk_asprintf("%s/%s", fx->dir, name);

	assert_non_null(p);
	return p;
}

static void put_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* ---- durations and time ----------------------------------------------- */

static void test_parse_duration_accepts(void **state)
{
	static const struct { const char *text; int64_t seconds; } ok[] = {
		{ "90s", 90 }, { "30m", 1800 }, { "8760h", 31536000 }, { "30d", 2592000 },
		{ "0s", 0 }, { "1d", 86400 }, { "007m", 420 },
	};
	int64_t s;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		s = -1;
		assert_int_equal(cmk_parse_duration(ok[i].text, &s), 0);
		assert_int_equal(s, ok[i].seconds);
	}
}

static void test_parse_duration_refuses(void **state)
{
	static const char *const bad[] = {
		"30x", "30", "", "h", "5h3", "-5s", " 5s", "5 s", "5S", "1.5h", "5hh", "s5",
		"99999999999999999999s", "9223372036854775807s", "200000000000000d",
	};
	int64_t s;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cmk_parse_duration(bad[i], &s), CMK_ERR_INVALID);
		/* The message quotes the value so a user finds it in the config file. */
		assert_contains(cmk_errdetail(), bad[i]);
	}
	assert_int_equal(cmk_parse_duration(NULL, &s), CMK_ERR_INVALID);
	assert_int_equal(cmk_parse_duration("30x", &s), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "unit");
	assert_int_equal(cmk_parse_duration("30", &s), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "missing unit");
	assert_int_equal(cmk_parse_duration("200000000000000d", &s), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "too large");
}

static void test_format_duration(void **state)
{
	static const struct { int64_t seconds; const char *text; } cases[] = {
		{ 86400, "1d" }, { 5400, "90m" }, { 90, "90s" }, { 7200, "2h" }, { 0, "0s" },
		{ 31536000, "365d" }, { 3601, "3601s" }, { 2592000, "30d" },
	};
	char buf[32], tiny[3];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cmk_format_duration(cases[i].seconds, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].text);
	}
	/* A short buffer is cut, never overrun. */
	cmk_format_duration(8640000, tiny, sizeof(tiny));
	assert_string_equal(tiny, "10");
}

static void test_duration_round_trip(void **state)
{
	static const char *const texts[] = { "30d", "8760h", "90m", "45s", "7d" };
	char buf[32];
	int64_t s;

	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		assert_int_equal(cmk_parse_duration(texts[i], &s), 0);
		cmk_format_duration(s, buf, sizeof(buf));
		assert_int_equal(cmk_parse_duration(buf, &s), 0);
		cmk_format_duration(s, buf, sizeof(buf));
		if (strcmp(texts[i], "8760h") == 0)
			assert_string_equal(buf, "365d");
		else
			assert_string_equal(buf, texts[i]);
	}
}

static void test_format_time(void **state)
{
	char buf[32], tiny[8];

	(void)state;
	cmk_format_time(0, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	cmk_format_time(1795895265, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-28T19:47:45Z");
	cmk_format_time(-1, buf, sizeof(buf));
	assert_string_equal(buf, "1969-12-31T23:59:59Z");
	/* Too small for the date: still a terminated string within the buffer. */
	memset(tiny, 'z', sizeof(tiny));
	cmk_format_time(1795895265, tiny, sizeof(tiny));
	assert_non_null(memchr(tiny, '\0', sizeof(tiny)));
}

static void test_clocks(void **state)
{
	int64_t m1, m2, now = (int64_t)time(NULL);

	(void)state;
	assert_true(cmk_now() >= now && cmk_now() <= now + 2);
	m1 = cmk_monotonic_ms();
	m2 = cmk_monotonic_ms();
	assert_true(m2 >= m1);
}

/* ---- reading files ---------------------------------------------------- */

static void test_read_file(void **state)
{
	struct fx *fx = *state;
	char *path = at(fx, "f.txt"), *empty = at(fx, "empty"), *missing = at(fx, "missing");
	char *buf = NULL;
	size_t len = 0;

	put_file(path, "hello\n", 0600);
	put_file(empty, "", 0600);

	assert_int_equal(cmk_read_file(path, 6, &buf, &len), 0);
	assert_int_equal(len, 6);
	assert_string_equal(buf, "hello\n");
	free(buf);
	buf = NULL;
	assert_int_equal(cmk_read_file(path, 100, &buf, NULL), 0);
	assert_string_equal(buf, "hello\n");
	free(buf);
	buf = NULL;

	/* One byte over the limit is refused. */
	assert_int_equal(cmk_read_file(path, 5, &buf, &len), CMK_ERR_INVALID);
	assert_null(buf);
	assert_contains(cmk_errdetail(), "larger than 5 bytes");

	assert_int_equal(cmk_read_file(empty, 10, &buf, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);
	buf = NULL;

	assert_int_equal(cmk_read_file(missing, 10, &buf, &len), CMK_ERR_NOTFOUND);
	assert_contains(cmk_errdetail(), missing);
	assert_null(buf);
	assert_int_equal(cmk_read_file(fx->dir, 10, &buf, &len), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "not a regular file");

	free(missing);
	free(empty);
	free(path);
}

/* ---- the atomic writer ------------------------------------------------ */

static void test_write_atomic_new_file(void **state)
{
	struct fx *fx = *state;
	char *path = at(fx, "out.pem"), *buf = NULL;
	struct stat sb;
	size_t len;

	assert_int_equal(cmk_write_file_atomic(path, "abc\0def", 7, 0640), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0640);
	assert_int_equal(cmk_read_file(path, 100, &buf, &len), 0);
	assert_int_equal(len, 7);
	assert_memory_equal(buf, "abc\0def", 7);
	free(buf);
	/* Only the file itself: no temporary left behind. */
	assert_int_equal(count_entries(fx->dir), 1);

	assert_int_equal(cmk_write_file_atomic(path, "", 0, 0600), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	free(path);
}

static void test_write_atomic_replaces(void **state)
{
	struct fx *fx = *state;
	char *path = at(fx, "cert.pem"), old[16] = { 0 }, *buf = NULL;
	struct stat before, after;
	int fd;

	put_file(path, "old content", 0644);
	assert_int_equal(stat(path, &before), 0);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);

	assert_int_equal(cmk_write_file_atomic(path, "new", 3, 0400), 0);

	/* A reader who had the old file open still reads the whole old file: it was replaced, not rewritten. */
	assert_int_equal(read(fd, old, sizeof(old) - 1), 11);
	assert_string_equal(old, "old content");
	close(fd);
	assert_int_equal(stat(path, &after), 0);
	assert_true(after.st_ino != before.st_ino);
	assert_int_equal(after.st_mode & 07777, 0400);
	assert_int_equal(cmk_read_file(path, 100, &buf, NULL), 0);
	assert_string_equal(buf, "new");
	free(buf);
	assert_int_equal(count_entries(fx->dir), 1);
	free(path);
}

static void test_write_atomic_failures_leave_nothing(void **state)
{
	struct fx *fx = *state;
	char *nodir = at(fx, "no/such/dir/file"), *target = at(fx, "target");
	struct stat sb;

	/* The directory does not exist: nothing can be created, and nothing is. */
	assert_int_equal(cmk_write_file_atomic(nodir, "x", 1, 0600), CMK_ERR_IO);
	assert_contains(cmk_errdetail(), nodir);
	assert_int_equal(count_entries(fx->dir), 0);

	/* The temporary is made, but the rename over a directory fails: it must be removed. */
	assert_int_equal(mkdir(target, 0700), 0);
	assert_int_equal(cmk_write_file_atomic(target, "x", 1, 0600), CMK_ERR_IO);
	assert_contains(cmk_errdetail(), "rename");
	assert_int_equal(count_entries(fx->dir), 1);
	assert_int_equal(stat(target, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));

	free(target);
	free(nodir);
}

/* ---- secret files ----------------------------------------------------- */

static void test_check_secret_file_modes(void **state)
{
	struct fx *fx = *state;
	char *path = at(fx, "master.key"), *missing = at(fx, "missing.key");

	put_file(path, "k", 0600);
	assert_int_equal(cmk_check_secret_file(path), 0);
	assert_int_equal(chmod(path, 0400), 0);
	assert_int_equal(cmk_check_secret_file(path), 0);

	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(cmk_check_secret_file(path), CMK_ERR_PERM);
	assert_contains(cmk_errdetail(), "0644");
	assert_contains(cmk_errdetail(), path);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(cmk_check_secret_file(path), CMK_ERR_PERM);
	assert_contains(cmk_errdetail(), "0640");
	assert_int_equal(chmod(path, 0604), 0);
	assert_int_equal(cmk_check_secret_file(path), CMK_ERR_PERM);
	assert_int_equal(chmod(path, 0601), 0);
	assert_int_equal(cmk_check_secret_file(path), CMK_ERR_PERM);

	assert_int_equal(cmk_check_secret_file(fx->dir), CMK_ERR_PERM);
	assert_contains(cmk_errdetail(), "not a regular file");
	assert_int_equal(cmk_check_secret_file(missing), CMK_ERR_NOTFOUND);
	assert_contains(cmk_errdetail(), missing);
	free(missing);
	free(path);
}

static void test_check_secret_file_symlink_and_owner(void **state)
{
	struct fx *fx = *state;
	char *path = at(fx, "master.key"), *link = at(fx, "link.key");
	struct stat sb;

	put_file(path, "k", 0600);
	/* A symlink (as in a Kubernetes Secret volume) is judged by the file it leads to. */
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(cmk_check_secret_file(link), 0);
	/* The stat given back is the target's, not the link's (whose size is its path's length). */
	assert_int_equal(cmk_stat_secret_file(link, &sb), 0);
	assert_int_equal(sb.st_size, 1);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(cmk_check_secret_file(link), CMK_ERR_PERM);
	assert_contains(cmk_errdetail(), "0644");
	assert_int_equal(chmod(path, 0600), 0);

	if (geteuid() != 0) {
		free(link);
		free(path);
		skip();
	}
	/* Owned by someone else: refused with the owner named. */
	assert_int_equal(chown(path, 4321, 0), 0);
	assert_int_equal(cmk_check_secret_file(path), CMK_ERR_PERM);
	assert_contains(cmk_errdetail(), "4321");
	free(link);
	free(path);
}

/* ---- directories ------------------------------------------------------ */

static void test_mkdirs(void **state)
{
	struct fx *fx = *state;
	char *deep = at(fx, "a/b/c"), *mid = at(fx, "a/b"), *slash = at(fx, "x/y/"), *file = at(fx, "f");
	char *under_file = at(fx, "f/sub");
	struct stat sb;
	mode_t old = umask(022);

	assert_int_equal(cmk_mkdirs(deep, 0750), 0);
	assert_int_equal(stat(deep, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0750);
	assert_int_equal(stat(mid, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0750);

	/* Existing components are fine and keep their mode. */
	assert_int_equal(chmod(mid, 0755), 0);
	assert_int_equal(cmk_mkdirs(deep, 0700), 0);
	assert_int_equal(stat(mid, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0755);

	assert_int_equal(cmk_mkdirs(slash, 0700), 0);
	assert_int_equal(stat(slash, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));

	put_file(file, "x", 0600);
	assert_int_equal(cmk_mkdirs(under_file, 0700), CMK_ERR_IO);
	assert_contains(cmk_errdetail(), "f/sub");
	assert_int_equal(cmk_mkdirs("", 0700), CMK_ERR_INVALID);

	umask(old);
	free(under_file);
	free(file);
	free(slash);
	free(mid);
	free(deep);
}

/* ---- memory ----------------------------------------------------------- */

static void test_wiping(void **state)
{
	unsigned char buf[32];
	char *s;

	(void)state;
	/* NULL is a no-op for every wiper. */
	cmk_freezero(NULL, 100);
	cmk_strfreezero(NULL);
	cmk_wipe(NULL, 100);

	memset(buf, 0xa5, sizeof(buf));
	cmk_wipe(buf, 16);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], i < 16 ? 0 : 0xa5);

	/* The sanitizer build checks these free what they were given, and only that. */
	s = malloc(64);
	assert_non_null(s);
	memset(s, 'k', 64);
	cmk_freezero(s, 64);
	s = cmk_strdup("secret-id");
	cmk_strfreezero(s);
}

/* ---- escaping --------------------------------------------------------- */

static const char *esc(const char *s, unsigned flags)
{
	static char out[256];

	assert_int_equal(cmk_escape(out, sizeof(out), s, strlen(s), flags), strlen(s));
	return out;
}

static void test_escape(void **state)
{
	char out[64], again[256];
	const char *bad = "a\x1b[2J\r\n\t\x7f\xc2\x9b" "b";

	(void)state;
	/* Printable ASCII and well-formed UTF-8 (2, 3 and 4 bytes) are kept as they are. */
	assert_string_equal(esc("tenant-1 \"q\" \\", 0), "tenant-1 \"q\" \\");
	assert_string_equal(esc("ten\xc3\xa4nt \xe2\x82\xac \xf0\x9f\x94\x91", 0),
			    "ten\xc3\xa4nt \xe2\x82\xac \xf0\x9f\x94\x91");
	/* Control characters (newline too), DEL and C1 controls (CSI U+009B) become \xNN. */
	assert_string_equal(esc(bad, 0), "a\\x1b[2J\\x0d\\x0a\\x09\\x7f\\xc2\\x9bb");
	/* Bytes that are not well-formed UTF-8: a stray continuation, an overlong form, a surrogate,
	 * a code point above U+10FFFF, a sequence cut short by the end of the text. */
	assert_string_equal(esc("\x80", 0), "\\x80");
	assert_string_equal(esc("\xc0\xaf", 0), "\\xc0\\xaf");
	assert_string_equal(esc("\xed\xa0\x80", 0), "\\xed\\xa0\\x80");
	assert_string_equal(esc("\xf4\x90\x80\x80", 0), "\\xf4\\x90\\x80\\x80");
	assert_string_equal(esc("ok\xe2\x82", 0), "ok\\xe2\\x82");
	assert_string_equal(esc("\xff", 0), "\\xff");
	/* Escaping escaped text changes nothing. */
	snprintf(again, sizeof(again), "%s", esc(bad, 0));
	assert_string_equal(esc(again, 0), again);

	/* Flags: quotes and backslashes for a quoted value; every non-ASCII byte for names. */
	assert_string_equal(esc("a\"b\\c", CMK_ESCAPE_QUOTES), "a\\\"b\\\\c");
	assert_string_equal(esc("\xc3\xa4", CMK_ESCAPE_ASCII), "\\xc3\\xa4");

	/* Too long: cut before an escape or a character, never inside one, and marked. */
	memset(out, 'x', sizeof(out));
	assert_int_equal(cmk_escape(out, 10, "abcdefghijklmnop", 16, 0), 6);
	assert_string_equal(out, "abcdef...");
	assert_int_equal(cmk_escape(out, 10, "abcd\x1b\x1b", 6, 0), 4);
	assert_string_equal(out, "abcd...");
	assert_int_equal(cmk_escape(out, 10, "abcde\xe2\x82\xac!!", 10, 0), 5);
	assert_string_equal(out, "abcde...");
	/* What fits exactly is not cut. */
	assert_int_equal(cmk_escape(out, 10, "abcdefghi", 9, 0), 9);
	assert_string_equal(out, "abcdefghi");
	/* Embedded NUL bytes count as control characters; tiny buffers still end in a NUL. */
	assert_int_equal(cmk_escape(out, sizeof(out), "a\0b", 3, 0), 3);
	assert_string_equal(out, "a\\x00b");
	assert_int_equal(cmk_escape(out, 1, "abc", 3, 0), 0);
	assert_string_equal(out, "");
	assert_int_equal(cmk_escape(out, 0, "abc", 3, 0), 0);
}

/* The VmFlags of the mapping holding `p`, from /proc/self/smaps; "" when not found. */
static void mapping_flags(const void *p, char *flags, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[4400];          /* a mapping line holds at most a PATH_MAX path */
	unsigned long lo, hi;
	int in = 0;

	flags[0] = '\0';
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, len, "%s", line + 8);
			break;
		}
	}
	fclose(f);
}

static void test_locked_buffers(void **state)
{
	char flags[4400];
	uint8_t *p, *q;
	long page = sysconf(_SC_PAGESIZE);

	(void)state;
	cmk_locked_free(NULL);
	assert_int_equal(cmk_locked_size(NULL), 0);

	/* Zeroed, at least as large as asked, and writable to the last byte. */
	p = cmk_locked_alloc(100);
	assert_non_null(p);
	assert_true(cmk_locked_size(p) >= 100);
	for (size_t i = 0; i < cmk_locked_size(p); i++)
		assert_int_equal(p[i], 0);
	memset(p, 'k', cmk_locked_size(p));

	/* Kept out of core dumps ("dd") whether or not RLIMIT_MEMLOCK allowed locking it. */
	mapping_flags(p, flags, sizeof(flags));
	assert_contains(flags, " dd");

	/* A buffer larger than a page spans whole pages of its own. */
	q = cmk_locked_alloc((size_t)page * 3);
	assert_non_null(q);
	assert_true(cmk_locked_size(q) >= (size_t)page * 3);
	memset(q, 'k', cmk_locked_size(q));
	mapping_flags(q + cmk_locked_size(q) - 1, flags, sizeof(flags));
	assert_contains(flags, " dd");
	cmk_locked_free(q);
	cmk_locked_free(p);
}

static void test_strings(void **state)
{
	char *s;

	(void)state;
	assert_null(cmk_strdup(NULL));
	s = cmk_strdup("acme");
	assert_string_equal(s, "acme");
	free(s);
	s = cmk_asprintf("%s-%d", "acme", 42);
	assert_string_equal(s, "acme-42");
	free(s);
}

/* ---- the log limit ------------------------------------------------------ */

static int lines_logged;
static char last_line[1024];

static void count_line(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)level;
	(void)arg;
	lines_logged++;
	snprintf(last_line, sizeof(last_line), "%s", msg);
}

static void test_log_limit(void **state)
{
	struct cmk_log_limit lim = CMK_LOG_LIMIT_INIT;
	int i;

	(void)state;
	cmk_set_log(count_line, NULL, CMK_LOG_DEBUG);
	lines_logged = 0;
	for (i = 0; i < 1000; i++)
		cmk_log_limited(&lim, CMK_LOG_WARN, "open private/t-%d.key: refused", i);
	/* A thousand in a row: only the burst reaches the log. */
	assert_int_equal(lines_logged, CMK_LOG_LIMIT_BURST);
	assert_string_equal(last_line, "open private/t-4.key: refused");

	/* Once the window has passed, the next line says how many were left out. */
	lim.window_start -= CMK_LOG_LIMIT_MS;
	cmk_log_limited(&lim, CMK_LOG_WARN, "open private/t-%d.key: refused", 1000);
	assert_int_equal(lines_logged, CMK_LOG_LIMIT_BURST + 1);
	assert_string_equal(last_line, "open private/t-1000.key: refused (995 like this left out)");
	cmk_log_limited(&lim, CMK_LOG_WARN, "again");
	assert_string_equal(last_line, "again");

	/* Below the minimum level nothing is counted either. */
	cmk_set_log(count_line, NULL, CMK_LOG_ERROR);
	for (i = 0; i < 10; i++)
		cmk_log_limited(&lim, CMK_LOG_WARN, "quiet");
	assert_int_equal(lines_logged, CMK_LOG_LIMIT_BURST + 2);
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_duration_accepts),
		cmocka_unit_test(test_parse_duration_refuses),
		cmocka_unit_test(test_format_duration),
		cmocka_unit_test(test_duration_round_trip),
		cmocka_unit_test(test_format_time),
		cmocka_unit_test(test_clocks),
		cmocka_unit_test_setup_teardown(test_read_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_new_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_failures_leave_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_secret_file_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_secret_file_symlink_and_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdirs, setup, teardown),
		cmocka_unit_test(test_wiping),
		cmocka_unit_test(test_locked_buffers),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_log_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
