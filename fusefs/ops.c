/*
 * ops.c - the FUSE low-level operations of cmkcertfs: names, attributes,
 * directory listings, the announcer's renames and unlinks, and EROFS for
 * every other change.
 * Opening and reading files is in file.c.
 *
 * Every handler answers from the in-memory tree under its lock and replies
 * after unlocking; none reads the store or waits for the network.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "access.h"
#include "announce.h"
#include "file.h"
#include "tree.h"

static struct cmkfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void fill_entry(struct fuse_entry_param *e, const struct tree *t, const struct node *n)
{
	memset(e, 0, sizeof(*e));
	e->ino = n->ino;
	e->generation = 1;
	e->attr_timeout = CMKFS_ATTR_TIMEOUT;
	e->entry_timeout = CMKFS_ENTRY_TIMEOUT;
	tree_stat(t, n, &e->attr);
	/* A name only the announcer sees (pending or leaving) is not for the kernel to keep. */
	if (!tree_node_visible(t, n))
		e->entry_timeout = e->attr_timeout = 0;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/*
	 * Changes are pushed to the kernel explicitly (watch.c).  Automatic
	 * invalidation would make the kernel ask for attributes before reads.
	 * Always use readdirplus: `ls -l` of a large /certs then needs no
	 * lookup per name.
	 */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

/*
 * A lookup answers the same to every caller, also for key files the caller
 * may not open (their listings are per caller, see op_opendir()).  The
 * kernel's name cache is shared by all users: a name found for root is then
 * found by everyone without asking the daemon, and a "no such file" given to
 * one user would be cached and hide the file from its owner for a while.
 * So the open fails with EACCES, as for any file one may not read, and is
 * audited; a name is not listed to those who may not open it, but someone
 * who knows a tenant id can still confirm that its file exists.
 */
static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct cmkfs *fs = fs_of(req);
	bool announcer = announcer_is_caller(fs, req), nomem;
	struct fuse_entry_param e;
	struct node *n;

	tree_lock(fs->tree);
	n = tree_lookup_ref(fs->tree, parent, name, announcer, &nomem);
	if (n != NULL)
		fill_entry(&e, fs->tree, n);
	tree_unlock(fs->tree);
	if (n == NULL) {
		if (nomem) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		/* A negative entry the kernel may cache briefly (see CMKFS_NEGATIVE_TIMEOUT). */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = CMKFS_NEGATIVE_TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	if (fuse_reply_entry(req, &e) != 0) {
		/* The kernel did not take the reference (interrupted lookup). */
		tree_lock(fs->tree);
		tree_forget(fs->tree, e.ino, 1);
		tree_unlock(fs->tree);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct cmkfs *fs = fs_of(req);

	tree_lock(fs->tree);
	tree_forget(fs->tree, ino, nlookup);
	tree_unlock(fs->tree);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct cmkfs *fs = fs_of(req);

	tree_lock(fs->tree);
	for (size_t i = 0; i < count; i++)
		tree_forget(fs->tree, forgets[i].ino, forgets[i].nlookup);
	tree_unlock(fs->tree);
	fuse_reply_none(req);
}

/*
 * With default_permissions the kernel refuses a read it does not allow
 * without asking the daemon; right after such a refusal it fetches the
 * attributes once more with the caller's credentials.  A getattr of a key
 * file by a caller who may not read it is therefore audited as a refusal
 * (a plain stat() by such a caller after the attributes were invalidated
 * is recorded the same way; the detail says it was a permission check).
 */
static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cmkfs *fs = fs_of(req);
	struct fsver *v = NULL;
	char path[TREE_NAME_MAX * 2];
	struct node *n;
	struct stat st;

	/*
	 * Asked through an open file (the kernel does so when a cached read
	 * reaches the size it knows): answer with that handle's version, so an
	 * older reader is not cut short by a newer version's size.  Such an
	 * answer must not outlive the read: no caching unless it is current.
	 */
	if (fi != NULL) {
		bool current = file_stat(fs, fi, &st);
		fuse_reply_attr(req, &st, current ? CMKFS_ATTR_TIMEOUT : 0.0);
		return;
	}
	tree_lock(fs->tree);
	n = tree_node(fs->tree, ino);
	if (n != NULL) {
		tree_stat(fs->tree, n, &st);
		if (node_has_key(n)) {
			v = fsver_ref(n->ver);
			tree_path(fs->tree, n, path, sizeof(path));
		}
	}
	tree_unlock(fs->tree);
	if (n == NULL) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (v != NULL && !access_may_read(req, st.st_uid, st.st_gid, st.st_mode))
		file_audit_refused(fs, req, path, v);
	fsver_unref(v);
	fuse_reply_attr(req, &st, CMKFS_ATTR_TIMEOUT);
}

