/*
 * tree.h - the file tree of the mount (DESIGN §7), held in memory:
 *
 *   /certs/<s>.crt        leaf              /private/<s>.key   key
 *   /bundle/<s>.pem       key+leaf+chain    /ca/<type>-ca-chain.pem
 *   /tls/<s>/tls.crt      leaf+chain        /tls/<s>/tls.key   key
 *   /tls/<s>/ca.crt       chain                  (<s> = <tenant>-<type>)
 *
 * Slots.  A slot is one (tenant, type) with its current version, or the CA
 * chain of one type (tenant "").  Opens serve a slot's version (through the
 * load pins of pin.h), whichever inode of its names they come through; a
 * slot switches to a new version in one step for all its files.
 *
 * Inodes.  Every name shows one inode per version: a rotation gives the
 * name a new inode, as an atomic rename does on a disk.  An inode number is
 * computed, never stored: (slot number, file kind, generation), with slot
 * numbers and generations never reused during the life of the mount, so the
 * kernel never sees one number name two files, and a listing can give each
 * name the number its lookup will give.  Node structures exist only for the
 * inodes the kernel holds (lookup / forget) or that are open.
 *
 * Announcements.  A change of a name waits for the announcer (announce.h)
 * to perform it through the mount, so watchers of the file and of its
 * directory get the events a disk would give them:
 *   - a new inode for a name first appears under a hidden name ".~<ino>"
 *     (pending; only the announcer can look it up) and is renamed onto the
 *     name: IN_MOVED_TO for the directory, IN_ATTRIB and IN_DELETE_SELF for
 *     watchers of the inode it replaces;
 *   - a name that goes away is first hidden from everyone but the announcer
 *     (leaving), then unlinked (rmdir for /tls/<s>): IN_DELETE.
 * Contents switch when the change is applied (tree_put), not when it is
 * announced: an open never serves a version the store no longer has, and an
 * event never reaches a watcher before the new contents are there.
 *
 * Locking: one mutex (tree_lock/tree_unlock) guards everything here; every
 * function below except tree_new/tree_free expects the caller to hold it.
 * Critical sections are short; nothing slow happens under the lock.
 */
#ifndef CMKCERTFS_TREE_H
#define CMKCERTFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cmkfs.h"
#include "version.h"

#define INO_ROOT FUSE_ROOT_ID
#define INO_CERTS 2
#define INO_PRIVATE 3
#define INO_CA 4
#define INO_BUNDLE 5
#define INO_TLS 6
#define N_DIRS 6                      /* inodes 1..6 */

/* The names of a slot. */
enum fkind {
	FK_CERT,                      /* /certs/<s>.crt */
	FK_KEY,                       /* /private/<s>.key */
	FK_BUNDLE,                    /* /bundle/<s>.pem */
	FK_TLSDIR,                    /* /tls/<s> */
	FK_TLSCRT,                    /* /tls/<s>/tls.crt */
	FK_TLSKEY,                    /* /tls/<s>/tls.key */
	FK_TLSCA,                     /* /tls/<s>/ca.crt */
	FK_CHAIN,                     /* /ca/<type>-ca-chain.pem (a chain slot) */
	FK_N
};

struct slot;

struct node {
	struct node *hnext;           /* inode hash chain */
	fuse_ino_t ino;
	struct slot *slot;            /* NULL for the six fixed directories */
	enum fkind kind;
	uint32_t gen;
	struct fsver *ver;            /* the version it was made for: its attributes (NULL: fixed dirs) */
	uint64_t nlookup;             /* the kernel's references (lookup, readdirplus) */
	unsigned handles;             /* open file handles */
};

/* True for the kinds that hold a private key. */
static inline bool fkind_has_key(enum fkind k)
{
	return k == FK_KEY || k == FK_BUNDLE || k == FK_TLSKEY;
}

static inline bool node_is_dir(const struct node *n)
{
	return n->slot == NULL || n->kind == FK_TLSDIR;
}

static inline bool node_has_key(const struct node *n)
{
	return n->slot != NULL && fkind_has_key(n->kind);
}

/* Longest name in a directory, with room to spare. */
#define TREE_NAME_MAX (CMK_TENANT_MAX + CMK_TYPE_MAX + 24)

/*
 * What the kernel must be told when a change could not be made through the
 * mount (announce.c sends these, outside the lock).
 */
enum note_kind {
	NOTE_INODE,                   /* ino (a directory) changed: drop its attributes and listing */
	NOTE_ENTRY,                   /* parent/name appeared: drop a cached negative entry */
	NOTE_DELETE,                  /* parent/name (ino) went away or was replaced */
};

struct note {
	enum note_kind kind;
	fuse_ino_t parent, ino;
	char name[TREE_NAME_MAX];
};

struct notes {
	struct note *v;
	size_t n, cap;
	bool oom;                     /* a note could not be recorded: invalidate every directory */
};

/* Append a note; on failure ns->oom is set. */
int notes_add(struct notes *ns, enum note_kind kind, fuse_ino_t parent, fuse_ino_t ino, const char *name);
void notes_clear(struct notes *ns);

/* One change for the announcer to perform through the mount. */
enum ann_op { ANN_RENAME, ANN_UNLINK, ANN_RMDIR };

