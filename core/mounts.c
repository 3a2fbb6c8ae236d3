/*
 * mounts.c - the registry of running cmkcertfs mounts (see mounts.h).
 *
 * <store>/cmkcert.mounts is an array of REC_BYTES records.  Whether a record
 * is live is decided by the kernel, not by its bytes: its daemon holds an
 * open-file-description write lock (F_OFD_SETLK) on the record's range, the
 * same technique as cmkcert.procs in store_env.c.  An OFD lock belongs to the
 * descriptor, so nothing else the daemon opens or closes drops it, and it
 * goes away with the process however the process ends.  Readers ask with
 * F_OFD_GETLK and read only records that are held.
 *
 * Record layout (integers big-endian):
 *
 *      0  magic "CMKMNT01"
 *      8  pid
 *     16  registered at (wall clock, seconds)
 *     24  identity check: a hash of bytes 0..23 and the mountpoint
 *     64  seq         \
 *     72  updated_ms   > the published block, rewritten by one pwrite per tick
 *     80  check       /  check = mix(seq, updated_ms)
 *    128  mountpoint, NUL-terminated
 *
 * A pread() that overlaps a pwrite() of the same bytes may return a mix of
 * old and new bytes; the check values turn such a read into a mismatch, and
 * the reader reads again.  The identity is written once, right after the lock
 * is taken, and covered the same way, so a reader that finds a record held
 * but not written yet waits a moment for it too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/mounts.h"
#include "cmkcert/util.h"

#define MAGIC "CMKMNT01"
#define PID_AT 8
#define STARTED_AT 16
#define IDENT_CHECK_AT 24
#define IDENT_LEN 24                  /* bytes 0..23 are covered by the identity check */
#define PUB_AT 64
#define PUB_LEN 24
#define PATH_AT 128
#define REC_BYTES (PATH_AT + CMK_MOUNT_PATH_MAX)
#define FILE_MODE 0644
/* A held record that does not read consistently for READ_TRIES * READ_PAUSE_US is skipped (and logged). */
#define READ_TRIES 100
#define READ_PAUSE_US 200

struct cmk_mount_reg {
	int fd;
	off_t at;                     /* the record's offset */
	char *path;                   /* of the registry file, for messages */
};

/* ---- encoding -------------------------------------------------------------- */

static void put64(uint8_t *out, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		out[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *in)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | in[i];
	return v;
}

/* splitmix64's finalizer: every input bit moves every output bit. */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t pub_check(uint64_t seq, uint64_t updated_ms)
{
	return mix64(seq ^ mix64(updated_ms ^ 0x636d6b6d6f756e74ull));
}

/* FNV-1a over the identity bytes and the mountpoint (up to its NUL), finalized. */
static uint64_t ident_check(const uint8_t *rec)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < IDENT_LEN; i++)
		h = (h ^ rec[i]) * 0x100000001b3ull;
	for (size_t i = PATH_AT; i < REC_BYTES && rec[i] != '\0'; i++)
		h = (h ^ rec[i]) * 0x100000001b3ull;
	return mix64(h);
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void encode_pub(uint8_t *b, uint64_t seq, int64_t updated_ms)
{
	put64(b, seq);
	put64(b + 8, (uint64_t)updated_ms);
	put64(b + 16, pub_check(seq, (uint64_t)updated_ms));
}

/* A whole record read in one pread(): true when both its parts are consistent. */
static bool decode(const uint8_t *rec, int64_t now_ms, struct cmk_mount_info *m)
{
	const uint8_t *pub = rec + PUB_AT;
	uint64_t seq = get64(pub), updated = get64(pub + 8);

	if (memcmp(rec, MAGIC, 8) != 0 || memchr(rec + PATH_AT, '\0', CMK_MOUNT_PATH_MAX) == NULL ||
	    get64(rec + IDENT_CHECK_AT) != ident_check(rec) || get64(pub + 16) != pub_check(seq, updated))
		return false;
	memset(m, 0, sizeof(*m));
	m->pid = (pid_t)get64(rec + PID_AT);
	memcpy(m->mountpoint, rec + PATH_AT, CMK_MOUNT_PATH_MAX);
	m->seq = seq;
	m->updated_ms = (int64_t)updated;
	m->age_ms = updated == 0 ? -1 : now_ms > (int64_t)updated ? now_ms - (int64_t)updated : 0;
	return true;
}

