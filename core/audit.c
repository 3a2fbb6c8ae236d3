/*
 * audit.c - the tamper-evident audit trail (DESIGN §9, REQ-012).
 *
 * One JSON object per line, keys in a fixed order, the last key "prev"
 * holding the SHA-256 of the previous line's bytes (without its newline).
 * Editing, deleting or reordering any line therefore breaks the chain at
 * that point, and cmk_audit_verify() names the first line where it breaks.
 *
 * The next sequence number and the previous hash are read from the file
 * itself on every append, never remembered in memory: the daemon and any
 * number of CLI runs append to the same file, so only the file knows what
 * was written last.  An exclusive flock() makes read-tail-then-write atomic
 * between processes; flock() belongs to the open file description, which
 * all threads of a process share, so a mutex does the same between threads.
 *
 * A line is written with one write() and fsync'd before the append returns:
 * an audited action is not reported done before its record is on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/audit.h"
#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"

/* Longest line read back or written; keeps a damaged file from making us allocate without bound. */
#define AUDIT_LINE_MAX (1024 * 1024)
#define HASH_HEX_LEN 64

static const char zero_hash[HASH_HEX_LEN + 1] =
	"0000000000000000000000000000000000000000000000000000000000000000";

struct cmk_audit {
	pthread_mutex_t lock;
	int fd;
	pid_t pid;      /* process that opened fd; see own_fd() */
	char *path;
};

/* What the last line of the trail says: the next line continues from it. */
struct tail {
	off_t size;
	off_t torn;             /* bytes of an incomplete last line removed (0 = none) */
	uint64_t seq;
	char hash[HASH_HEX_LEN + 1];
};

static void hash_hex(const char *data, size_t len, char out[HASH_HEX_LEN + 1])
{
	uint8_t digest[32];

	cmk_sha256(data, len, digest);
	cmk_hex(digest, sizeof(digest), out);
}

/* ---- opening ---------------------------------------------------------- */

static int make_parent_dir(const char *path)
{
	char *copy = strdup(path), why[512];
	int rc;

	if (copy == NULL)
		return CMK_ERR_NOMEM;
	rc = cmk_mkdirs(dirname(copy), 0700);
	free(copy);
	if (rc == 0)
		return 0;
	/* Copied first: cmk_fail() writes the buffer cmk_errdetail() points into. */
	snprintf(why, sizeof(why), "%s", cmk_errdetail());
	return cmk_fail(CMK_ERR_AUDIT, "audit: %s: creating its directory: %s", path, why);
}

/* A newly created trail must survive a crash of the machine, not only its first line. */
static void sync_parent_dir(const char *path)
{
	char *copy = strdup(path);
	int fd;

	if (copy == NULL)
		return;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd) != 0)
			cmk_log(CMK_LOG_WARN, "audit: %s: syncing its directory: %s", path, strerror(errno));
		close(fd);
	}
	free(copy);
}

/*
 * Open read-write in append mode: appends need to read the last line back
 * through the same descriptor that holds the lock and writes, so that the
 * line read and the line written are in the same file even if the path is
 * renamed in between.
 */
static int open_trail(const char *path, int *out)
{
	const int flags = O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC;
	struct stat sb;
	int fd, rc;

	fd = open(path, flags, 0600);
	if (fd < 0 && errno == ENOENT) {
		if ((rc = make_parent_dir(path)) != 0)
			return rc;
		fd = open(path, flags, 0600);
	}
	if (fd < 0)
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: not a regular file", path);
	}
	if ((sb.st_mode & 022) != 0)
		cmk_log(CMK_LOG_WARN, "audit: %s: mode %04o lets others write the audit trail", path,
			(unsigned)(sb.st_mode & 07777));
	if (sb.st_size == 0)
		sync_parent_dir(path);
	*out = fd;
	return 0;
}

int cmk_audit_open(const char *path, struct cmk_audit **out)
{
	struct cmk_audit *a;
	int rc;

	*out = NULL;
	if (path == NULL || *path == '\0')
		return cmk_fail(CMK_ERR_INVALID, "audit: no audit trail path given");
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return CMK_ERR_NOMEM;
	a->fd = -1;
	if ((a->path = strdup(path)) == NULL) {
		free(a);
		return CMK_ERR_NOMEM;
	}
	if ((rc = open_trail(path, &a->fd)) != 0) {
		free(a->path);
		free(a);
		return rc;
	}
	a->pid = getpid();
	pthread_mutex_init(&a->lock, NULL);
	*out = a;
	return 0;
}

