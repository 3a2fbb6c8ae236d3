/*
 * notify.h - telling the kernel what changed when a change could not be
 * made through the mount (announce.h).
 *
 * Sent with no lock held: the kernel may need directory locks that a
 * request in flight holds, and that request needs the tree lock to finish
 * (see fuse_lowlevel_notify_inval_entry()).
 */
#ifndef CMKCERTFS_NOTIFY_H
#define CMKCERTFS_NOTIFY_H

#include "tree.h"

/*
 * Send `ns` to the kernel and empty it.  Every note is kept in `again` and
 * sent once more on the next call (pass an empty `ns` to flush them): a
 * lookup that was in flight while a name changed can leave the kernel with
 * a stale entry that the first notice could not reach.  When `ns` could
 * not record every change (out of memory), every fixed directory is
 * invalidated.
 */
void notify_send(struct fuse_session *se, struct notes *ns, struct notes *again);

#endif
