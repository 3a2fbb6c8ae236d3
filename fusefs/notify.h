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
 * Send `ns` to the kernel.  Names and directories are kept in `again` and
 * sent once more on the next call (pass an empty `ns` to flush them): a
 * lookup that was in flight while a name changed can leave the kernel with
 * a stale entry that the first notice could not reach.  When `ns` could not
 * record every change (out of memory), every directory is invalidated.
 */
void notify_send(struct fuse_session *se, struct notes *ns, struct notes *again);

#endif