/* ---- the file ---------------------------------------------------------------- */

static int check_store_dir(const char *store_dir)
{
	struct stat sb;

	if (store_dir == NULL || store_dir[0] == '\0')
		return cmk_fail(CMK_ERR_INVALID, "mounts: no store directory given");
	if (stat(store_dir, &sb) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return cmk_fail(CMK_ERR_NOTFOUND, "mounts: %s: no such store directory", store_dir);
		return cmk_fail(errno == EACCES ? CMK_ERR_PERM : CMK_ERR_IO, "mounts: %s: %s", store_dir,
				strerror(errno));
	}
	if (!S_ISDIR(sb.st_mode))
		return cmk_fail(CMK_ERR_INVALID, "mounts: %s: not a directory (the store is a directory)", store_dir);
	return 0;
}

/*
 * Open the registry: read-write and created when `create`, else read-only;
 * *fd = -1 (and 0) when it does not exist and may not be created.
 */
static int open_registry(const char *store_dir, bool create, int *fd, char **path_out)
{
	int flags = (create ? O_RDWR | O_CREAT : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
	struct stat sb;
	char *path;
	int rc;

	*fd = -1;
	if ((rc = check_store_dir(store_dir)) != 0)
		return rc;
	if ((path = cmk_asprintf("%s/%s", store_dir, CMK_MOUNTS_FILE)) == NULL)
		return CMK_ERR_NOMEM;
	/* O_NONBLOCK: a FIFO planted under the name must not hang the open. */
	if ((*fd = open(path, flags, FILE_MODE)) < 0) {
		int err = errno;
		rc = err == ENOENT && !create ? 0 :
		     err == ELOOP ? cmk_fail(CMK_ERR_INVALID, "mounts: %s: a symbolic link", path) :
		     cmk_fail(err == EACCES || err == EPERM ? CMK_ERR_PERM : CMK_ERR_IO, "mounts: %s: %s", path,
			      strerror(err));
		goto out;
	}
	if (fstat(*fd, &sb) != 0) {
		rc = cmk_fail(CMK_ERR_IO, "mounts: %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = cmk_fail(CMK_ERR_INVALID, "mounts: %s: not a regular file", path);
		goto out;
	}
	if (sb.st_uid == geteuid()) {
		/* Ours: whatever the umask made of it, readable by whoever may enter the store directory. */
		if (create && (sb.st_mode & 07777) != FILE_MODE && fchmod(*fd, FILE_MODE) != 0)
			rc = cmk_fail(CMK_ERR_IO, "mounts: %s: chmod: %s", path, strerror(errno));
	} else if ((sb.st_mode & 022) != 0) {
		rc = cmk_fail(CMK_ERR_PERM, "mounts: %s: owned by uid %u and writable by group or others (mode %04o)",
			      path, (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777));
	}
out:
	if (rc != 0 && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	if (rc == 0 && *fd >= 0 && path_out != NULL)
		*path_out = path;
	else
		free(path);
	return rc;
}

/* ---- the daemon's side --------------------------------------------------------- */

/* 1 when the record at `at` is now ours, 0 when another process holds it. */
static int claim(int fd, off_t at)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = REC_BYTES };

	while (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EACCES ? 0 : -errno;
	}
	return 1;
}

int cmk_mounts_register(const char *store_dir, const char *mountpoint, struct cmk_mount_reg **out)
{
	struct cmk_mount_reg *r = NULL;
	uint8_t *rec = NULL;
	size_t len;
	int rc, got = 0;

	*out = NULL;
	if (mountpoint == NULL || mountpoint[0] != '/')
		return cmk_fail(CMK_ERR_INVALID, "mounts: mountpoint \"%s\": not an absolute path",
				mountpoint ? mountpoint : "");
	if ((len = strlen(mountpoint)) >= CMK_MOUNT_PATH_MAX)
		return cmk_fail(CMK_ERR_INVALID, "mounts: mountpoint: %zu bytes, at most %d", len,
				CMK_MOUNT_PATH_MAX - 1);
	if ((r = calloc(1, sizeof(*r))) == NULL || (rec = calloc(1, REC_BYTES)) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	if ((rc = open_registry(store_dir, true, &r->fd, &r->path)) != 0)
		goto out;
	for (int i = 0; i < CMK_MOUNTS_MAX && got == 0; i++) {
		r->at = (off_t)i * REC_BYTES;
		got = claim(r->fd, r->at);
	}
	if (got < 0) {
		rc = cmk_fail(CMK_ERR_IO, "mounts: %s: lock: %s", r->path, strerror(-got));
		goto out;
	}
	if (got == 0) {
		rc = cmk_fail(CMK_ERR_BUSY, "mounts: %s: all %d records are held by running daemons", r->path,
			      CMK_MOUNTS_MAX);
		goto out;
	}
	/* The whole record in one write; until it lands, readers find it inconsistent and read again. */
	memcpy(rec, MAGIC, 8);
	put64(rec + PID_AT, (uint64_t)getpid());
	put64(rec + STARTED_AT, (uint64_t)cmk_now());
	memcpy(rec + PATH_AT, mountpoint, len + 1);
	put64(rec + IDENT_CHECK_AT, ident_check(rec));
	encode_pub(rec + PUB_AT, 0, 0);
	errno = 0;
	if (pwrite(r->fd, rec, REC_BYTES, r->at) != (ssize_t)REC_BYTES) {
		rc = cmk_fail(CMK_ERR_IO, "mounts: %s: write: %s", r->path, errno ? strerror(errno) : "short write");
		goto out;
	}
	*out = r;
	r = NULL;
out:
	free(rec);
	cmk_mounts_unregister(r);
	return rc;
}

int cmk_mounts_publish(struct cmk_mount_reg *r, uint64_t seq)
{
	uint8_t b[PUB_LEN];

	if (r == NULL)
		return cmk_fail(CMK_ERR_INVALID, "mounts: publish without a registration");
	encode_pub(b, seq, wall_ms());
	errno = 0;
	if (pwrite(r->fd, b, sizeof(b), r->at + PUB_AT) != (ssize_t)sizeof(b))
		return cmk_fail(CMK_ERR_IO, "mounts: %s: write: %s", r->path, errno ? strerror(errno) : "short write");
	return 0;
}

void cmk_mounts_unregister(struct cmk_mount_reg *r)
{
	uint8_t zero[PATH_AT] = { 0 };

	if (r == NULL)
		return;
	if (r->fd >= 0) {
		/* Only a hint for someone reading the file by hand: the lock going away is what counts. */
		if (r->at >= 0 && pwrite(r->fd, zero, sizeof(zero), r->at) < 0)
			cmk_log(CMK_LOG_DEBUG, "mounts: %s: %s", r->path, strerror(errno));
		close(r->fd);
	}
	free(r->path);
	free(r);
}

/* ---- readers ------------------------------------------------------------------- */

/* 1 and *m when the record at `at` is live, 0 when it is free. */
static int read_slot(int fd, const char *path, off_t at, uint8_t *rec, struct cmk_mount_info *m)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = REC_BYTES };
	struct timespec pause = { 0, READ_PAUSE_US * 1000L };

	while (fcntl(fd, F_OFD_GETLK, &fl) != 0)
		if (errno != EINTR)
			return cmk_fail(CMK_ERR_IO, "mounts: %s: lock test: %s", path, strerror(errno));
	if (fl.l_type == F_UNLCK)
		return 0;
	for (int i = 0; i < READ_TRIES; i++) {
		ssize_t got = pread(fd, rec, REC_BYTES, at);
		if (got < 0 && errno != EINTR)
			return cmk_fail(CMK_ERR_IO, "mounts: %s: read: %s", path, strerror(errno));
		if (got == (ssize_t)REC_BYTES && decode(rec, wall_ms(), m))
			return 1;
		nanosleep(&pause, NULL);
	}
	cmk_log(CMK_LOG_WARN, "mounts: %s: the record at %lld is held by a running process but does not read "
		"consistently; skipped", path, (long long)at);
	return 0;
}

