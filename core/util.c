/*
 * util.c - escaping untrusted text for messages, durations, time, file
 * reading, the one atomic file writer and locked buffers for secrets in
 * transit.  (Secret wiping lives in the crypto backend, which owns
 * mbedtls_platform_zeroize.)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"

void cmk_strfreezero(char *s)
{
	if (s != NULL)
		cmk_freezero(s, strlen(s));
}

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), 0 when the bytes there are
 * not one.  `n` bytes are available.
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* One input character (or byte) at `in`, `n` bytes left, escaped into `unit`; returns its length and sets *used. */
static size_t escape_unit(const unsigned char *in, size_t n, unsigned flags, char unit[4], size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = in[0];
	size_t seq;

	*used = 1;
	if ((flags & CMK_ESCAPE_QUOTES) && (c == '"' || c == '\\')) {
		unit[0] = '\\';
		unit[1] = (char)c;
		return 2;
	}
	if (c >= 0x20 && c < 0x7f) {
		unit[0] = (char)c;
		return 1;
	}
	/* Well-formed UTF-8 stays readable; C1 controls (U+0080..U+009F, C2 80..C2 9F) do not. */
	if (c >= 0x80 && !(flags & CMK_ESCAPE_ASCII) && (seq = utf8_len(in, n)) != 0 && !(c == 0xc2 && in[1] < 0xa0)) {
		memcpy(unit, in, seq);
		*used = seq;
		return seq;
	}
	unit[0] = '\\';
	unit[1] = 'x';
	unit[2] = hex[c >> 4];
	unit[3] = hex[c & 0xf];
	return 4;
}

/* Length of the escaped form of the `n` bytes at `in`. */
static size_t escaped_len(const unsigned char *in, size_t n, unsigned flags)
{
	char unit[4];
	size_t total = 0, used;

	for (size_t i = 0; i < n; i += used)
		total += escape_unit(in + i, n - i, flags, unit, &used);
	return total;
}

size_t cmk_escape(char *out, size_t size, const char *s, size_t len, unsigned flags)
{
	const unsigned char *in = (const unsigned char *)s;
	size_t i = 0, o = 0, room, ulen, used;
	char unit[4];

	if (size == 0)
		return 0;
	/* Room for the text while "..." and the NUL stay reserved, so that a cut can always be marked. */
	room = size > 4 ? size - 4 : 0;
	while (i < len) {
		ulen = escape_unit(in + i, len - i, flags, unit, &used);
		/* Past the room, go on only when all the rest fits: then nothing is cut and no mark is needed. */
		if (o + ulen > room && o + escaped_len(in + i, len - i, flags) >= size)
			break;
		memcpy(out + o, unit, ulen);
		o += ulen;
		i += used;
	}
	if (i < len && size >= 4) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return i;
}

char *cmk_strdup(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

char *cmk_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

int64_t cmk_now(void)
{
	return (int64_t)time(NULL);
}

int64_t cmk_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cmk_parse_duration(const char *s, int64_t *seconds)
{
	int64_t n = 0, unit;
	const char *p = s;

	if (s == NULL || *s < '0' || *s > '9')
		return cmk_fail(CMK_ERR_INVALID, "duration \"%s\": expected a number and a unit (s, m, h, d)",
				s ? s : "");
	while (*p >= '0' && *p <= '9') {
		if (n > (INT64_MAX / 10) - 9)
			return cmk_fail(CMK_ERR_INVALID, "duration \"%s\": too large", s);
		n = n * 10 + (*p++ - '0');
	}
	switch (*p) {
	case 's': unit = 1; break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = 86400; break;
	case '\0':
		return cmk_fail(CMK_ERR_INVALID, "duration \"%s\": missing unit (s, m, h or d)", s);
	default:
		return cmk_fail(CMK_ERR_INVALID, "duration \"%s\": unknown unit \"%s\" (use s, m, h or d)", s, p);
	}
	if (p[1] != '\0')
		return cmk_fail(CMK_ERR_INVALID, "duration \"%s\": unexpected \"%s\" after the unit", s, p + 1);
	if (n > INT64_MAX / unit / 1000)
		return cmk_fail(CMK_ERR_INVALID, "duration \"%s\": too large", s);
	*seconds = n * unit;
	return 0;
}

void cmk_format_duration(int64_t seconds, char *buf, size_t len)
{
	if (seconds != 0 && seconds % 86400 == 0)
		snprintf(buf, len, "%" PRId64 "d", seconds / 86400);
	else if (seconds != 0 && seconds % 3600 == 0)
		snprintf(buf, len, "%" PRId64 "h", seconds / 3600);
	else if (seconds != 0 && seconds % 60 == 0)
		snprintf(buf, len, "%" PRId64 "m", seconds / 60);
	else
		snprintf(buf, len, "%" PRId64 "s", seconds);
}

void cmk_format_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%" PRId64, t);
}

int cmk_read_file(const char *path, size_t max, char **out, size_t *outlen)
{
	struct stat sb;
	char *buf = NULL;
	size_t cap, len = 0;
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cmk_fail(errno == ENOENT ? CMK_ERR_NOTFOUND : CMK_ERR_IO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		rc = cmk_fail(CMK_ERR_INVALID, "%s: not a regular file", path);
		goto out;
	}
	if ((size_t)sb.st_size > max) {
		rc = cmk_fail(CMK_ERR_INVALID, "%s: larger than %zu bytes", path, max);
		goto out;
	}
	cap = (size_t)sb.st_size + 1;
	if ((buf = malloc(cap)) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	/* The size can change under us; never read past cap - 1. */
	while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = cmk_fail(CMK_ERR_IO, "%s: %s", path, strerror(errno));
			goto out;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	if (outlen != NULL)
		*outlen = len;
	buf = NULL;
out:
	if (buf != NULL)
		cmk_freezero(buf, cap);
	close(fd);
	return rc;
}

static int fsync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = 0;

	if (copy == NULL)
		return CMK_ERR_NOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0)
		rc = cmk_fail(CMK_ERR_IO, "%s: syncing directory: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(copy);
	return rc;
}

