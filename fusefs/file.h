/*
 * file.h - open files: the snapshot a handle reads, key unsealing,
 * authorization and the key-read audit.
 *
 *   /certs, /ca     the handle points at the version's bytes; reads go
 *                   through the page cache (keep_cache) only for the version
 *                   that owns the inode's cache (tree.h); any other handle,
 *                   for example one opened while readers of the previous
 *                   version are still open, reads with direct I/O, so the
 *                   cache never holds two versions.
 *   /private,       the key is unsealed at open() into locked memory owned
 *   /bundle         by the handle and wiped at release(); direct I/O, so
 *                   the plaintext never enters the page cache.
 */
#ifndef CMKCERTFS_FILE_H
#define CMKCERTFS_FILE_H

#include "cmkfs.h"
#include "tree.h"

void file_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void file_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void file_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/*
 * Attributes as seen through an open handle `fi`: those of the version it
 * reads.  Returns false when that is no longer the current version.
 */
bool file_stat(struct cmkfs *fs, const struct fuse_file_info *fi, struct stat *st);

/*
 * Audit a refusal the kernel made on its own (default_permissions): after
 * refusing, the kernel fetches the attributes again with the caller's
 * credentials, which is the only trace such a refusal leaves (ops.c).
 */
void file_audit_refused(struct cmkfs *fs, fuse_req_t req, enum node_kind kind, const char *name,
			const struct fsver *v);

/* After the session ended: wipe and free handles the kernel never released. */
void file_shutdown(struct cmkfs *fs);

#endif