/* Every live record of an open registry. */
static int scan(int fd, const char *path, struct cmk_mount_info **out, size_t *n)
{
	struct cmk_mount_info *v = NULL;
	uint8_t *rec = NULL;
	struct stat sb;
	size_t slots, count = 0;
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (fstat(fd, &sb) != 0)
		return cmk_fail(CMK_ERR_IO, "mounts: %s: %s", path, strerror(errno));
	slots = ((size_t)sb.st_size + REC_BYTES - 1) / REC_BYTES;
	if (slots > CMK_MOUNTS_MAX)
		slots = CMK_MOUNTS_MAX;
	if (slots == 0)
		return 0;
	if ((v = calloc(slots, sizeof(*v))) == NULL || (rec = malloc(REC_BYTES)) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < slots; i++) {
		rc = read_slot(fd, path, (off_t)(i * REC_BYTES), rec, &v[count]);
		if (rc < 0)
			goto out;
		count += (size_t)rc;
		rc = 0;
	}
out:
	free(rec);
	if (rc != 0 || count == 0) {
		free(v);
		return rc;
	}
	*out = v;
	*n = count;
	return 0;
}

int cmk_mounts_live(const char *store_dir, struct cmk_mount_info **out, size_t *n)
{
	char *path = NULL;
	int fd, rc;

	*out = NULL;
	*n = 0;
	if ((rc = open_registry(store_dir, false, &fd, &path)) != 0 || fd < 0)
		return rc;
	rc = scan(fd, path, out, n);
	close(fd);
	free(path);
	return rc;
}

