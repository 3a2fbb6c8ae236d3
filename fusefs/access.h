/*
 * access.h - the daemon's own read-permission check at open(), and the
 * same check for the entries of a listing.
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

#define ACCESS_GROUPS_GUESS 64

/*
 * The caller of one request, for asking about many files: its supplementary
 * groups are fetched (from /proc, by libfuse) at most once, and only when an
 * answer depends on them.  The fields are access.c's own.
 */
struct access_caller {
	fuse_req_t req;
	uid_t uid;
	gid_t gid;
	int n_groups;                 /* -1 until fetched */
	gid_t *groups;                /* `small`, or allocated when there are more */
	gid_t small[ACCESS_GROUPS_GUESS];
};

void access_caller_init(struct access_caller *c, fuse_req_t req);
/* Frees what access_caller_may_read() fetched. */
void access_caller_done(struct access_caller *c);

/*
 * True when the caller may read a file owned by uid:gid with permission
 * bits `mode`, by the classic owner / group / other rule.  uid 0 may read
 * (as the kernel allows root; root can read the store and master key
 * anyway).  If the supplementary groups cannot be read, the caller is
 * treated as not in the group.
 */
bool access_caller_may_read(struct access_caller *c, uid_t uid, gid_t gid, mode_t mode);

/* The same for one file and the caller of `req`. */
bool access_may_read(fuse_req_t req, uid_t uid, gid_t gid, mode_t mode);

#endif
