/*
 * tree.h - the file tree of the mount (DESIGN §7), held in memory:
 *
 *   /certs/<tenant>-<type>.crt     /private/<tenant>-<type>.key
 *   /ca/<type>-ca-chain.pem        /bundle/<tenant>-<type>.pem
 *
 * Inode numbers: the four directories have fixed numbers; a file gets a
 * number the first time its (directory, name) appears and keeps it for the
 * life of the mount, even across removal and re-creation, so the kernel
 * never sees one number name two different files.  Nodes are counted the
 * way the kernel counts them (lookup / forget) and freed once they are
 * neither visible, known to the kernel, nor open.
 *
 * Locking: one mutex (tree_lock/tree_unlock) guards everything here; every
 * function below except tree_new/tree_free expects the caller to hold it.
 * Critical sections are short (hash lookups, pointer swaps); nothing slow
 * (store reads, unsealing, replies to the kernel) happens under the lock.
 */
#ifndef CMKCERTFS_TREE_H
#define CMKCERTFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cmkfs.h"
#include "version.h"

enum node_kind { NODE_DIR, NODE_CERT, NODE_KEY, NODE_CHAIN, NODE_BUNDLE };

#define INO_ROOT FUSE_ROOT_ID
#define INO_CERTS 2
#define INO_PRIVATE 3
#define INO_CA 4
#define INO_BUNDLE 5

struct name_ent;

struct node {
	fuse_ino_t ino;
	fuse_ino_t parent;
	enum node_kind kind;
	const char *name;             /* kept by the name registry for the life of the mount */
	struct name_ent *ent;
	struct fsver *ver;            /* current version (files); NULL for directories */
	uint64_t nlookup;             /* the kernel's references (lookup, readdirplus) */
	bool attached;                /* visible under its name */
	unsigned handles;             /* open file handles */
	unsigned cache_users;         /* of those, the ones reading through the page cache */
	uint64_t cache_gen;           /* version allowed in the page cache; 0 = none (see below) */
	int64_t mtime;                /* directories: last change of the listing */
	struct node *hnext;           /* inode hash chain */
	struct node *dprev, *dnext;   /* the parent directory's listing */
	struct node *first, *last;    /* directories: attached children */
	size_t count;                 /* directories: number of attached children */
};

/* What the kernel must be told after a change (sent by watch.c, outside the lock). */
enum note_kind {
	NOTE_INODE,                   /* content and attributes of ino changed */
	NOTE_ENTRY,                   /* parent/name appeared: drop a cached negative entry */
	NOTE_DELETE,                  /* parent/name (ino) went away */
};

struct note {
	enum note_kind kind;
	fuse_ino_t parent, ino;
	const char *name;             /* registry-owned: valid for the life of the mount */
};

struct notes {
	struct note *v;
	size_t n, cap;
	bool oom;                     /* a note could not be recorded: invalidate every directory */
};

/* Append a note; on failure ns->oom is set.  NULL `ns` is a no-op. */
int notes_add(struct notes *ns, enum note_kind kind, fuse_ino_t parent, fuse_ino_t ino, const char *name);
void notes_clear(struct notes *ns);

/* A directory listing as it was at opendir(), with what a permission check needs. */
struct dirsnap {
	size_t n;
	struct {
		fuse_ino_t ino;
		const char *name;
		uid_t uid;
		gid_t gid;
		mode_t mode;
	} e[];
};

struct tree;

int tree_new(const struct cmk_config *cfg, struct tree **out);
/* Frees every node and version; the caller ensures no thread uses the tree any more. */
void tree_free(struct tree *t);

void tree_lock(struct tree *t);
void tree_unlock(struct tree *t);