int cmk_mounts_wait(const char *store_dir, uint64_t seq, int64_t deadline_ms, struct cmk_mount_info **out,
		    size_t *n)
{
	char *path = NULL;
	int fd, rc;

	*out = NULL;
	*n = 0;
	if ((rc = open_registry(store_dir, false, &fd, &path)) != 0 || fd < 0)
		return rc;
	for (;;) {
		const struct cmk_mount_info *behind = NULL;
		int64_t left;

		if ((rc = scan(fd, path, out, n)) != 0)
			break;
		for (size_t i = 0; i < *n && behind == NULL; i++)
			if ((*out)[i].seq < seq)
				behind = &(*out)[i];
		if (behind == NULL)
			break;
		if ((left = deadline_ms - cmk_monotonic_ms()) <= 0) {
			char age[64] = "no update yet";
			if (behind->age_ms >= 0)
				snprintf(age, sizeof(age), "last update %.1f s ago", (double)behind->age_ms / 1000.0);
			rc = cmk_fail(CMK_ERR_TIMEOUT, "mounts: %s (cmkcertfs pid %d) serves change %llu, not yet %llu "
				      "(%s)", behind->mountpoint, (int)behind->pid, (unsigned long long)behind->seq,
				      (unsigned long long)seq, age);
			break;
		}
		cmk_mounts_free(*out);
		*out = NULL;
		*n = 0;
		{
			int64_t ms = left < CMK_MOUNTS_POLL_MS ? left : CMK_MOUNTS_POLL_MS;
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
	close(fd);
	free(path);
	return rc;
}

void cmk_mounts_free(struct cmk_mount_info *v)
{
	free(v);
}