void cmk_audit_close(struct cmk_audit *a)
{
	if (a == NULL)
		return;
	if (a->fd >= 0)
		close(a->fd);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}

/*
 * After fork() parent and child share the open file description, and with it
 * the flock: both would believe they hold it.  A process that did not open
 * the descriptor itself opens its own before appending.
 */
static int own_fd(struct cmk_audit *a)
{
	int fd, rc;

	if (a->pid == getpid())
		return 0;
	if ((rc = open_trail(a->path, &fd)) != 0)
		return rc;
	close(a->fd);
	a->fd = fd;
	a->pid = getpid();
	return 0;
}

/* ---- reading the last line -------------------------------------------- */

static int read_at(struct cmk_audit *a, char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(a->fd, buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: read: %s", a->path, strerror(errno));
		if (n == 0)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: shrank while locked", a->path);
		done += (size_t)n;
	}
	return 0;
}

/* Offset where the line ending just before `end` starts: scan backwards a block at a time. */
static int find_line_start(struct cmk_audit *a, off_t end, off_t *start)
{
	char buf[4096];
	off_t pos = end;

	while (pos > 0) {
		size_t n = pos > (off_t)sizeof(buf) ? sizeof(buf) : (size_t)pos;
		char *nl;
		int rc;

		if (end - pos > AUDIT_LINE_MAX)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: the last line is longer than %d bytes: "
					"not an audit trail written by cmkcert", a->path, AUDIT_LINE_MAX);
		if ((rc = read_at(a, buf, n, pos - (off_t)n)) != 0)
			return rc;
		if ((nl = memrchr(buf, '\n', n)) != NULL) {
			*start = pos - (off_t)n + (nl - buf) + 1;
			return 0;
		}
		pos -= (off_t)n;
	}
	*start = 0;
	return 0;
}

static int parse_tail_line(struct cmk_audit *a, const char *line, size_t len, struct tail *t)
{
	json_t *obj = NULL;
	int64_t seq = 0;
	char why[512];
	int rc;

	rc = cmk_json_parse("last line", line, len, &obj);
	if (rc == 0)
		rc = cmk_json_int(obj, "seq", &seq);
	if (rc == CMK_ERR_NOMEM)
		goto out;
	if (rc != 0 || seq < 1) {
		snprintf(why, sizeof(why), "%s", rc != 0 ? cmk_errdetail() : "seq below 1");
		rc = cmk_fail(CMK_ERR_AUDIT, "audit: %s: the last line is not an audit record (%s); "
			      "run \"cmkcert audit verify\" and repair the trail before appending", a->path, why);
		goto out;
	}
	t->seq = (uint64_t)seq;
	hash_hex(line, len, t->hash);
out:
	json_decref(obj);
	return rc;
}

/* Read sequence number and hash of the last line.  The caller holds the lock. */
static int read_tail(struct cmk_audit *a, struct tail *t)
{
	struct stat sb;
	char last, *line = NULL;
	off_t start;
	size_t len;
	int rc;

	if (fstat(a->fd, &sb) != 0)
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: stat: %s", a->path, strerror(errno));
	t->size = sb.st_size;
	if (sb.st_size == 0) {
		t->seq = 0;
		memcpy(t->hash, zero_hash, sizeof(t->hash));
		return 0;
	}
	if ((rc = read_at(a, &last, 1, sb.st_size - 1)) != 0)
		return rc;
	/*
	 * Without its newline the last line was cut short: a writer died (or the
	 * disk filled) in the middle of its write.  That line was never a
	 * complete record, so it is removed, and the removal itself is recorded
	 * as the next line: the trail goes on verifying, and says what happened.
	 */
	if (last != '\n') {
		if ((rc = find_line_start(a, sb.st_size, &start)) != 0)
			return rc;
		if (ftruncate(a->fd, start) != 0 || fsync(a->fd) != 0)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: removing an incomplete last line: %s", a->path,
					strerror(errno));
		cmk_log(CMK_LOG_WARN, "audit: %s: removed an incomplete last line of %lld bytes left by an "
			"interrupted write", a->path, (long long)(sb.st_size - start));
		t->torn = sb.st_size - start;
		return read_tail(a, t);
	}
	if ((rc = find_line_start(a, sb.st_size - 1, &start)) != 0)
		return rc;
	len = (size_t)(sb.st_size - 1 - start);
	if ((line = malloc(len + 1)) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = read_at(a, line, len, start)) == 0)
		rc = parse_tail_line(a, line, len, t);
	free(line);
	return rc;
}

