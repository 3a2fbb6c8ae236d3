/*
 * tree_int.h - what tree.c (nodes, names, inode numbers) and slot.c (which
 * version each file shows) share.  Not for the FUSE handlers.
 */
#ifndef CMKCERTFS_TREE_INT_H
#define CMKCERTFS_TREE_INT_H

#include <pthread.h>

#include "tree.h"

#define N_DIRS 5                      /* root, certs, private, ca, bundle: inodes 1..5 */
#define FIRST_FILE_INO 16

/* (directory, name) -> inode number, never forgotten while mounted. */
struct name_ent {
	struct name_ent *next;
	fuse_ino_t parent;
	fuse_ino_t ino;
	struct node *node;            /* NULL while no node exists for it */
	char name[];
};

struct tree {
	pthread_mutex_t mu;
	const struct cmk_config *cfg;
	struct node dirs[N_DIRS + 1]; /* indexed by inode number; [0] unused */
	struct name_ent **names;      /* hash buckets */
	size_t names_mask, n_names;
	struct node **inos;           /* hash buckets of file nodes */
	size_t inos_mask, n_nodes;
	fuse_ino_t next_ino;
	char (*unsettled)[CMK_TYPE_MAX + 1];  /* types whose /ca source must be chosen again */
	size_t n_unsettled, cap_unsettled;
	fuse_ino_t *rearm;                    /* inodes waiting for an invalidation (tree.h) */
	size_t n_rearm, cap_rearm;
};

/* tree.c */
struct name_ent *tree_name_find(struct tree *t, fuse_ino_t parent, const char *name);
struct name_ent *tree_name_add(struct tree *t, fuse_ino_t parent, const char *name);
struct node *tree_node_new(struct tree *t, struct name_ent *ent, enum node_kind kind);
void tree_attach(struct tree *t, struct node *n);
void tree_detach(struct tree *t, struct node *n);
/* The version shown by `n` changed (slot.c): update its page-cache state. */
void tree_cache_changed(struct tree *t, struct node *n);
/* Free `n` when it is neither visible, known to the kernel, nor open. */
void tree_node_maybe_free(struct tree *t, struct node *n);

#endif
