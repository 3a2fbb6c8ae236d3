/*
 * announce.h - making the tree's changes through the mount itself, so that
 * inotify watchers of the files and of their directories hear of them.
 *
 * The kernel sends inotify events for operations made through a mount,
 * whoever makes them, and for nothing a FUSE daemon changes on its own
 * side.  So a change of a name (tree.h) is performed by the announcer
 * thread as the rename of a hidden name onto the name, or as an unlink /
 * rmdir, on the daemon's own mount; ops.c accepts these operations from
 * this thread only (everyone else gets EROFS).  The thread is none of the
 * FUSE session's workers, which answer it, and holds no lock while it
 * waits for them.
 *
 * The public mount is read-only for the kernel when the daemon may change
 * mount attributes (CAP_SYS_ADMIN): the announcer then works through a
 * private, writable clone of the mount (open_tree), reachable by no other
 * process.  Otherwise the mount is writable for the kernel and the daemon
 * refuses every change itself.  When an operation through the mount fails,
 * the change is made in the tree directly and the kernel is told to forget
 * what it cached (notify.h): readers see the change, watchers may not.
 */
#ifndef CMKCERTFS_ANNOUNCE_H
#define CMKCERTFS_ANNOUNCE_H

#include <stdbool.h>
#include <stdint.h>

#include "cmkfs.h"
#include "tree.h"

struct announcer;

/*
 * Make the freshly mounted `mountpoint` read-only for the kernel (needs
 * CAP_SYS_ADMIN); false when it stays writable.  Call it before the session
 * loop runs: it does not wait for the daemon.
 */
bool announce_protect_mount(const char *mountpoint);

int announcer_start(struct cmkfs *fs, struct announcer **out);

/*
 * True once the thread has found how to reach the mount (through the
 * session, so only after the FUSE loop answers): from then on every change
 * reaches inotify watchers the way the mount allows.  For READY=1 (service.h).
 */
bool announcer_is_set_up(struct announcer *a);

/*
 * Queue `anns` (emptied; their references move to the queue), which bring
 * the mount to change-log position `seq`.  Never fails: when the queue
 * cannot grow, the changes are made at once without the kernel's help.
 */
void announcer_submit(struct announcer *a, struct ann_list *anns, uint64_t seq);

/*
 * The change-log position whose changes are all visible on the mount; it is
 * also published in the store's registry of mounts (mounts.h).
 */
uint64_t announcer_served(struct announcer *a);

/*
 * Stop the thread, waiting at most until `deadline_ms` (monotonic); what is
 * still queued is made in the tree without the kernel.  False when the
 * thread had to be left behind (its memory too).  NULL is a no-op.
 */
bool announcer_stop(struct announcer *a, int64_t deadline_ms);

/* True when the caller of a request is the announcer thread. */
bool announcer_is_caller(struct cmkfs *fs, fuse_req_t req);

#endif
