/*
 * tree.c - nodes, names and inode numbers of the mount (see tree.h).
 *
 * Two hash tables: the name registry maps (directory, name) to an inode
 * number and is only ever added to, which is what keeps inode numbers
 * stable; the inode table maps numbers to the nodes that currently exist.
 * A node exists while it is visible, while the kernel holds references to
 * it (nlookup), or while a file handle is open on it.  The registry costs a
 * few dozen bytes per name ever shown; versions (the real memory) go with
 * their nodes.
 */
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/util.h"
#include "tree_int.h"

static const char *const dir_names[N_DIRS + 1] = { NULL, NULL, "certs", "private", "ca", "bundle" };

/* FNV-1a over the directory number and the name. */
static size_t name_hash(fuse_ino_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < sizeof(parent); i++) {
		h ^= (parent >> (8 * i)) & 0xff;
		h *= 1099511628211ull;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
		h ^= *p;
		h *= 1099511628211ull;
	}
	return (size_t)h;
}

static size_t ino_hash(fuse_ino_t ino)
{
	return (size_t)(ino * 0x9e3779b97f4a7c15ull >> 16);
}

int tree_new(const struct cmk_config *cfg, struct tree **out)
{
	struct tree *t;
	int64_t now = cmk_now();

	*out = NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return CMK_ERR_NOMEM;
	t->cfg = cfg;
	t->names_mask = 1023;
	t->inos_mask = 1023;
	t->next_ino = FIRST_FILE_INO;
	t->names = calloc(t->names_mask + 1, sizeof(*t->names));
	t->inos = calloc(t->inos_mask + 1, sizeof(*t->inos));
	if (t->names == NULL || t->inos == NULL || pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t->names);
		free(t->inos);
		free(t);
		return CMK_ERR_NOMEM;
	}
	for (fuse_ino_t i = 1; i <= N_DIRS; i++) {
		struct node *d = &t->dirs[i];
		d->ino = i;
		d->parent = INO_ROOT;
		d->kind = NODE_DIR;
		d->name = dir_names[i];
		d->attached = true;
		d->mtime = now;
		if (i != INO_ROOT) {
			/* The root lists the four directories like any other children. */
			d->dprev = t->dirs[INO_ROOT].last;
			if (d->dprev != NULL)
				d->dprev->dnext = d;
			else
				t->dirs[INO_ROOT].first = d;
			t->dirs[INO_ROOT].last = d;
			t->dirs[INO_ROOT].count++;
		}
	}
	*out = t;
	return 0;
}