/* Keep only the entries of `s` that the caller of `req` may open. */
static void keep_readable(fuse_req_t req, struct dirsnap *s)
{
	struct access_caller who;
	size_t kept = 0;

	access_caller_init(&who, req);
	for (size_t i = 0; i < s->n; i++)
		if (s->e[i].dir || access_caller_may_read(&who, s->e[i].uid, s->e[i].gid, s->e[i].mode))
			s->e[kept++] = s->e[i];
	s->n = kept;
	access_caller_done(&who);
}

/*
 * /private, /bundle and the /tls/<s> directories list only what the caller
 * may open: key files' names carry tenant ids, which are not everyone's to
 * enumerate.  The listing is chosen for the process that opens the
 * directory, the way a file's permissions are checked when it is opened;
 * the permission check runs outside the tree lock (it may read the caller's
 * groups from /proc).  /certs, /ca and /tls list everything: certificates
 * and chains are public material.
 */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	bool per_caller = ino == INO_PRIVATE || ino == INO_BUNDLE || ino > N_DIRS;
	struct cmkfs *fs = fs_of(req);
	struct dirsnap *s;
	int err = 0;

	tree_lock(fs->tree);
	s = tree_dir_snapshot(fs->tree, ino, &err);
	tree_unlock(fs->tree);
	if (err != 0) {
		fuse_reply_err(req, err);
		return;
	}
	if (per_caller)
		keep_readable(req, s);
	fi->fh = (uintptr_t)s;
	/*
	 * The kernel may cache a listing; watch.c invalidates the directory when
	 * it changes.  Its cache is one per directory, shared by all callers:
	 * not for listings made for one caller.
	 */
	fi->cache_readdir = per_caller ? 0 : 1;
	fi->keep_cache = per_caller ? 0 : 1;
	if (fuse_reply_open(req, fi) != 0)
		dirsnap_free(s);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	dirsnap_free((struct dirsnap *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/*
 * Offsets: 1 and 2 are "." and "..", entry i of the opendir() snapshot is
 * i + 3, so a listing read in several calls neither skips nor repeats.
 */
static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi,
			   bool plus)
{
	struct cmkfs *fs = fs_of(req);
	const struct dirsnap *s = (const struct dirsnap *)(uintptr_t)fi->fh;
	fuse_ino_t *refs = NULL;
	size_t pos = 0, n_refs = 0;
	char *buf;

	if ((buf = malloc(size)) == NULL || (plus && (refs = malloc(size / 24 * sizeof(*refs))) == NULL)) {
		free(buf);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (plus)
		tree_lock(fs->tree);
	for (off_t i = off; i < (off_t)s->n + 2; i++) {
		const char *name = i == 0 ? "." : i == 1 ? ".." : s->names + s->e[i - 2].name;
		fuse_ino_t e_ino = i == 0 ? ino : i == 1 ? INO_ROOT : s->e[i - 2].ino;
		struct fuse_entry_param e;
		struct node *n = NULL;
		bool nomem;
		size_t need;

		memset(&e, 0, sizeof(e));
		e.attr.st_ino = e_ino;
		e.attr.st_mode = i < 2 || s->e[i - 2].dir ? S_IFDIR : S_IFREG;
		if (plus && i >= 2) {
			/* Names that went away since opendir() are left out; one that changed shows its new inode. */
			if ((n = tree_lookup_ref(fs->tree, ino, name, false, &nomem)) == NULL)
				continue;
			fill_entry(&e, fs->tree, n);
		}
		if (plus)
			need = fuse_add_direntry_plus(req, buf + pos, size - pos, name, &e, i + 1);
		else
			need = fuse_add_direntry(req, buf + pos, size - pos, name, &e.attr, i + 1);
		if (need > size - pos) {
			if (n != NULL)
				tree_forget(fs->tree, n->ino, 1);
			break;
		}
		pos += need;
		/* Each entry with an inode number counts as a lookup in the kernel ("." and ".." do not). */
		if (n != NULL)
			refs[n_refs++] = n->ino;
	}
	if (plus)
		tree_unlock(fs->tree);
	if (fuse_reply_buf(req, buf, pos) != 0 && n_refs > 0) {
		tree_lock(fs->tree);
		for (size_t i = 0; i < n_refs; i++)
			tree_forget(fs->tree, refs[i], 1);
		tree_unlock(fs->tree);
	}
	free(refs);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, true);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct cmkfs *fs = fs_of(req);
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	tree_lock(fs->tree);
	sv.f_files = tree_files(fs->tree) + N_DIRS;   /* and the root and its five directories */
	tree_unlock(fs->tree);
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* ---- everything that would change the tree ------------------------------ */

static void erofs(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	(void)ino, (void)attr, (void)to_set, (void)fi;
	erofs(req);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	erofs(req);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	erofs(req);
}

/*
 * The announcer's operations (announce.h): a rename of a hidden name onto a
 * name, an unlink or rmdir of a leaving name.  Nobody else changes anything.
 */
static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct cmkfs *fs = fs_of(req);
	int err;

	if (!announcer_is_caller(fs, req)) {
		erofs(req);
		return;
	}
	tree_lock(fs->tree);
	err = tree_ann_unlink(fs->tree, parent, name, false);
	tree_unlock(fs->tree);
	fuse_reply_err(req, err);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct cmkfs *fs = fs_of(req);
	int err;

	if (!announcer_is_caller(fs, req)) {
		erofs(req);
		return;
	}
	tree_lock(fs->tree);
	err = tree_ann_unlink(fs->tree, parent, name, true);
	tree_unlock(fs->tree);
	fuse_reply_err(req, err);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	erofs(req);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct cmkfs *fs = fs_of(req);
	int err;

	if (!announcer_is_caller(fs, req) || flags != 0) {
		erofs(req);
		return;
	}
	tree_lock(fs->tree);
	err = tree_ann_rename(fs->tree, parent, name, newparent, newname);
	tree_unlock(fs->tree);
	fuse_reply_err(req, err);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	erofs(req);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino, (void)buf, (void)size, (void)off, (void)fi;
	erofs(req);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	erofs(req);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
			int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	erofs(req);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	erofs(req);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	(void)ino, (void)mode, (void)offset, (void)length, (void)fi;
	erofs(req);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			       fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len,
			       int flags)
{
	(void)ino_in, (void)off_in, (void)fi_in, (void)ino_out, (void)off_out, (void)fi_out, (void)len,
		(void)flags;
	erofs(req);
}

/*
 * Not implemented on purpose: fsync (nothing to write back),
 * getxattr and listxattr (no extended attributes; ENOSYS lets the kernel
 * stop asking), access (the kernel checks with default_permissions).
 */
const struct fuse_lowlevel_ops cmkfs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = file_open,
	.read = file_read,
	.write = op_write,
	.release = file_release,
	.flush = file_flush,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.create = op_create,
	.fallocate = op_fallocate,
	.copy_file_range = op_copy_file_range,
};
