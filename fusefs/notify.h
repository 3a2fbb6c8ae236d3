/*
 * notify.h - telling the kernel what changed in the tree.
 *
 * Sent from the watcher thread with no lock held: the kernel may need
 * directory locks that a request in flight holds, and that request needs
 * the tree lock to finish (see fuse_lowlevel_notify_inval_entry()).
 */
#ifndef CMKCERTFS_NOTIFY_H
#define CMKCERTFS_NOTIFY_H

#include "tree.h"

/*
 * Send `ns` to the kernel.  Every note is kept in `again` and sent once
 * more on the next call (pass an empty `ns` to flush them): a lookup that
 * was in flight while a name or file changed can leave the kernel with a
 * stale entry or size that the first notice could not reach.  When `ns` could not
 * record every change (out of memory), every directory is invalidated.
 */
void notify_send(struct fuse_session *se, struct notes *ns, struct notes *again);

/* Inodes invalidated once, to be invalidated again and armed on the next call. */
struct rearm_pending {
	struct rearm *v;
	size_t n;
};

/*
 * Invalidate the inodes whose page cache waits for a new owner (see
 * tree.h): those queued since the last call once, those of the last call a
 * second time, after which their version may use the cache.  Call after
 * notify_send() of the batch that changed them.
 */
void notify_rearm(struct fuse_session *se, struct tree *t, struct rearm_pending *pending);

#endif
