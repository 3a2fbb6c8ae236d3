/*
 * store_keys.c - where sealed private keys live, and how they are shredded.
 *
 * A destroyed key must leave every store file (DESIGN §5).  Kept inside a
 * certificate record, its bytes would survive any number of ways: a B-tree
 * shifts the other items of a page over a deleted one and leaves their old
 * bytes in the free space, and frees overflow pages without clearing them.
 * So each sealed key has a slot of its own in keys.db, a Queue database:
 * fixed-length records at fixed places in their pages, never moved.
 * Destroying a key overwrites its slot with zeros in place, and the slot is
 * reused later (keyfree.db lists the free ones).
 *
 * Berkeley DB also logs every change with the bytes it replaced, and keeps
 * recent log records in a shared buffer.  cmk_store_shred() is the bounded
 * step that makes those go: it fills the current log file up (with
 * Berkeley DB's own debug records, which every Berkeley DB tool reads) so
 * that the log moves to a new file, takes a checkpoint, and overwrites and
 * removes every log file recovery no longer needs.  Old log files are
 * removed that way at every checkpoint too, never merely unlinked.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "store_bdb_int.h"

#define KEYS_PAGE 16384
#define PAD_BYTES 2000                 /* one debug record of the log padding (the limit is 2048) */
#define ZERO_CHUNK 65536

/*
 * Slots come in three sizes, each a Queue database of its own: a key takes
 * the smallest that holds it, so an EC key does not fill a slot made for
 * RSA-4096.  A slot number carries its size class in its top two bits
 * (class 0, keys.db, is the one every older store has: its numbers are
 * unchanged); keyfree.db lists free slots by that number, so the free
 * slots of one class are one range of its keys.  Sizes: 32 small slots
 * (EC up to P-521 sealed, about 420 bytes) fill a page, 6 middle ones
 * (RSA-3072 sealed, about 2.5 KB), 4 large ones (RSA-4096, about 3.3 KB).
 */
#define CLASS_SHIFT 30
#define SLOT_MASK ((1u << CLASS_SHIFT) - 1)

struct slot_class {
	const char *file;
	u_int32_t len;                 /* record length: a 4-byte length and the blob */
};

static const struct slot_class classes[CMK_KEY_CLASSES] = {
	{ "keys.db", CMK_KEY_SLOT_LEN },
	{ "keys_small.db", 507 },
	{ "keys_mid.db", 2700 },
};

_Static_assert(CMK_KEY_SLOT_LEN + 64 < KEYS_PAGE, "a key slot must fit a page");

static unsigned slot_class_of(uint32_t slot)
{
	return slot >> CLASS_SHIFT;
}

/* The smallest class whose slots hold a blob of `len` bytes (len fits the largest). */
static unsigned class_for(size_t len)
{
	unsigned best = 0;

	for (unsigned c = 1; c < CMK_KEY_CLASSES; c++)
		if (len + 4 <= classes[c].len && classes[c].len < classes[best].len)
			best = c;
	return best;
}

