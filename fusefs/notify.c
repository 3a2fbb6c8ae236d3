/*
 * notify.c - pushing tree changes into the kernel's caches (see notify.h).
 *
 * For a name that appeared: invalidate the entry, which drops a cached
 * negative lookup.  For a name that went away or now shows another inode:
 * notify_delete, so the dentry goes (and watchers of the old inode hear of
 * it).  For a directory whose listing changed: invalidate its inode, which
 * also drops the kernel's cached listing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/log.h"
#include "notify.h"

static void check(int rc, const char *what)
{
	static int warned_nosys;

	/* ENOENT: the kernel holds nothing for it.  ENOTCONN: not initialised yet, nothing cached. */
	if (rc == 0 || rc == -ENOENT || rc == -ENOTCONN)
		return;
	if (rc == -ENOSYS) {
		if (!__atomic_exchange_n(&warned_nosys, 1, __ATOMIC_RELAXED))
			cmk_log(CMK_LOG_WARN, "notify: the kernel cannot invalidate its caches; changes show "
				"after the cache timeouts");
		return;
	}
	cmk_log(CMK_LOG_WARN, "notify: %s: %s", what, strerror(-rc));
}

static void send_one(struct fuse_session *se, const struct note *n)
{
	switch (n->kind) {
	case NOTE_INODE:
		check(fuse_lowlevel_notify_inval_inode(se, n->ino, 0, 0), "directory");
		break;
	case NOTE_ENTRY:
		check(fuse_lowlevel_notify_inval_entry(se, n->parent, n->name, strlen(n->name)), n->name);
		break;
	case NOTE_DELETE:
		check(fuse_lowlevel_notify_delete(se, n->parent, n->ino, n->name, strlen(n->name)), n->name);
		break;
	}
}

void notify_send(struct fuse_session *se, struct notes *ns, struct notes *again)
{
	size_t i;

	/* Second pass for every note of the previous call (a deletion is re-sent as an entry). */
	for (i = 0; i < again->n; i++) {
		struct note *n = &again->v[i];
		if (n->kind == NOTE_DELETE)
			n->kind = NOTE_ENTRY;
		send_one(se, n);
	}
	again->n = 0;
	if (ns->oom) {
		cmk_log(CMK_LOG_ERROR, "notify: out of memory while recording changes; invalidating directories");
		for (fuse_ino_t d = INO_ROOT; d <= N_DIRS; d++)
			check(fuse_lowlevel_notify_inval_inode(se, d, 0, 0), "directory");
	}
	for (i = 0; i < ns->n; i++) {
		send_one(se, &ns->v[i]);
		(void)notes_add(again, ns->v[i].kind, ns->v[i].parent, ns->v[i].ino, ns->v[i].name);
	}
	ns->n = 0;
	ns->oom = false;
}