/* ---- building a line -------------------------------------------------- */

/* Length of the valid UTF-8 sequence at `s`, 0 when the bytes there are not one. */
static size_t utf8_len(const unsigned char *s)
{
	uint32_t cp;
	size_t n, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)   /* also stops at the terminating NUL */
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Copy `s` replacing each byte that is not valid UTF-8 with U+FFFD.  A
 * detail may quote a file name or a peer's message in any encoding, and
 * jansson only takes UTF-8; losing the audit record over it would be worse.
 */
static char *utf8_clean(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	char *out, *o;

	if ((out = malloc(strlen(s) * 3 + 1)) == NULL)
		return NULL;
	o = out;
	while (*p != '\0') {
		size_t n = utf8_len(p);
		if (n == 0) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			p++;
		} else {
			memcpy(o, p, n);
			o += n;
			p += n;
		}
	}
	*o = '\0';
	return out;
}

/* Add a string field unless `value` is NULL; -1 on out of memory. */
static int put_str(json_t *obj, const char *key, const char *value)
{
	char *clean;
	int rc;

	if (value == NULL)
		return 0;
	if ((clean = utf8_clean(value)) == NULL)
		return -1;
	rc = json_object_set_new(obj, key, json_string(clean));
	free(clean);
	return rc;
}

static int put_int(json_t *obj, const char *key, json_int_t value)
{
	return json_object_set_new(obj, key, json_integer(value));
}

/* UTC with milliseconds: events within one second stay ordered for a reader. */
static void format_now(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The line for `ev` continuing `t`, with its newline; *out malloc'd. */
static int build_line(const struct cmk_audit_event *ev, const struct tail *t, char **out)
{
	char now[64], *text = NULL;
	json_t *o;
	int bad = 0;

	*out = NULL;
	format_now(now, sizeof(now));
	if ((o = json_object()) == NULL)
		return CMK_ERR_NOMEM;
	/* jansson keeps insertion order: this order is the documented line format. */
	bad |= put_int(o, "seq", (json_int_t)(t->seq + 1));
	bad |= put_str(o, "time", now);
	bad |= put_str(o, "event", ev->event);
	bad |= put_str(o, "tenant", ev->tenant);
	bad |= put_str(o, "type", ev->type);
	bad |= put_str(o, "serial", ev->serial);
	bad |= put_str(o, "fingerprint", ev->fingerprint);
	if (ev->record_id != 0)
		bad |= put_int(o, "record_id", (json_int_t)ev->record_id);
	bad |= put_str(o, "actor", ev->actor);
	if (ev->uid >= 0)
		bad |= put_int(o, "uid", ev->uid);
	if (ev->gid >= 0)
		bad |= put_int(o, "gid", ev->gid);
	if (ev->pid >= 0)
		bad |= put_int(o, "pid", ev->pid);
	bad |= put_str(o, "step", ev->step);
	bad |= put_str(o, "outcome", ev->outcome);
	bad |= put_str(o, "detail", ev->detail);
	bad |= put_str(o, "prev", t->hash);
	if (bad == 0)
		text = cmk_json_dump(o);
	json_decref(o);
	if (text == NULL)
		return CMK_ERR_NOMEM;
	if (strlen(text) >= AUDIT_LINE_MAX) {
		free(text);
		return cmk_fail(CMK_ERR_INVALID, "audit: %s event longer than %d bytes", ev->event, AUDIT_LINE_MAX);
	}
	*out = cmk_asprintf("%s\n", text);
	free(text);
	return *out == NULL ? CMK_ERR_NOMEM : 0;
}

/* ---- appending -------------------------------------------------------- */

static int write_line(struct cmk_audit *a, const char *line, off_t old_size)
{
	size_t len = strlen(line), done = 0;

	while (done < len) {
		ssize_t n = write(a->fd, line + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			/* Take back a partial line so the trail still ends in a complete one. */
			if (done > 0 && ftruncate(a->fd, old_size) != 0)
				cmk_log(CMK_LOG_ERROR, "audit: %s: removing a partly written line: %s", a->path,
					strerror(errno));
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: write: %s", a->path, strerror(err));
		}
		done += (size_t)n;
	}
	if (fsync(a->fd) != 0)
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: fsync: %s", a->path, strerror(errno));
	return 0;
}

static int append_locked(struct cmk_audit *a, const struct cmk_audit_event *evs, size_t n)
{
	struct tail t = { 0 };
	char *line = NULL, *all = NULL;
	size_t used = 0, cap = 0;
	off_t start;
	int rc;

	if ((rc = read_tail(a, &t)) != 0)
		return rc;
	if (t.torn > 0) {
		struct cmk_audit_event repair = CMK_AUDIT_EVENT_INIT;
		char detail[160];

		snprintf(detail, sizeof(detail), "removed an incomplete last line of %lld bytes left by an "
			 "interrupted write", (long long)t.torn);
		repair.event = CMK_AUDIT_ERROR;
		repair.outcome = "repaired";
		repair.step = "audit";
		repair.detail = detail;
		if ((rc = build_line(&repair, &t, &line)) != 0)
			return rc;
		rc = write_line(a, line, t.size);
		free(line);
		line = NULL;
		if (rc != 0 || (rc = read_tail(a, &t)) != 0)
			return rc;
	}
	/* Chain the lines in memory, then one write and one fsync for all of them. */
	start = t.size;
	for (size_t i = 0; i < n; i++) {
		size_t len;

		if ((rc = build_line(&evs[i], &t, &line)) != 0)
			goto out;
		len = strlen(line);
		if (used + len + 1 > cap) {
			size_t ncap = (used + len + 1) * 2;
			char *nb = realloc(all, ncap);
			if (nb == NULL) {
				rc = CMK_ERR_NOMEM;
				goto out;
			}
			all = nb;
			cap = ncap;
		}
		memcpy(all + used, line, len + 1);
		used += len;
		t.seq++;
		hash_hex(line, len - 1, t.hash);
		free(line);
		line = NULL;
	}
	rc = n == 0 ? 0 : write_line(a, all, start);
out:
	free(line);
	free(all);
	return rc;
}

int cmk_audit_append_batch(struct cmk_audit *a, const struct cmk_audit_event *evs, size_t n)
{
	int rc;

	if (a == NULL || (evs == NULL && n > 0))
		return cmk_fail(CMK_ERR_INVALID, "audit: no audit trail or no event");
	for (size_t i = 0; i < n; i++) {
		if (evs[i].event == NULL || *evs[i].event == '\0')
			return cmk_fail(CMK_ERR_INVALID, "audit: event name missing");
		if (evs[i].outcome == NULL || *evs[i].outcome == '\0')
			return cmk_fail(CMK_ERR_INVALID, "audit: %s: outcome missing", evs[i].event);
	}

	pthread_mutex_lock(&a->lock);
	if ((rc = own_fd(a)) != 0)
		goto out;
	while ((rc = flock(a->fd, LOCK_EX)) != 0 && errno == EINTR)
		;
	if (rc != 0) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit: %s: lock: %s", a->path, strerror(errno));
		goto out;
	}
	rc = append_locked(a, evs, n);
	flock(a->fd, LOCK_UN);
out:
	pthread_mutex_unlock(&a->lock);
	return rc;
}

