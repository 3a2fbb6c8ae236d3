/*
 * audit.c - appending to the tamper-evident audit trail (DESIGN §9, REQ-012);
 * audit_verify.c checks it.  The line format is in audit_int.h.
 *
 * The next sequence number and the previous hash are read from the file
 * itself on every append, never remembered in memory: the daemon and any
 * number of CLI runs append to the same file, so only the file knows what
 * was written last.  An exclusive flock() makes read-tail-then-write atomic
 * between processes; flock() belongs to the open file description, which
 * all threads of a process share, so a mutex does the same between threads.
 *
 * A bound trail (cmk_audit_bind()) is keyed and anchored.  Each line carries
 * an HMAC under a key derived from the master key, so nobody without the
 * secret can append a line or re-chain edited ones.  Each append records its
 * last line (sequence number and MAC) in the store's anchor, in the same
 * transaction as the operation it records: lines removed from the end no
 * longer reach the anchor, and `cmkcert audit verify` says so.  Appenders
 * take the anchor (a store lock) before the file lock, always in that order.
 *
 * Lines are written with one write() and fsync'd before the append returns,
 * and the anchor commits after that: an audited action is not reported done
 * before its record is on disk.  A crash between the two leaves lines after
 * the anchor, which verify reports as unanchored; a crash in the middle of a
 * write leaves an incomplete last line, which the next append removes and
 * records (how many bytes, and their SHA-256) in a line of its own.  An
 * incomplete line that the anchor had recorded was not left by a crash: the
 * trail was cut, and appending stops until someone looks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
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
#include "audit_int.h"

#define APPEND_RETRIES 6

const char cmk_audit_zero_hash[AUDIT_HASH_HEX + 1] =
	"0000000000000000000000000000000000000000000000000000000000000000";

struct cmk_audit {
	pthread_mutex_t lock;
	int fd;
	pid_t pid;      /* process that opened fd; see own_fd() */
	char *path;
	struct cmk_store *store;              /* bound: anchor appends here */
	uint8_t key[32];                      /* bound: the MAC key */
	bool keyed;
};

/* What the last line of the trail says: the next line continues from it. */
struct tail {
	off_t size;
	off_t torn;             /* bytes of an incomplete last line removed (0 = none) */
	char torn_hash[AUDIT_HASH_HEX + 1];
	uint64_t seq;
	char hash[AUDIT_HASH_HEX + 1];
	bool has_mac;
	uint8_t mac[CMK_AUDIT_MAC_LEN];
};