static int open_class(struct store_gen *g, DB_TXN *t, unsigned c)
{
	DB *db = NULL;
	int ret;

	if ((ret = db_create(&db, g->env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating a handle for %s", g->st->path, classes[c].file);
	if ((ret = db->set_pagesize(db, KEYS_PAGE)) != 0 || (ret = db->set_re_len(db, classes[c].len)) != 0 ||
	    (ret = db->set_re_pad(db, 0)) != 0 ||
	    (ret = db->open(db, t, classes[c].file, NULL, DB_QUEUE, DB_CREATE | DB_THREAD, 0600)) != 0) {
		db->close(db, DB_NOSYNC);
		return db_fail(g, ret, "store_open: %s: opening %s", g->st->path, classes[c].file);
	}
	g->keys[c] = db;
	return 0;
}

int store_keys_open(struct store_gen *g, DB_TXN *t)
{
	DB *db = NULL;
	int ret, rc;

	for (unsigned c = 0; c < CMK_KEY_CLASSES; c++)
		if ((rc = open_class(g, t, c)) != 0)
			return rc;
	if ((ret = db_create(&db, g->env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating a handle for keyfree.db", g->st->path);
	if ((ret = db->open(db, t, "keyfree.db", NULL, DB_BTREE, DB_CREATE | DB_THREAD, 0600)) != 0) {
		db->close(db, DB_NOSYNC);
		return db_fail(g, ret, "store_open: %s: opening keyfree.db", g->st->path);
	}
	g->keyfree = db;
	return 0;
}

static void dbt_set(DBT *d, void *p, size_t n)
{
	memset(d, 0, sizeof(*d));
	d->data = p;
	d->size = (u_int32_t)n;
}

int store_key_read(struct store_gen *g, DB_TXN *t, uint32_t slot, u_int32_t rmw, uint8_t **blob, size_t *len)
{
	unsigned c = slot_class_of(slot);
	db_recno_t recno = slot & SLOT_MASK;
	uint8_t *buf;
	DBT k, d;
	uint32_t n;
	int ret, rc = 0;

	*blob = NULL;
	*len = 0;
	if (c >= CMK_KEY_CLASSES || recno == 0)
		return cmk_fail(CMK_ERR_STORE, "store: %s: key slot %#" PRIx32 " is damaged", g->st->path, slot);
	if ((buf = malloc(classes[c].len)) == NULL)
		return CMK_ERR_NOMEM;
	dbt_set(&k, &recno, sizeof(recno));
	dbt_set(&d, buf, 0);
	d.ulen = classes[c].len;
	d.flags = DB_DBT_USERMEM;
	if ((ret = g->keys[c]->get(g->keys[c], t, &k, &d, rmw)) != 0) {
		rc = db_fail(g, ret, "store: %s: reading key slot %#" PRIx32, g->st->path, slot);
		goto out;
	}
	n = cmk_be32_get(buf);
	if (d.size != classes[c].len || n == 0 || n > classes[c].len - 4) {
		rc = cmk_fail(CMK_ERR_STORE, "store: %s: key slot %#" PRIx32 " is empty or damaged", g->st->path,
			      slot);
		goto out;
	}
	if ((*blob = malloc(n)) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	memcpy(*blob, buf + 4, n);
	*len = n;
out:
	cmk_freezero(buf, classes[c].len);
	return rc;
}

/* The lowest free slot of class c, taken off the free list; 0 when there is none. */
static int take_free(struct store_gen *g, DB_TXN *t, unsigned c, uint32_t *slot)
{
	uint8_t kb[4];
	DBT fk, fd;
	DBC *cur;
	int ret;

	*slot = 0;
	if ((ret = g->keyfree->cursor(g->keyfree, t, &cur, 0)) != 0)
		return db_fail(g, ret, "store: %s: reading free key slots", g->st->path);
	cmk_be32_put(kb, (uint32_t)c << CLASS_SHIFT);
	dbt_set(&fk, kb, sizeof(kb));
	fk.ulen = sizeof(kb);
	fk.flags = DB_DBT_USERMEM;
	memset(&fd, 0, sizeof(fd));
	fd.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL;
	ret = cur->get(cur, &fk, &fd, DB_SET_RANGE | DB_RMW);
	if (ret == 0 && fk.size == sizeof(kb) && slot_class_of(cmk_be32_get(kb)) == c) {
		*slot = cmk_be32_get(kb);
		ret = cur->del(cur, 0);
	} else if (ret == 0) {
		ret = DB_NOTFOUND;
	}
	cur->close(cur);
	if (ret != 0 && ret != DB_NOTFOUND)
		return db_fail(g, ret, "store: %s: taking a free key slot", g->st->path);
	return 0;
}

/*
 * Write `len` bytes of blob into slot *slot (0: zeros over the whole slot),
 * or, when *slot is 0, into a free or new slot of class c.
 */
static int slot_write(struct store_gen *g, DB_TXN *t, unsigned c, uint32_t *slot, const uint8_t *blob, size_t len)
{
	uint8_t *buf;
	db_recno_t recno;
	uint32_t taken = *slot;
	DBT k, d;
	int ret, rc = 0;

	if (taken != 0)
		c = slot_class_of(taken);
	if (c >= CMK_KEY_CLASSES || len + 4 > classes[c].len)
		return cmk_fail(CMK_ERR_STORE, "store: %s: key slot %#" PRIx32 " is damaged", g->st->path, taken);
	if ((buf = calloc(1, classes[c].len)) == NULL)
		return CMK_ERR_NOMEM;
	if (len > 0) {
		cmk_be32_put(buf, (uint32_t)len);
		memcpy(buf + 4, blob, len);
	}
	dbt_set(&d, buf, classes[c].len);
	/* The lowest free slot, if any: it holds zeros since its key was destroyed. */
	if (taken == 0 && (rc = take_free(g, t, c, &taken)) != 0)
		goto out;
	recno = taken & SLOT_MASK;
	dbt_set(&k, &recno, sizeof(recno));
	if (recno == 0) {
		k.ulen = sizeof(recno);
		k.flags = DB_DBT_USERMEM;
		ret = g->keys[c]->put(g->keys[c], t, &k, &d, DB_APPEND);
	} else {
		ret = g->keys[c]->put(g->keys[c], t, &k, &d, 0);
	}
	if (ret != 0) {
		rc = db_fail(g, ret, "store: %s: writing key slot %" PRIu32 " of %s", g->st->path, (uint32_t)recno,
			     classes[c].file);
		goto out;
	}
	if (recno > SLOT_MASK) {
		rc = cmk_fail(CMK_ERR_STORE, "store: %s: %s has no slot numbers left", g->st->path, classes[c].file);
		goto out;
	}
	*slot = (uint32_t)c << CLASS_SHIFT | recno;
out:
	cmk_freezero(buf, classes[c].len);
	return rc;
}

int store_key_write(struct store_gen *g, DB_TXN *t, uint32_t *slot, const uint8_t *blob, size_t len)
{
	/* A store still shared with older code (format 1) keeps every key where that code looks: keys.db. */
	unsigned c = g->format == CMK_STORE_FORMAT ? class_for(len) : 0;
	int rc;

	if (len == 0 || len > CMK_KEY_SLOT_LEN - 4)
		return cmk_fail(CMK_ERR_INVALID, "store: a sealed key of %zu bytes does not fit a key slot (at most "
				"%d)", len, CMK_KEY_SLOT_LEN - 4);
	/* A key that needs another size than the slot it replaces moves: the old slot is destroyed. */
	if (*slot != 0 && slot_class_of(*slot) != c) {
		if ((rc = store_key_destroy(g, t, *slot)) != 0)
			return rc;
		*slot = 0;
	}
	return slot_write(g, t, c, slot, blob, len);
}

int store_key_wipe(struct store_gen *g, DB_TXN *t, uint32_t slot)
{
	uint8_t kb[4], one = 1;
	DBT k, d;
	int ret, rc;

	/* In place: the page keeps the zeros where the key was. */
	if ((rc = slot_write(g, t, 0, &slot, NULL, 0)) != 0)
		return rc;
	cmk_be32_put(kb, slot);
	dbt_set(&k, kb, sizeof(kb));
	dbt_set(&d, &one, 0);
	if ((ret = g->keyfree->put(g->keyfree, t, &k, &d, 0)) != 0)
		return db_fail(g, ret, "store: %s: freeing key slot %#" PRIx32, g->st->path, slot);
	return 0;
}

int store_key_destroy(struct store_gen *g, DB_TXN *t, uint32_t slot)
{
	int rc;

	if ((rc = store_key_wipe(g, t, slot)) != 0)
		return rc;
	return store_note_destroyed(g, t);
}

void store_keys_close(struct store_gen *g, u_int32_t flags)
{
	if (g->keyfree != NULL)
		g->keyfree->close(g->keyfree, flags);
	g->keyfree = NULL;
	for (unsigned c = 0; c < CMK_KEY_CLASSES; c++) {
		if (g->keys[c] != NULL)
			g->keys[c]->close(g->keys[c], flags);
		g->keys[c] = NULL;
	}
}

/* ---- log files -------------------------------------------------------- */

/* Overwrite a file with zeros, sync it, then remove it. */
static int overwrite_remove(const char *path)
{
	static const uint8_t zeros[ZERO_CHUNK];
	struct stat sb;
	off_t off = 0;
	int fd, rc = 0;

	if ((fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return errno == ENOENT ? 0 : cmk_fail(CMK_ERR_IO, "store: %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0) {
		rc = cmk_fail(CMK_ERR_IO, "store: %s: %s", path, strerror(errno));
		goto out;
	}
	while (off < sb.st_size) {
		size_t n = sb.st_size - off < ZERO_CHUNK ? (size_t)(sb.st_size - off) : ZERO_CHUNK;
		ssize_t w = pwrite(fd, zeros, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = cmk_fail(CMK_ERR_IO, "store: %s: overwriting: %s", path, strerror(errno));
			goto out;
		}
		off += w;
	}
	if (fdatasync(fd) != 0)
		rc = cmk_fail(CMK_ERR_IO, "store: %s: %s", path, strerror(errno));
out:
	close(fd);
	if (rc == 0 && unlink(path) != 0 && errno != ENOENT)
		rc = cmk_fail(CMK_ERR_IO, "store: %s: %s", path, strerror(errno));
	return rc;
}

int store_remove_old_logs(struct store_gen *g, unsigned *removed)
{
	char **list = NULL;
	int ret, rc = 0;

	*removed = 0;
	if ((ret = g->env->log_archive(g->env, &list, DB_ARCH_ABS)) != 0)
		return db_fail(g, ret, "store: %s: listing old log files", g->st->path);
	for (char **p = list; p != NULL && *p != NULL && rc == 0; p++)
		if ((rc = overwrite_remove(*p)) == 0)
			(*removed)++;
	free(list);
	return rc;
}

/* The current log file's number. */
static int log_file_now(struct store_gen *g, u_int32_t *file)
{
	DB_LOG_STAT *sp = NULL;
	int ret;

	if ((ret = g->env->log_stat(g->env, &sp, 0)) != 0)
		return db_fail(g, ret, "store: %s: log state", g->st->path);
	*file = sp->st_cur_file;
	free(sp);
	return 0;
}

/*
 * Move the log to a new file: debug records until the file number changes,
 * and at least the log buffer's size of them, so that the shared buffer no
 * longer holds any record from before either.
 */
static int log_next_file(struct store_gen *g)
{
	char pad[PAD_BYTES + 1];
	u_int32_t start, now;
	size_t written = 0;
	int ret, rc;

	memset(pad, '.', PAD_BYTES);
	pad[PAD_BYTES] = '\0';
	if ((rc = log_file_now(g, &start)) != 0)
		return rc;
	for (now = start; now == start || written < 2 * CMK_LOG_BUFFER_BYTES;) {
		if ((ret = g->env->log_printf(g->env, NULL, "cmkcert shred %s", pad)) != 0)
			return db_fail(g, ret, "store: %s: writing the log padding", g->st->path);
		written += PAD_BYTES;
		if ((rc = log_file_now(g, &now)) != 0)
			return rc;
		if (written > 4u * CMK_LOG_FILE_BYTES)
			return cmk_fail(CMK_ERR_STORE, "store: %s: the log did not move to a new file", g->st->path);
	}
	if ((ret = g->env->log_flush(g->env, NULL)) != 0)
		return db_fail(g, ret, "store: %s: flushing the log", g->st->path);
	return 0;
}

int cmk_store_shred(struct cmk_store *st, struct cmk_shred_stats *stats)
{
	struct store_gen *g;
	uint64_t destroyed, shredded;
	unsigned removed = 0;
	int ret, rc;

	memset(stats, 0, sizeof(*stats));
	if ((rc = gen_enter(st, &g)) != 0)
		return rc;
	/* Keys destroyed after this point may have log records in the new file: they count for the next shred. */
	if ((rc = store_shred_mark(g, &destroyed, &shredded)) != 0)
		goto out;
	/* Pages first (the zeros reach keys.db), then the log moves on, then the old files go. */
	if ((ret = g->env->txn_checkpoint(g->env, 0, 0, DB_FORCE)) != 0) {
		rc = db_fail(g, ret, "store: %s: checkpoint", st->path);
		goto out;
	}
	if ((rc = log_next_file(g)) != 0)
		goto out;
	if ((ret = g->env->txn_checkpoint(g->env, 0, 0, DB_FORCE)) != 0) {
		rc = db_fail(g, ret, "store: %s: checkpoint", st->path);
		goto out;
	}
	if ((rc = store_remove_old_logs(g, &removed)) != 0)
		goto out;
	stats->logs_removed = removed;
	stats->keys = destroyed - shredded;
	rc = store_shred_done(g, destroyed);
out:
	gen_leave(g);
	return rc;
}