struct ann {
	enum ann_op op;
	struct slot *slot;            /* holds a reference (tree_ann_done releases it) */
	enum fkind kind;
	uint32_t gen;                 /* ANN_RENAME: the pending generation to show */
};

struct ann_list {
	struct ann *v;
	size_t n, cap;
};

/* A directory listing as it was at opendir(), with what a permission check needs. */
struct dirsnap {
	size_t n;
	char *names;                  /* all names, NUL-separated */
	struct {
		fuse_ino_t ino;
		size_t name;          /* offset in `names` */
		bool dir;
		uid_t uid;
		gid_t gid;
		mode_t mode;
	} e[];
};

struct tree;

int tree_new(const struct cmk_config *cfg, struct tree **out);
/* Frees every slot, node and version; the caller ensures no thread uses the tree any more. */
void tree_free(struct tree *t);

void tree_lock(struct tree *t);
void tree_unlock(struct tree *t);

/* The node of an inode the kernel holds or that is open; NULL when none. */
struct node *tree_node(struct tree *t, fuse_ino_t ino);

/*
 * Resolve `name` in directory `parent` and count one kernel reference on
 * the result.  `announcer`: the caller is the announcer, who also sees
 * pending (hidden) and leaving names.  NULL when there is no such name (or
 * out of memory: *nomem is set).
 */
struct node *tree_lookup_ref(struct tree *t, fuse_ino_t parent, const char *name, bool announcer, bool *nomem);

/* Attributes of a node (as its own version). */
void tree_stat(const struct tree *t, const struct node *n, struct stat *st);
/* Attributes of a file as version `v` of it (what a handle opened on `v` reads). */
void tree_stat_version(const struct tree *t, const struct node *n, const struct fsver *v, struct stat *st);
/* True when the node is what its name shows now (nlink 1). */
bool tree_node_visible(const struct tree *t, const struct node *n);

/* The kernel took one more reference (a readdirplus entry). */
void tree_ref(struct tree *t, struct node *n);
/* The kernel dropped `count` references (forget). */
void tree_forget(struct tree *t, fuse_ino_t ino, uint64_t count);
/* A handle was opened / released on `n` (released may free it). */
void tree_handle_opened(struct tree *t, struct node *n);
void tree_handle_released(struct tree *t, struct node *n);

/*
 * The version an open of `n` serves right now, before the load pins have
 * their say: the slot's current version, or for a /ca file its own.  NULL
 * when the name's slot has nothing to serve (removed: the open fails).
 */
struct fsver *tree_current(struct tree *t, const struct node *n);

/*
 * The version an open of file `n` by thread `tid` of process `tgid` gets:
 * tree_current() as the load pins (pin.h) choose it.  A new reference, or
 * NULL when there is nothing to serve.
 */
struct fsver *tree_choose(struct tree *t, struct node *n, pid_t tgid, pid_t tid, int64_t now_ms);

/* Process `tgid` closed a bundle it opened through `n` (pin.h). */
void tree_bundle_closed(struct tree *t, struct node *n, pid_t tgid);

/* "/private/acme-aws_kms.key" and the like, for messages and the audit trail. */
void tree_path(const struct tree *t, const struct node *n, char *buf, size_t size);

/*
 * Make `v` (one reference, stolen; NULL = no active certificate) the
 * current version of (tenant, type).  The changes of names this needs are
 * appended to `anns` for the announcer.  Call tree_settle() after a batch.
 * Returns 1 when something changed, 0 when `v` serves what is already
 * shown, or CMK_ERR_NOMEM (the slot is unchanged).
 */
int tree_put(struct tree *t, const char *tenant, const char *type, struct fsver *v, struct ann_list *anns);
/* Finish a batch of tree_put(): choose the /ca file of types whose source went away. */
int tree_settle(struct tree *t, struct ann_list *anns);

/* Every (tenant, type) currently served: cb(tenant, type, arg) for each. */
int tree_each_slot(struct tree *t, int (*cb)(const char *tenant, const char *type, void *arg), void *arg);

/* Copy the listing of a directory; NULL when out of memory or not a directory (*err says which). */
struct dirsnap *tree_dir_snapshot(struct tree *t, fuse_ino_t dir, int *err);
void dirsnap_free(struct dirsnap *s);

/* Number of names served (files and /tls directories). */
size_t tree_files(const struct tree *t);

/* ---- announcements (announce.c calls these) ------------------------------ */

/*
 * Paths, relative to the mount's root, of what `a` changes: `from` (the
 * hidden name, ANN_RENAME only) and `to`.  False when the change is no longer
 * wanted (a newer one replaced it, or it was done already): skip it.
 */
bool tree_ann_paths(struct tree *t, const struct ann *a, char *from, char *to, size_t size);
/*
 * The announcer's rename / unlink / rmdir reached the daemon (ops.c): make
 * the change.  0, or an errno value when it is not one the tree waits for.
 */
int tree_ann_rename(struct tree *t, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname);
int tree_ann_unlink(struct tree *t, fuse_ino_t parent, const char *name, bool dir);
/*
 * Make the change of `a` without the kernel's help (the operation through the
 * mount failed).  What the kernel must then forget is appended to `ns`.
 */
void tree_ann_force(struct tree *t, const struct ann *a, struct notes *ns);
/* Release the references of announcements done. */
void tree_ann_release(struct tree *t, struct ann_list *anns);
void ann_list_clear(struct ann_list *l);

#endif