void cmk_audit_hash(const char *data, size_t len, char out[AUDIT_HASH_HEX + 1])
{
	uint8_t digest[32];

	cmk_sha256(data, len, digest);
	cmk_hex(digest, sizeof(digest), out);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool cmk_audit_split_mac(const char *line, size_t len, uint8_t mac[CMK_AUDIT_MAC_LEN], size_t *body_len)
{
	static const char head[] = ",\"mac\":\"";
	const char *p;

	if (len < AUDIT_MAC_SUFFIX_LEN + 2 || line[len - 1] != '}' || line[len - 2] != '"')
		return false;
	p = line + len - AUDIT_MAC_SUFFIX_LEN;
	if (memcmp(p, head, sizeof(head) - 1) != 0)
		return false;
	p += sizeof(head) - 1;
	for (size_t i = 0; i < CMK_AUDIT_MAC_LEN; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	*body_len = len - AUDIT_MAC_SUFFIX_LEN;
	return true;
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
	cmk_freezero(a, sizeof(*a));
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

/*
 * Take the file lock of the trail the path names now: after a rotation
 * (cmk_audit_rotate()) the descriptor still points at the old file, whose
 * lock is then worth nothing.  Called under a->lock.
 */
static int lock_current(struct cmk_audit *a)
{
	for (int attempt = 0;; attempt++) {
		struct stat now, ours;
		int fd, rc;

		while ((rc = flock(a->fd, LOCK_EX)) != 0 && errno == EINTR)
			;
		if (rc != 0)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: lock: %s", a->path, strerror(errno));
		if (fstat(a->fd, &ours) == 0 && stat(a->path, &now) == 0 && now.st_dev == ours.st_dev &&
		    now.st_ino == ours.st_ino)
			return 0;
		flock(a->fd, LOCK_UN);
		if (attempt == 3)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s keeps changing under us", a->path);
		if ((rc = open_trail(a->path, &fd)) != 0)
			return rc;
		close(a->fd);
		a->fd = fd;
	}
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
	size_t body;
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
	t->has_mac = cmk_audit_split_mac(line, len, t->mac, &body);
	cmk_audit_hash(line, len, t->hash);
out:
	json_decref(obj);
	return rc;
}

/* The last complete line, which ends (with its newline) at `end`. */
static int read_last_line(struct cmk_audit *a, off_t end, struct tail *t)
{
	char *line;
	off_t start;
	size_t len;
	int rc;

	if (end == 0) {
		t->seq = 0;
		t->has_mac = false;
		memcpy(t->hash, cmk_audit_zero_hash, sizeof(t->hash));
		return 0;
	}
	if ((rc = find_line_start(a, end - 1, &start)) != 0)
		return rc;
	len = (size_t)(end - 1 - start);
	if ((line = malloc(len + 1)) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = read_at(a, line, len, start)) == 0)
		rc = parse_tail_line(a, line, len, t);
	free(line);
	return rc;
}

/*
 * What the end of the trail says.  Without its newline the last line was
 * cut short: t->torn is its length and t->torn_hash the SHA-256 of its
 * bytes, and t->size and the rest describe the file without it (nothing is
 * changed here).  The caller holds the lock.
 */
static int read_tail(struct cmk_audit *a, struct tail *t)
{
	struct stat sb;
	char last, *torn;
	off_t start;
	int rc;

	memset(t, 0, sizeof(*t));
	if (fstat(a->fd, &sb) != 0)
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: stat: %s", a->path, strerror(errno));
	t->size = sb.st_size;
	if (sb.st_size > 0) {
		if ((rc = read_at(a, &last, 1, sb.st_size - 1)) != 0)
			return rc;
		if (last != '\n') {
			if ((rc = find_line_start(a, sb.st_size, &start)) != 0)
				return rc;
			t->torn = sb.st_size - start;
			if ((torn = malloc((size_t)t->torn)) == NULL)
				return CMK_ERR_NOMEM;
			if ((rc = read_at(a, torn, (size_t)t->torn, start)) == 0)
				cmk_audit_hash(torn, (size_t)t->torn, t->torn_hash);
			free(torn);
			if (rc != 0)
				return rc;
			t->size = start;
		}
	}
	return read_last_line(a, t->size, t);
}

/*
 * May the trail be continued after `t`, given the store's anchor?  The
 * anchor names the last line an operation committed; a trail that ends
 * before it, or in another line at that position, was cut or rewritten.
 */
static int check_anchor(struct cmk_audit *a, const struct tail *t, const struct cmk_audit_anchor *anc)
{
	if (anc == NULL || anc->seq == 0)
		return 0;
	if (t->seq < anc->seq)
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: the trail %s line %" PRIu64 " but the store recorded line %"
				PRIu64 " as written: lines were removed from its end; not appending (run \"cmkcert "
				"audit verify\")", a->path, t->torn ? "is cut inside the line after" : "ends at",
				t->seq, anc->seq);
	if (t->seq == anc->seq && (!t->has_mac || memcmp(t->mac, anc->mac, sizeof(anc->mac)) != 0))
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: line %" PRIu64 " is not the line the store recorded: the "
				"trail was rewritten; not appending (run \"cmkcert audit verify\")", a->path, t->seq);
	return 0;
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

/*
 * The line for `ev` continuing `t`, with its newline; *out malloc'd.  With a
 * key the line ends in its MAC, copied to `mac`.
 */
static int build_line(const struct cmk_audit_event *ev, const struct tail *t, const uint8_t *key, char **out,
		      uint8_t mac[CMK_AUDIT_MAC_LEN])
{
	char now[64], hex[2 * CMK_AUDIT_MAC_LEN + 1], *text = NULL;
	json_t *o;
	size_t len;
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
	if (ev->count > 0)
		bad |= put_int(o, "count", (json_int_t)ev->count);
	bad |= put_str(o, "step", ev->step);
	bad |= put_str(o, "key_origin", ev->key_origin);
	bad |= put_str(o, "outcome", ev->outcome);
	bad |= put_str(o, "detail", ev->detail);
	bad |= put_str(o, "prev", t->hash);
	if (bad == 0)
		text = cmk_json_dump(o);
	json_decref(o);
	if (text == NULL)
		return CMK_ERR_NOMEM;
	if ((len = strlen(text)) + AUDIT_MAC_SUFFIX_LEN >= AUDIT_LINE_MAX) {
		free(text);
		return cmk_fail(CMK_ERR_INVALID, "audit: %s event longer than %d bytes", ev->event, AUDIT_LINE_MAX);
	}
	if (key == NULL) {
		*out = cmk_asprintf("%s\n", text);
	} else {
		/* The body is the object without its closing brace; the MAC member closes it. */
		cmk_hmac_sha256(key, 32, text, len - 1, mac);
		cmk_hex(mac, CMK_AUDIT_MAC_LEN, hex);
		*out = cmk_asprintf("%.*s,\"mac\":\"%s\"}\n", (int)(len - 1), text, hex);
	}
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

/*
 * Append under the file lock: check the end against the anchor, remove and
 * record an interrupted write, then chain the lines in memory and write them
 * with one write() and one fsync.  *last receives the last line written
 * (for the anchor) and *written whether anything reached the file.
 */
static int append_locked(struct cmk_audit *a, const struct cmk_audit_anchor *anc, const struct cmk_audit_event *evs,
			 size_t n, struct cmk_audit_anchor *last, bool *written)
{
	const uint8_t *key = a->keyed ? a->key : NULL;
	struct cmk_audit_event repair = CMK_AUDIT_EVENT_INIT;
	char detail[200], *line = NULL, *all = NULL;
	size_t used = 0, cap = 0, total = n;
	struct tail t;
	off_t start;
	int rc;

	*written = false;
	if ((rc = read_tail(a, &t)) != 0 || (rc = check_anchor(a, &t, anc)) != 0)
		return rc;
	if (t.torn > 0) {
		/* Never anchored (check_anchor() saw to that): the write of a process that died. */
		if (ftruncate(a->fd, t.size) != 0 || fsync(a->fd) != 0)
			return cmk_fail(CMK_ERR_AUDIT, "audit: %s: removing an incomplete last line: %s", a->path,
					strerror(errno));
		cmk_log(CMK_LOG_WARN, "audit: %s: removed an incomplete last line of %lld bytes left by an "
			"interrupted write", a->path, (long long)t.torn);
		snprintf(detail, sizeof(detail), "removed an incomplete last line of %lld bytes (sha256 %s) left by an "
			 "interrupted write", (long long)t.torn, t.torn_hash);
		repair.event = CMK_AUDIT_ERROR;
		repair.outcome = AUDIT_REPAIR_OUTCOME;
		repair.step = AUDIT_REPAIR_STEP;
		repair.detail = detail;
		total++;
	}
	start = t.size;
	for (size_t i = 0; i < total; i++) {
		const struct cmk_audit_event *ev = t.torn > 0 ? (i == 0 ? &repair : &evs[i - 1]) : &evs[i];
		size_t len;

		if ((rc = build_line(ev, &t, key, &line, t.mac)) != 0)
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
		t.has_mac = key != NULL;
		cmk_audit_hash(line, len - 1, t.hash);
		free(line);
		line = NULL;
	}
	if (total > 0) {
		if ((rc = write_line(a, all, start)) != 0)
			goto out;
		*written = true;
	}
	last->seq = t.seq;
	memcpy(last->mac, t.mac, sizeof(last->mac));
out:
	free(line);
	free(all);
	return rc;
}

static int check_events(const struct cmk_audit *a, const struct cmk_audit_event *evs, size_t n)
{
	if (a == NULL || (evs == NULL && n > 0))
		return cmk_fail(CMK_ERR_INVALID, "audit: no audit trail or no event");
	for (size_t i = 0; i < n; i++) {
		if (evs[i].event == NULL || *evs[i].event == '\0')
			return cmk_fail(CMK_ERR_INVALID, "audit: event name missing");
		if (evs[i].outcome == NULL || *evs[i].outcome == '\0')
			return cmk_fail(CMK_ERR_INVALID, "audit: %s: outcome missing", evs[i].event);
	}
	return 0;
}

/* The file side of an append: thread mutex, then the file lock. */
static int append_file(struct cmk_audit *a, const struct cmk_audit_anchor *anc, const struct cmk_audit_event *evs,
		       size_t n, struct cmk_audit_anchor *last, bool *written)
{
	int rc;

	*written = false;
	pthread_mutex_lock(&a->lock);
	if ((rc = own_fd(a)) != 0 || (rc = lock_current(a)) != 0)
		goto out;
	rc = append_locked(a, anc, evs, n, last, written);
	flock(a->fd, LOCK_UN);
out:
	pthread_mutex_unlock(&a->lock);
	return rc;
}

int cmk_audit_append_txn(struct cmk_audit *a, struct cmk_txn *txn, const struct cmk_audit_event *evs, size_t n)
{
	struct cmk_audit_anchor anc, last;
	bool written;
	int rc;

	if ((rc = check_events(a, evs, n)) != 0)
		return rc;
	if (a->store == NULL || txn == NULL)
		return append_file(a, NULL, evs, n, &last, &written);
	/* The anchor first: it is the lock that orders appenders of every process. */
	rc = cmk_store_audit_anchor_get(a->store, txn, &anc);
	if (rc == CMK_ERR_NOTFOUND) {
		memset(&anc, 0, sizeof(anc));
		rc = 0;
	}
	if (rc != 0)
		return rc;
	if ((rc = append_file(a, &anc, evs, n, &last, &written)) != 0)
		return rc;
	return written ? cmk_store_audit_anchor_put(txn, &last) : 0;
}

int cmk_audit_append_batch(struct cmk_audit *a, const struct cmk_audit_event *evs, size_t n)
{
	struct cmk_audit_anchor last;
	bool written;
	int rc;

	if ((rc = check_events(a, evs, n)) != 0)
		return rc;
	if (a->store == NULL)
		return append_file(a, NULL, evs, n, &last, &written);
	for (int attempt = 0;; attempt++) {
		struct cmk_txn *txn = NULL;

		if ((rc = cmk_store_begin(a->store, &txn)) == 0 && (rc = cmk_audit_append_txn(a, txn, evs, n)) == 0)
			return cmk_store_commit(txn);
		cmk_store_abort(txn);
		/* A deadlock or a recovered store before anything was written: take the anchor again. */
		if (rc != CMK_ERR_BUSY || attempt == APPEND_RETRIES)
			return rc;
		usleep(2000u << attempt);
	}
}

int cmk_audit_append(struct cmk_audit *a, const struct cmk_audit_event *ev)
{
	if (ev == NULL)
		return cmk_fail(CMK_ERR_INVALID, "audit: no audit trail or no event");
	return cmk_audit_append_batch(a, ev, 1);
}

void cmk_audit_bind(struct cmk_audit *a, struct cmk_store *st, const uint8_t key[32])
{
	a->store = st;
	memcpy(a->key, key, sizeof(a->key));
	a->keyed = true;
}

/* ---- rotation --------------------------------------------------------- */

/*
 * Under the anchor's and the file's lock: move the trail aside and start a
 * new one whose first line continues it (the next sequence number, the hash
 * of the old last line as prev, a MAC).
 */
static int rotate_locked(struct cmk_audit *a, const struct cmk_audit_anchor *anc, char *moved, size_t cap,
			 struct cmk_audit_anchor *last)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	char stamp[32], detail[PATH_MAX + 64], *line = NULL;
	struct tail t;
	time_t now = time(NULL);
	struct tm tm;
	int fd = -1, rc;

	if ((rc = read_tail(a, &t)) != 0 || (rc = check_anchor(a, &t, anc)) != 0)
		return rc;
	if (t.torn > 0 || t.seq == 0)
		return cmk_fail(CMK_ERR_STATE, "audit: %s: %s; nothing rotated", a->path,
				t.seq == 0 ? "the trail is empty" : "the last line is incomplete (the next append repairs it)");
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if ((size_t)snprintf(moved, cap, "%s.%s", a->path, stamp) >= cap)
		return cmk_fail(CMK_ERR_INVALID, "audit: %s: path too long", a->path);
	if (link(a->path, moved) != 0)
		return cmk_fail(CMK_ERR_AUDIT, "audit: %s: %s", moved, strerror(errno));
	/* The new file takes the name; the old one keeps its lines under the new name. */
	snprintf(detail, sizeof(detail), "%s.new", a->path);
	if ((fd = open(detail, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		rc = cmk_fail(CMK_ERR_AUDIT, "audit: %s: %s", detail, strerror(errno));
		unlink(moved);
		return rc;
	}
	ev.event = CMK_AUDIT_ROTATE;
	ev.outcome = "success";
	ev.step = AUDIT_REPAIR_STEP;
	{
		const char *base = strrchr(moved, '/');
		char d[PATH_MAX + 64];

		snprintf(d, sizeof(d), "continues %s (lines 1 to %" PRIu64 ")", base ? base + 1 : moved, t.seq);
		ev.detail = d;
		rc = build_line(&ev, &t, a->key, &line, t.mac);
	}
	if (rc == 0) {
		size_t len = strlen(line);
		if (write(fd, line, len) != (ssize_t)len || fsync(fd) != 0 || rename(detail, a->path) != 0)
			rc = cmk_fail(CMK_ERR_AUDIT, "audit: %s: %s", a->path, strerror(errno));
	}
	if (rc != 0) {
		unlink(detail);
		unlink(moved);
		close(fd);
		free(line);
		return rc;
	}
	sync_parent_dir(a->path);
	free(line);
	close(a->fd);
	a->fd = fd;
	last->seq = t.seq + 1;
	memcpy(last->mac, t.mac, sizeof(last->mac));
	return 0;
}

int cmk_audit_rotate(struct cmk_audit *a, char *moved_to, size_t cap)
{
	struct cmk_audit_anchor anc, last;
	struct cmk_txn *txn = NULL;
	int rc;

	if (a->store == NULL || !a->keyed)
		return cmk_fail(CMK_ERR_STATE, "audit: %s: only a keyed trail can be rotated", a->path);
	if ((rc = cmk_store_begin(a->store, &txn)) != 0)
		return rc;
	rc = cmk_store_audit_anchor_get(a->store, txn, &anc);
	if (rc == CMK_ERR_NOTFOUND) {
		memset(&anc, 0, sizeof(anc));
		rc = 0;
	}
	if (rc == 0) {
		pthread_mutex_lock(&a->lock);
		if ((rc = own_fd(a)) == 0 && (rc = lock_current(a)) == 0) {
			int old = a->fd;

			rc = rotate_locked(a, &anc, moved_to, cap, &last);
			/* Unlock the old file if the rotation failed; on success it is closed. */
			if (rc != 0)
				flock(old, LOCK_UN);
		}
		pthread_mutex_unlock(&a->lock);
	}
	if (rc == 0 && (rc = cmk_store_audit_anchor_put(txn, &last)) == 0)
		return cmk_store_commit(txn);
	cmk_store_abort(txn);
	return rc;
}