void tree_free(struct tree *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i <= t->inos_mask; i++) {
		struct node *n = t->inos[i], *next;
		for (; n != NULL; n = next) {
			next = n->hnext;
			fsver_unref(n->ver);
			free(n);
		}
	}
	for (size_t i = 0; i <= t->names_mask; i++) {
		struct name_ent *e = t->names[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(t->names);
	free(t->inos);
	free(t->unsettled);
	free(t->rearm);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

void tree_lock(struct tree *t)
{
	pthread_mutex_lock(&t->mu);
}

void tree_unlock(struct tree *t)
{
	pthread_mutex_unlock(&t->mu);
}

/* Double a table when it holds as many entries as buckets; failure only means longer chains. */
static void grow_names(struct tree *t)
{
	size_t mask = t->names_mask * 2 + 1;
	struct name_ent **b = calloc(mask + 1, sizeof(*b));

	if (b == NULL)
		return;
	for (size_t i = 0; i <= t->names_mask; i++) {
		struct name_ent *e = t->names[i], *next;
		for (; e != NULL; e = next) {
			size_t h = name_hash(e->parent, e->name) & mask;
			next = e->next;
			e->next = b[h];
			b[h] = e;
		}
	}
	free(t->names);
	t->names = b;
	t->names_mask = mask;
}

static void grow_inos(struct tree *t)
{
	size_t mask = t->inos_mask * 2 + 1;
	struct node **b = calloc(mask + 1, sizeof(*b));

	if (b == NULL)
		return;
	for (size_t i = 0; i <= t->inos_mask; i++) {
		struct node *n = t->inos[i], *next;
		for (; n != NULL; n = next) {
			size_t h = ino_hash(n->ino) & mask;
			next = n->hnext;
			n->hnext = b[h];
			b[h] = n;
		}
	}
	free(t->inos);
	t->inos = b;
	t->inos_mask = mask;
}

struct name_ent *tree_name_find(struct tree *t, fuse_ino_t parent, const char *name)
{
	struct name_ent *e = t->names[name_hash(parent, name) & t->names_mask];

	for (; e != NULL; e = e->next)
		if (e->parent == parent && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

struct name_ent *tree_name_add(struct tree *t, fuse_ino_t parent, const char *name)
{
	size_t len = strlen(name), h;
	struct name_ent *e;

	if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
		return NULL;
	e->parent = parent;
	e->ino = t->next_ino++;
	memcpy(e->name, name, len + 1);
	if (t->n_names >= t->names_mask)
		grow_names(t);
	h = name_hash(parent, name) & t->names_mask;
	e->next = t->names[h];
	t->names[h] = e;
	t->n_names++;
	return e;
}

struct node *tree_node_new(struct tree *t, struct name_ent *ent, enum node_kind kind)
{
	struct node *n;
	size_t h;

	if ((n = calloc(1, sizeof(*n))) == NULL)
		return NULL;
	n->ino = ent->ino;
	n->parent = ent->parent;
	n->kind = kind;
	n->name = ent->name;
	n->ent = ent;
	ent->node = n;
	if (t->n_nodes >= t->inos_mask)
		grow_inos(t);
	h = ino_hash(n->ino) & t->inos_mask;
	n->hnext = t->inos[h];
	t->inos[h] = n;
	t->n_nodes++;
	return n;
}

struct node *tree_node(struct tree *t, fuse_ino_t ino)
{
	struct node *n;

	if (ino >= 1 && ino <= N_DIRS)
		return &t->dirs[ino];
	for (n = t->inos[ino_hash(ino) & t->inos_mask]; n != NULL; n = n->hnext)
		if (n->ino == ino)
			return n;
	return NULL;
}

struct node *tree_lookup(struct tree *t, fuse_ino_t parent, const char *name)
{
	struct name_ent *e;

	if (parent == INO_ROOT) {
		for (fuse_ino_t i = INO_CERTS; i <= N_DIRS; i++)
			if (strcmp(name, dir_names[i]) == 0)
				return &t->dirs[i];
		return NULL;
	}
	if (parent > N_DIRS || (e = tree_name_find(t, parent, name)) == NULL)
		return NULL;
	return e->node != NULL && e->node->attached ? e->node : NULL;
}

void tree_attach(struct tree *t, struct node *n)
{
	struct node *d = &t->dirs[n->parent];

	n->dnext = NULL;
	n->dprev = d->last;
	if (d->last != NULL)
		d->last->dnext = n;
	else
		d->first = n;
	d->last = n;
	d->count++;
	d->mtime = cmk_now();
	n->attached = true;
}

void tree_detach(struct tree *t, struct node *n)
{
	struct node *d = &t->dirs[n->parent];

	if (n->dprev != NULL)
		n->dprev->dnext = n->dnext;
	else
		d->first = n->dnext;
	if (n->dnext != NULL)
		n->dnext->dprev = n->dprev;
	else
		d->last = n->dprev;
	n->dprev = n->dnext = NULL;
	d->count--;
	d->mtime = cmk_now();
	n->attached = false;
}

void tree_node_maybe_free(struct tree *t, struct node *n)
{
	struct node **pp;

	if (n->kind == NODE_DIR || n->attached || n->nlookup > 0 || n->handles > 0)
		return;
	for (pp = &t->inos[ino_hash(n->ino) & t->inos_mask]; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	}
	t->n_nodes--;
	n->ent->node = NULL;
	fsver_unref(n->ver);
	free(n);
}

static mode_t file_mode(const struct tree *t, enum node_kind kind)
{
	switch (kind) {
	case NODE_CERT: return t->cfg->fuse.cert_mode;
	case NODE_CHAIN: return t->cfg->fuse.ca_mode;
	case NODE_KEY:
	case NODE_BUNDLE: return t->cfg->fuse.key_mode;
	case NODE_DIR: break;
	}
	return 0;
}

static size_t file_size(enum node_kind kind, const struct fsver *v)
{
	switch (kind) {
	case NODE_CERT: return v->cert_len;
	case NODE_CHAIN: return v->chain_len;
	case NODE_KEY: return v->key_len;
	case NODE_BUNDLE: return fsver_bundle_len(v);
	case NODE_DIR: break;
	}
	return 0;
}

void tree_stat_version(const struct tree *t, const struct node *n, const struct fsver *v, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_blksize = 4096;
	if (n->kind == NODE_DIR) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = n->ino == INO_ROOT ? 2 + N_DIRS - 1 : 2;
		st->st_uid = t->cfg->fuse.uid;
		st->st_gid = t->cfg->fuse.gid;
		st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = n->mtime;
		return;
	}
	st->st_mode = S_IFREG | (file_mode(t, n->kind) & 07777);
	st->st_nlink = n->attached ? 1 : 0;
	if (n->kind == NODE_CHAIN) {
		st->st_uid = t->cfg->fuse.uid;
		st->st_gid = t->cfg->fuse.gid;
	} else {
		st->st_uid = v->uid;
		st->st_gid = v->gid;
	}
	st->st_size = (off_t)file_size(n->kind, v);
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = v->activated_at;
}

void tree_stat(const struct tree *t, const struct node *n, struct stat *st)
{
	tree_stat_version(t, n, n->ver, st);
}

void tree_ref(struct tree *t, struct node *n)
{
	(void)t;
	n->nlookup++;
}

void tree_forget(struct tree *t, fuse_ino_t ino, uint64_t count)
{
	struct node *n = tree_node(t, ino);

	if (n == NULL)
		return;
	n->nlookup = count < n->nlookup ? n->nlookup - count : 0;
	tree_node_maybe_free(t, n);
}

/* Wait for an invalidation before the cache of `n` is used again (or none is needed). */
static void rearm_later(struct tree *t, struct node *n)
{
	n->cache_gen = 0;
	if (n->nlookup == 0) {
		n->cache_gen = n->ver->gen;
		return;
	}
	if (t->n_rearm == t->cap_rearm) {
		size_t cap = t->cap_rearm ? t->cap_rearm * 2 : 16;
		fuse_ino_t *p = realloc(t->rearm, cap * sizeof(*p));
		/* Without room the inode stays uncached (direct I/O): slower, never wrong. */
		if (p == NULL)
			return;
		t->rearm = p;
		t->cap_rearm = cap;
	}
	t->rearm[t->n_rearm++] = n->ino;
}

void tree_cache_changed(struct tree *t, struct node *n)
{
	/* Cached handles of the old version keep the cache until the last one goes. */
	if (n->cache_users == 0)
		rearm_later(t, n);
}

bool tree_cache_acquire(struct tree *t, struct node *n, const struct fsver *v)
{
	(void)t;
	/*
	 * Certificate files are pinned per process (pin.h), so a process may
	 * open an older version after the change.  Two sizes on one inode would
	 * let the kernel cut a cached read short: /certs reads always go to the
	 * daemon (direct I/O), like keys and bundles.
	 */
	if (node_has_key(n) || n->kind == NODE_CERT || n->cache_gen != v->gen)
		return false;
	n->cache_users++;
	return true;
}

void tree_handle_released(struct tree *t, struct node *n, bool cached)
{
	n->handles--;
	if (cached && --n->cache_users == 0 && n->cache_gen != n->ver->gen)
		rearm_later(t, n);
	tree_node_maybe_free(t, n);
}

size_t tree_take_rearm(struct tree *t, struct rearm **out)
{
	struct rearm *r;
	size_t n = 0;

	*out = NULL;
	if (t->n_rearm == 0 || (r = malloc(t->n_rearm * sizeof(*r))) == NULL)
		return 0;   /* out of memory: they stay queued for the next tick */
	for (size_t i = 0; i < t->n_rearm; i++) {
		struct node *node = tree_node(t, t->rearm[i]);
		if (node != NULL && node->kind != NODE_DIR && node->cache_gen == 0)
			r[n++] = (struct rearm){ node->ino, node->ver->gen };
	}
	t->n_rearm = 0;
	*out = r;
	return n;
}

void tree_arm(struct tree *t, const struct rearm *r)
{
	struct node *n = tree_node(t, r->ino);

	if (n != NULL && n->kind != NODE_DIR && n->cache_users == 0 && n->cache_gen == 0 && n->ver->gen == r->gen)
		n->cache_gen = r->gen;
}

struct dirsnap *tree_dir_snapshot(struct tree *t, fuse_ino_t dir)
{
	struct dirsnap *s;
	struct node *d, *n;
	size_t i = 0;

	if (dir < 1 || dir > N_DIRS)
		return NULL;
	d = &t->dirs[dir];
	if ((s = malloc(sizeof(*s) + d->count * sizeof(s->e[0]))) == NULL)
		return NULL;
	for (n = d->first; n != NULL; n = n->dnext, i++) {
		struct stat st;

		tree_stat(t, n, &st);
		s->e[i].ino = n->ino;
		s->e[i].name = n->name;
		s->e[i].uid = st.st_uid;
		s->e[i].gid = st.st_gid;
		s->e[i].mode = st.st_mode;
	}
	s->n = i;
	return s;
}

size_t tree_files(const struct tree *t)
{
	return t->n_nodes;
}

void notes_clear(struct notes *ns)
{
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

int notes_add(struct notes *ns, enum note_kind kind, fuse_ino_t parent, fuse_ino_t ino, const char *name)
{
	if (ns == NULL)
		return 0;
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 64;
		struct note *v = realloc(ns->v, cap * sizeof(*v));
		if (v == NULL) {
			ns->oom = true;
			return CMK_ERR_NOMEM;
		}
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n++] = (struct note){ kind, parent, ino, name };
	return 0;
}