int cmk_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char *tmp;
	const char *p = data;
	size_t done = 0;
	int fd, rc = 0;

	/* Write into a temporary beside the target, then rename: readers see the old or the new file, never a mix. */
	if ((tmp = cmk_asprintf("%s.tmp.XXXXXX", path)) == NULL)
		return CMK_ERR_NOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = cmk_fail(CMK_ERR_IO, "%s: creating temporary file: %s", path, strerror(errno));
		free(tmp);
		return rc;
	}
	if (fchmod(fd, mode) != 0) {
		rc = cmk_fail(CMK_ERR_IO, "%s: chmod: %s", path, strerror(errno));
		goto fail;
	}
	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = cmk_fail(CMK_ERR_IO, "%s: write: %s", path, strerror(errno));
			goto fail;
		}
		done += (size_t)n;
	}
	if (fsync(fd) != 0) {
		rc = cmk_fail(CMK_ERR_IO, "%s: fsync: %s", path, strerror(errno));
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = cmk_fail(CMK_ERR_IO, "%s: close: %s", path, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = cmk_fail(CMK_ERR_IO, "%s: rename: %s", path, strerror(errno));
		goto fail;
	}
	free(tmp);
	return fsync_dir(path);
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

int cmk_check_secret_file(const char *path)
{
	struct stat sb;

	return cmk_stat_secret_file(path, &sb);
}

int cmk_stat_secret_file(const char *path, struct stat *out)
{
	struct stat sb;

	/*
	 * Follow symbolic links: Kubernetes Secret volumes present every file as
	 * a link into a kubelet-managed directory; what matters is the file the
	 * key is read from.
	 */
	if (stat(path, &sb) != 0)
		return cmk_fail(errno == ENOENT ? CMK_ERR_NOTFOUND : CMK_ERR_IO, "%s: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return cmk_fail(CMK_ERR_PERM, "%s: not a regular file", path);
	if (sb.st_uid != 0 && sb.st_uid != geteuid())
		return cmk_fail(CMK_ERR_PERM, "%s: owned by uid %u, must be owned by root", path, (unsigned)sb.st_uid);
	if ((sb.st_mode & 077) != 0)
		return cmk_fail(CMK_ERR_PERM, "%s: mode %04o is readable by group or others, must be 0400 or 0600",
				path, (unsigned)(sb.st_mode & 07777));
	*out = sb;
	return 0;
}

int cmk_mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	struct stat sb;
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return cmk_fail(CMK_ERR_INVALID, "directory path \"%s\" is empty or too long", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) != 0 && errno != EEXIST)
				return cmk_fail(CMK_ERR_IO, "%s: mkdir: %s", buf, strerror(errno));
			*p = c;
			if (c == '\0')
				break;
		}
	}
	if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return cmk_fail(CMK_ERR_IO, "%s: exists and is not a directory", path);
	return 0;
}

int cmk_harden_process(void)
{
	struct rlimit rl = { 0, 0 };

	/* No core file and no ptrace attach by other users: key material is in this process's memory. */
	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		return cmk_fail(CMK_ERR_IO, "setrlimit(RLIMIT_CORE): %s", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return cmk_fail(CMK_ERR_IO, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	return 0;
}

/*
 * A locked buffer is a private anonymous mapping whose first LOCKED_HDR
 * bytes record the mapping's length, so that cmk_locked_free() needs only
 * the pointer.  Whole pages are mapped: mlock and madvise work on pages, and
 * a page shared with unrelated heap data could not be kept out of a dump.
 */
#define LOCKED_HDR ((size_t)16)

static pthread_once_t mlock_warn_once = PTHREAD_ONCE_INIT;
static _Thread_local int mlock_errno;      /* read by the thread that set it, which runs the once */

static void log_mlock_failure(void)
{
	cmk_log(CMK_LOG_INFO, "mlock: %s: answers holding keys or tokens may be swapped out (raise RLIMIT_MEMLOCK / "
		"LimitMEMLOCK)", strerror(mlock_errno));
}

void *cmk_locked_alloc(size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), map;
	uint8_t *p;

	if (len > SIZE_MAX - LOCKED_HDR - page)
		return NULL;
	map = (len + LOCKED_HDR + page - 1) / page * page;
	p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Kept out of core dumps and out of a forked child even where mlock is not allowed. */
	(void)madvise(p, map, MADV_DONTDUMP);
	(void)madvise(p, map, MADV_DONTFORK);
	if (mlock(p, map) != 0) {
		/* Still usable: wiped on free and never dumped, only swappable.  Said once per process. */
		mlock_errno = errno;
		pthread_once(&mlock_warn_once, log_mlock_failure);
	}
	memcpy(p, &map, sizeof(map));
	return p + LOCKED_HDR;
}

size_t cmk_locked_size(const void *p)
{
	size_t map;

	if (p == NULL)
		return 0;
	memcpy(&map, (const uint8_t *)p - LOCKED_HDR, sizeof(map));
	return map - LOCKED_HDR;
}

void cmk_locked_free(void *p)
{
	uint8_t *base;
	size_t map;

	if (p == NULL)
		return;
	base = (uint8_t *)p - LOCKED_HDR;
	memcpy(&map, base, sizeof(map));
	cmk_wipe(base, map);
	munlock(base, map);
	munmap(base, map);
}
