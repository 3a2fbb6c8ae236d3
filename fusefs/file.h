/*
 * file.h - open files: the snapshot a handle reads, key unsealing,
 * authorization and the key-read audit.
 *
 *   /certs, /tls/<s>/tls.crt, ca.crt
 *                   the handle points at the version's bytes; direct I/O,
 *                   as a handle may read an older version than its inode
 *                   (load pins, pin.h).
 *   /ca             the inode's own chain, through the page cache.
 *   /private,       the key is unsealed at open() into locked memory owned
 *   /bundle,        by the handle and wiped at release(); direct I/O, so
 *   tls.key         the plaintext never enters the page cache.
 */
#ifndef CMKCERTFS_FILE_H
#define CMKCERTFS_FILE_H

#include "cmkfs.h"
#include "tree.h"

void file_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void file_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void file_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* close() of a bundle (the others are opened without flush): the load pins hear of it. */
void file_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

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
void file_audit_refused(struct cmkfs *fs, fuse_req_t req, const char *path, const struct fsver *v);

/* After the session ended: wipe and free handles the kernel never released. */
void file_shutdown(struct cmkfs *fs);

#endif