int cmk_audit_append(struct cmk_audit *a, const struct cmk_audit_event *ev)
{
	if (ev == NULL)
		return cmk_fail(CMK_ERR_INVALID, "audit: no audit trail or no event");
	return cmk_audit_append_batch(a, ev, 1);
}

/* ---- verifying -------------------------------------------------------- */

/*
 * The fields every line must have: seq an integer, time, event, outcome and
 * prev non-empty strings.  On success *seq and *prev_field are set.
 */
static int check_fields(const json_t *obj, uint64_t no, int64_t *seq, const char **prev_field)
{
	static const char *const text_keys[] = { "time", "event", "outcome", "prev" };
	const char *s = NULL;
	char why[512];

	if (!json_is_object(obj))
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": not a JSON object", no);
	if (cmk_json_int(obj, "seq", seq) != 0)
		goto bad_field;
	for (size_t i = 0; i < sizeof(text_keys) / sizeof(text_keys[0]); i++) {
		if (cmk_json_str(obj, text_keys[i], &s) != 0)
			goto bad_field;
		if (*s == '\0')
			return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": field \"%s\" is empty", no, text_keys[i]);
	}
	*prev_field = s;   /* "prev" is the last of text_keys */
	return 0;
bad_field:
	/* cmk_json_* named the field ("missing field \"seq\""); say which line. */
	snprintf(why, sizeof(why), "%s", cmk_errdetail());
	return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": %s", no, why);
}

