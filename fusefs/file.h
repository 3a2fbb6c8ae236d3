/*
 * file.h - open files: the snapshot a handle reads, key unsealing,
 * authorization and the key-read audit.
 *
 *   /certs, /ca     the handle points at the version's bytes; reads go
 *                   through the page cache (keep_cache) while every cached
 *                   handle of the inode reads the same version.  A handle
 *                   opened while older cached handles are still open
 *                   reads with direct I/O instead, so the cache never holds
 *                   two versions.
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
 * Audit a refusal the kernel made on its own (default_permissions): after
 * refusing, the kernel fetches the attributes again with the caller's
 * credentials, which is the only trace such a refusal leaves (ops.c).
 */
void file_audit_refused(struct cmkfs *fs, fuse_req_t req, enum node_kind kind, const char *name,
			const struct fsver *v);

/* After the session ended: wipe and free handles the kernel never released. */
void file_shutdown(struct cmkfs *fs);

#endif
