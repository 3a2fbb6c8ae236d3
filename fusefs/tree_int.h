/*
 * tree_int.h - what tree.c (slots, nodes, names, listings) and slot.c (what
 * each name shows, and how it changes) share.  Not for the FUSE handlers.
 */
#ifndef CMKCERTFS_TREE_INT_H
#define CMKCERTFS_TREE_INT_H

#include <pthread.h>

#include "cmkcert/names.h"
#include "pin.h"
#include "tree.h"

/* Longest path below the root, with room to spare. */
#define TREE_PATH_MAX (2 * TREE_NAME_MAX + 16)

/* Inode numbers of slot files: (slot number, kind, generation). */
#define INO_GEN_BITS 28
#define INO_GEN_MAX ((1u << INO_GEN_BITS) - 1)

static inline fuse_ino_t ino_make(uint32_t no, enum fkind kind, uint32_t gen)
{
	return ((fuse_ino_t)no << 32) | ((fuse_ino_t)kind << INO_GEN_BITS) | gen;
}

static inline uint32_t ino_slot_no(fuse_ino_t ino)
{
	return (uint32_t)(ino >> 32);
}

static inline enum fkind ino_kind(fuse_ino_t ino)
{
	return (enum fkind)((ino >> INO_GEN_BITS) & 0xf);
}

static inline uint32_t ino_gen(fuse_ino_t ino)
{
	return (uint32_t)(ino & INO_GEN_MAX);
}

/*
 * One (tenant, type), or the CA chain of a type (tenant "").  Per name
 * kind: the generation shown under the real name (0: none), the one
 * waiting under its hidden name for the announcer (0: none), and whether
 * the shown one is leaving (hidden from all but the announcer until it is
 * unlinked).  A slot lives while it serves a version, shows a name, or is
 * referred to by a node or a queued announcement.
 */
struct slot {
	struct slot *next_by_name, *next_by_no;  /* hash chains */
	struct slot *prev, *next;                /* all slots, in order of creation (listings) */
	uint32_t no;
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	struct fsver *ver;            /* what opens serve; for a chain slot, the source of the chain */
	struct fsver *last;           /* the version before the slot was emptied: attributes of leaving names */
	int64_t switched_ms;          /* monotonic: when `ver` last changed (pin.h) */
	int64_t dir_mtime;            /* /tls/<s>: last change of its listing */
	uint32_t next_gen;
	uint32_t shown[FK_N];
	uint32_t pending[FK_N];
	unsigned leaving;             /* bit per kind */
	unsigned refs;                /* nodes and queued announcements */
	struct pin_group *groups;     /* load groups (pin.h) */
};

struct tree {
	pthread_mutex_t mu;
	const struct cmk_config *cfg;
	struct node dirs[N_DIRS + 1];         /* the fixed directories, indexed by inode number */
	int64_t dir_mtime[N_DIRS + 1];
	struct slot **by_name, **by_no;       /* hash buckets */
	size_t slots_mask, n_slots;
	struct slot *first, *last;
	uint32_t next_no;
	struct node **inos;                   /* hash buckets of nodes of slot files */
	size_t inos_mask, n_nodes;
	struct pins *pins;
	char (*unsettled)[CMK_TYPE_MAX + 1];  /* types whose /ca source must be chosen again */
	size_t n_unsettled, cap_unsettled;
};

/* tree.c */
struct slot *slot_find(struct tree *t, const char *tenant, const char *type);
struct slot *slot_by_no(struct tree *t, uint32_t no);
struct slot *slot_add(struct tree *t, const char *tenant, const char *type);
/* Free the slot if nothing needs it any more. */
void slot_maybe_free(struct tree *t, struct slot *s);
/* The real name of kind `k` of slot `s` ("acme-aws_kms.crt", "tls.key"...). */
void slot_name(const struct slot *s, enum fkind k, char *buf, size_t size);
/* The directory inode that holds kind `k` of `s` (for /tls/<s>/ files: the shown directory, 0 if none). */
fuse_ino_t slot_parent(const struct slot *s, enum fkind k);
/* The generation of kind `k` the caller may see under the real name; 0 when none. */
uint32_t slot_visible(const struct slot *s, enum fkind k, bool announcer);
/* The node of (s, k, gen), made if the kernel did not hold it yet; NULL when out of memory. */
struct node *node_get(struct tree *t, struct slot *s, enum fkind k, uint32_t gen);

#endif
