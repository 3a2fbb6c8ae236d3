/*
 * access.h - the daemon's own read-permission check at open().
 *
 * The kernel checks first (default_permissions); this second check uses
 * the caller's credentials as the FUSE request carries them, so a mistake
 * in either layer alone does not hand out a key.
 */
#ifndef CMKCERTFS_ACCESS_H
#define CMKCERTFS_ACCESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "cmkfs.h"

/*
 * True when the caller of `req` may read a file owned by uid:gid with
 * permission bits `mode`, by the classic owner / group / other rule.  uid 0
 * may read (as the kernel allows root; root can read the store and master
 * key anyway).  Supplementary groups are fetched only when they can change
 * the answer; if they cannot be read, the caller is treated as not in the
 * group.
 */
bool access_may_read(fuse_req_t req, uid_t uid, gid_t gid, mode_t mode);

#endif
