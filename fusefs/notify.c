/*
 * notify.c - pushing tree changes into the kernel's caches (see notify.h).
 *
 * For a file whose content changed: invalidate its inode (data and
 * attributes).  For a name that appeared: invalidate the entry, which drops
 * a cached negative lookup.  For a name that went away: notify_delete, so
 * the dentry goes and inotify watchers hear of it.  For a directory whose
 * listing changed: invalidate its inode, which also drops the kernel's
 * cached listing (opendir asks for cache_readdir).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/log.h"
#include "notify.h"

/* True when the kernel holds nothing stale for the target any more. */
static bool check(int rc, const char *what)
{
	static int warned_nosys;

	/* ENOENT: the kernel holds nothing for it.  ENOTCONN: not initialised yet, nothing cached. */
	if (rc == 0 || rc == -ENOENT || rc == -ENOTCONN)
		return true;
	if (rc == -ENOSYS) {
		if (!__atomic_exchange_n(&warned_nosys, 1, __ATOMIC_RELAXED))
			cmk_log(CMK_LOG_WARN, "notify: the kernel cannot invalidate its caches; changes show "
				"after the cache timeouts");
		return false;
	}
	cmk_log(CMK_LOG_WARN, "notify: %s: %s", what, strerror(-rc));
	return false;
}

static void inval_dir(struct fuse_session *se, fuse_ino_t dir)
{
	(void)check(fuse_lowlevel_notify_inval_inode(se, dir, 0, 0), "directory");
}

static void send_one(struct fuse_session *se, const struct note *n, unsigned *dirs_done)
{
	switch (n->kind) {
	case NOTE_INODE:
		if (n->ino <= INO_BUNDLE) {
			if ((*dirs_done & (1u << n->ino)) == 0)
				inval_dir(se, n->ino);
			*dirs_done |= 1u << n->ino;
		} else {
			(void)check(fuse_lowlevel_notify_inval_inode(se, n->ino, 0, 0), "inode");
		}
		break;
	case NOTE_ENTRY:
		(void)check(fuse_lowlevel_notify_inval_entry(se, n->parent, n->name, strlen(n->name)), n->name);
		break;
	case NOTE_DELETE:
		(void)check(fuse_lowlevel_notify_delete(se, n->parent, n->ino, n->name, strlen(n->name)), n->name);
		break;
	}
}

void notify_send(struct fuse_session *se, struct notes *ns, struct notes *again)
{
	unsigned dirs_done = 0;
	size_t i;

	/* Second pass for every note of the previous batch (a deletion is re-sent as an entry). */
	for (i = 0; i < again->n; i++) {
		struct note n = again->v[i];
		if (n.kind == NOTE_DELETE)
			n.kind = NOTE_ENTRY;
		send_one(se, &n, &dirs_done);
	}
	again->n = 0;
	dirs_done = 0;
	if (ns->oom) {
		cmk_log(CMK_LOG_ERROR, "notify: out of memory while recording changes; invalidating directories");
		for (fuse_ino_t d = INO_ROOT; d <= INO_BUNDLE; d++)
			inval_dir(se, d);
	}
	for (i = 0; i < ns->n; i++) {
		send_one(se, &ns->v[i], &dirs_done);
		(void)notes_add(again, ns->v[i].kind, ns->v[i].parent, ns->v[i].ino, ns->v[i].name);
	}
	ns->n = 0;
	ns->oom = false;
}

void notify_rearm(struct fuse_session *se, struct tree *t, struct rearm_pending *pending)
{
	struct rearm *cur;
	size_t n;

	tree_lock(t);
	n = tree_take_rearm(t, &cur);
	tree_unlock(t);
	/* Arm only once the kernel dropped pages and size: an inode left unarmed reads uncached. */
	for (size_t i = 0; i < pending->n; i++)
		if (!check(fuse_lowlevel_notify_inval_inode(se, pending->v[i].ino, 0, 0), "inode"))
			pending->v[i].ino = 0;
	if (pending->n > 0) {
		tree_lock(t);
		for (size_t i = 0; i < pending->n; i++)
			if (pending->v[i].ino != 0)
				tree_arm(t, &pending->v[i]);
		tree_unlock(t);
	}
	free(pending->v);
	for (size_t i = 0; i < n; i++)
		(void)check(fuse_lowlevel_notify_inval_inode(se, cur[i].ino, 0, 0), "inode");
	pending->v = cur;
	pending->n = n;
}