/*
 * Check line `no` (`len` bytes with its newline) against `prev`, the hash of
 * the line before, which is then replaced by this line's hash.  The sequence
 * number is checked before the hash because a wrong number says more about
 * what happened (a line deleted or moved) than a hash mismatch does.
 */
static int check_line(const char *line, size_t len, uint64_t no, char prev[HASH_HEX_LEN + 1])
{
	const char *prev_field = NULL;
	char why[512];
	json_t *obj = NULL;
	int64_t seq = 0;
	int rc;

	if (len == 0 || line[len - 1] != '\n')
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": incomplete last line (no newline at the end: "
				"a write was interrupted or the file was cut)", no);
	len--;
	if ((rc = cmk_json_parse("not valid JSON", line, len, &obj)) != 0) {
		if (rc == CMK_ERR_NOMEM)
			return rc;
		snprintf(why, sizeof(why), "%s", cmk_errdetail());
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": %s", no, why);
	}
	if ((rc = check_fields(obj, no, &seq, &prev_field)) != 0)
		goto out;
	rc = CMK_ERR_AUDIT;
	if (seq < 0 || (uint64_t)seq != no) {
		cmk_fail(rc, "line %" PRIu64 ": seq %" PRId64 ", expected %" PRIu64
			 " (a line was deleted, inserted or reordered)", no, seq, no);
		goto out;
	}
	if (strcmp(prev_field, prev) != 0) {
		if (no == 1)
			cmk_fail(rc, "line 1: prev is not 64 zeros (the start of the trail is missing or edited)");
		else
			cmk_fail(rc, "line %" PRIu64 ": prev does not match the hash of line %" PRIu64
				 " (line edited, deleted or reordered)", no, no - 1);
		goto out;
	}
	hash_hex(line, len, prev);
	rc = 0;
out:
	json_decref(obj);
	return rc;
}

/*
 * Size of the trail at a moment when no append is half done: appends write
 * under LOCK_EX, so with LOCK_SH held the file ends in a whole line.  Lines
 * appended later lie beyond this size and are not read, so the daemon can
 * go on appending during a long verify.
 */
static int stable_size(int fd, const char *path, off_t *size)
{
	struct stat sb;
	int rc;

	while ((rc = flock(fd, LOCK_SH)) != 0 && errno == EINTR)
		;
	if (rc != 0)
		return cmk_fail(CMK_ERR_AUDIT, "%s: lock: %s", path, strerror(errno));
	rc = fstat(fd, &sb);
	flock(fd, LOCK_UN);
	if (rc != 0)
		return cmk_fail(CMK_ERR_AUDIT, "%s: stat: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return cmk_fail(CMK_ERR_AUDIT, "%s: not a regular file", path);
	*size = sb.st_size;
	return 0;
}

int cmk_audit_verify(const char *path, uint64_t *n_lines, uint64_t *bad_line)
{
	char prev[HASH_HEX_LEN + 1], *line = NULL;
	uint64_t no = 0, bad = 0;
	off_t size = 0, off = 0;
	size_t cap = 0;
	ssize_t n;
	FILE *f = NULL;
	int fd, rc;

	memcpy(prev, zero_hash, sizeof(prev));
	if (n_lines != NULL)
		*n_lines = 0;
	if (bad_line != NULL)
		*bad_line = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return cmk_fail(errno == ENOENT ? CMK_ERR_NOTFOUND : CMK_ERR_AUDIT, "%s: %s", path, strerror(errno));
	if ((rc = stable_size(fd, path, &size)) != 0) {
		close(fd);
		return rc;
	}
	if ((f = fdopen(fd, "r")) == NULL) {
		close(fd);
		return CMK_ERR_NOMEM;
	}
	while (off < size && (n = getline(&line, &cap, f)) > 0) {
		if (n > size - off)
			n = (ssize_t)(size - off);
		off += n;
		no++;
		/* After the first bad line, only count: the caller reports how long the trail is. */
		if (bad != 0)
			continue;
		if ((rc = check_line(line, (size_t)n, no, prev)) == CMK_ERR_NOMEM)
			goto out;
		if (rc != 0)
			bad = no;
	}
	if (ferror(f)) {
		rc = cmk_fail(CMK_ERR_AUDIT, "%s: read error after line %" PRIu64, path, no);
		goto out;
	}
	rc = bad != 0 ? CMK_ERR_AUDIT : 0;
out:
	if (n_lines != NULL)
		*n_lines = no;
	if (bad_line != NULL)
		*bad_line = bad;
	free(line);
	fclose(f);
	return rc;
}