/* A node the kernel may refer to (also one no longer visible), NULL when none. */
struct node *tree_node(struct tree *t, fuse_ino_t ino);
/* The visible node called `name` in directory `parent`, NULL when none. */
struct node *tree_lookup(struct tree *t, fuse_ino_t parent, const char *name);
/* Attributes of a node. */
void tree_stat(const struct tree *t, const struct node *n, struct stat *st);
/* Attributes of a file as version `v` of it (what a handle opened on `v` reads). */
void tree_stat_version(const struct tree *t, const struct node *n, const struct fsver *v, struct stat *st);

/*
 * The page cache of /certs and /ca files.  The kernel keeps one page cache
 * and one file size per inode, but a handle reads the version it opened.
 * A cached read past the end of a shorter old version even makes the kernel
 * shrink the inode's size, which would then cut short a reader of the newer,
 * longer version.  So only one version at a time may read through the cache:
 *
 *   - cache_gen names it; handles of that version open with keep_cache,
 *     every other handle opens with direct I/O (never touching the cache or
 *     being limited by the kernel's idea of the size);
 *   - when the shown version changes, cache_gen becomes 0 ("none") until the
 *     kernel has dropped its pages and attributes for the inode, or it stays
 *     with the old version while cached handles of it are open;
 *   - when the last of those is released, the inode is queued for the same
 *     invalidation (tree_take_rearm), after which tree_arm() lets the current
 *     version use the cache.  The watcher invalidates twice, a tick apart,
 *     before arming: a lookup answered just before a change can reach the
 *     kernel after the first invalidation and leave the old size behind.
 * An inode the kernel does not know (nlookup 0) has no pages and no size in
 * the kernel: it is armed at once.
 */

/* May a new handle of `v` on `n` read through the page cache?  If so it is counted as such. */
bool tree_cache_acquire(struct tree *t, struct node *n, const struct fsver *v);
/* A handle on `n` was released; `cached` as tree_cache_acquire() answered.  May free `n`. */
void tree_handle_released(struct tree *t, struct node *n, bool cached);
/* An inode waiting to be armed, and the version it waits with. */
struct rearm {
	fuse_ino_t ino;
	uint64_t gen;
};
/* The inodes that wait for an invalidation before their cache can be used; the caller frees *out. */
size_t tree_take_rearm(struct tree *t, struct rearm **out);
/*
 * The kernel dropped pages and attributes of r->ino since r->gen was shown:
 * that version may use the cache now (unless it changed again meanwhile).
 */
void tree_arm(struct tree *t, const struct rearm *r);

/* The kernel took one more reference (a lookup or a readdirplus entry). */
void tree_ref(struct tree *t, struct node *n);
/* The kernel dropped `count` references (forget). */
void tree_forget(struct tree *t, fuse_ino_t ino, uint64_t count);

/*
 * Make `v` (one reference, stolen; NULL = no active certificate) the
 * current version of (tenant, type): its /certs, /private and /bundle files
 * appear, change or go away, and the /ca file of the type follows the most
 * recently activated certificate.  Notes for the kernel are appended to
 * `notes` (NULL while nothing is mounted).  Call tree_settle() after a batch.
 * Returns 1 when something changed, 0 when `v` serves what is already
 * shown, or CMK_ERR_NOMEM (the tree is unchanged for this slot).
 */
int tree_put(struct tree *t, const char *tenant, const char *type, struct fsver *v, struct notes *notes);
/* Finish a batch of tree_put(): choose the /ca file of types whose source went away. */
int tree_settle(struct tree *t, struct notes *notes);

/* Every (tenant, type) currently shown: cb(tenant, type, arg) for each /certs file. */
int tree_each_slot(struct tree *t, int (*cb)(const char *tenant, const char *type, void *arg), void *arg);

/* Copy the listing of a directory; NULL when out of memory or not a directory. */
struct dirsnap *tree_dir_snapshot(struct tree *t, fuse_ino_t dir);

/* Number of files (nodes other than the directories). */
size_t tree_files(const struct tree *t);

/* True for the file kinds that hold a private key. */
static inline bool node_has_key(const struct node *n)
{
	return n->kind == NODE_KEY || n->kind == NODE_BUNDLE;
}

#endif
