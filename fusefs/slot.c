/*
 * slot.c - what each name shows, and how a change of it is announced.
 *
 * tree_put() switches a slot's version at once (opens serve it from then
 * on) and decides, per name, what the announcer must do through the mount:
 * rename a new generation onto the name (it appeared or its contents
 * changed) or unlink the name (it went away).  /tls/<s>/ files are renamed
 * inside their directory; a new /tls/<s> directory is renamed into /tls
 * with its files already in it, and a leaving one is emptied, then removed.
 * /ca/<type>-ca-chain.pem shows the chain of the most recently activated
 * certificate of the type, and changes only when those bytes do.
 *
 * Everything that can fail (memory for the slot, the chain slot and the
 * announcements) is reserved before anything changes, so running out of
 * memory leaves the slot as it was rather than half-changed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/util.h"
#include "tree_int.h"

/* Generations one tree_put can use up. */
#define GENS_PER_PUT (FK_N + 1)

static int ann_reserve(struct ann_list *l, size_t more)
{
	if (l->n + more <= l->cap)
		return 0;
	size_t cap = l->cap ? l->cap : 32;
	while (cap < l->n + more)
		cap *= 2;
	struct ann *v = realloc(l->v, cap * sizeof(*v));
	if (v == NULL)
		return CMK_ERR_NOMEM;
	l->v = v;
	l->cap = cap;
	return 0;
}

/* Room was reserved. */
static void ann_add(struct ann_list *l, enum ann_op op, struct slot *s, enum fkind k, uint32_t gen)
{
	s->refs++;
	l->v[l->n++] = (struct ann){ op, s, k, gen };
}

void ann_list_clear(struct ann_list *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

void tree_ann_release(struct tree *t, struct ann_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		struct slot *s = l->v[i].slot;
		s->refs--;
		slot_maybe_free(t, s);
	}
	l->n = 0;
}

static bool is_tls_file(enum fkind k)
{
	return k == FK_TLSCRT || k == FK_TLSKEY || k == FK_TLSCA;
}

static void touch_parent(struct tree *t, struct slot *s, enum fkind k)
{
	if (is_tls_file(k))
		s->dir_mtime = cmk_now();
	else
		t->dir_mtime[slot_parent(s, k)] = cmk_now();
}

/* Name `k` of `s` shows the slot's (new) version. */
static void renew_name(struct tree *t, struct slot *s, enum fkind k, struct ann_list *anns)
{
	(void)t;
	s->leaving &= ~(1u << k);
	if (is_tls_file(k) && s->shown[FK_TLSDIR] == 0) {
		/* Inside a directory nobody sees yet: it appears with the directory. */
		s->shown[k] = s->next_gen++;
		s->pending[k] = 0;
		return;
	}
	if (k == FK_TLSDIR && s->shown[k] != 0)
		return;                 /* the directory stays; its files change inside it */
	s->pending[k] = s->next_gen++;
	ann_add(anns, ANN_RENAME, s, k, s->pending[k]);
}

/* Name `k` of `s` goes away. */
static void drop_name(struct tree *t, struct slot *s, enum fkind k, struct ann_list *anns)
{
	(void)t;
	s->pending[k] = 0;              /* a change not announced yet is dropped */
	if (s->shown[k] == 0 || (s->leaving & (1u << k)) != 0)
		return;
	if (is_tls_file(k) && s->shown[FK_TLSDIR] == 0) {
		s->shown[k] = 0;        /* inside a directory nobody saw */
		return;
	}
	s->leaving |= 1u << k;
	ann_add(anns, k == FK_TLSDIR ? ANN_RMDIR : ANN_UNLINK, s, k, s->shown[k]);
}

static bool same_chain(const struct fsver *a, const struct fsver *b)
{
	return a->chain_len == b->chain_len && memcmp(a->chain, b->chain, a->chain_len) == 0;
}

/* The /ca file of chain slot `cs` shows the chain of `v`. */
static void set_chain(struct tree *t, struct slot *cs, struct fsver *v, struct ann_list *anns)
{
	struct fsver *cur = cs->ver;

	if (cur == v)
		return;
	cs->ver = fsver_ref(v);
	fsver_unref(cs->last);
	cs->last = NULL;
	if (cur != NULL && same_chain(cur, v)) {
		fsver_unref(cur);       /* the same bytes from a newer source: the file does not change */
		return;
	}
	fsver_unref(cur);
	cs->switched_ms = cmk_monotonic_ms();
	renew_name(t, cs, FK_CHAIN, anns);
}

static void empty_chain(struct tree *t, struct slot *cs, struct ann_list *anns)
{
	if (cs->ver == NULL)
		return;
	fsver_unref(cs->last);
	cs->last = cs->ver;
	cs->ver = NULL;
	drop_name(t, cs, FK_CHAIN, anns);
	slot_maybe_free(t, cs);
}

static bool is_unsettled(const struct tree *t, const char *type)
{
	for (size_t i = 0; i < t->n_unsettled; i++)
		if (strcmp(t->unsettled[i], type) == 0)
			return true;
	return false;
}

/* Room for one more unsettled type, reserved before anything changes. */
static int reserve_unsettled(struct tree *t)
{
	if (t->n_unsettled < t->cap_unsettled)
		return 0;
	size_t cap = t->cap_unsettled ? t->cap_unsettled * 2 : 8;
	void *p = realloc(t->unsettled, cap * sizeof(*t->unsettled));
	if (p == NULL)
		return CMK_ERR_NOMEM;
	t->unsettled = p;
	t->cap_unsettled = cap;
	return 0;
}

static bool gens_left(const struct slot *s)
{
	return s->next_gen <= INO_GEN_MAX - GENS_PER_PUT;
}

int tree_put(struct tree *t, const char *tenant, const char *type, struct fsver *v, struct ann_list *anns)
{
	static const enum fkind keyed[] = { FK_KEY, FK_BUNDLE, FK_TLSKEY };
	struct slot *s = slot_find(t, tenant, type), *cs;
	struct fsver *old = s != NULL ? s->ver : NULL, *src;
	bool rescan = false, chain_to_v = false;
	int rc = 0;

	if (v == NULL && old == NULL)
		goto out;
	if (v != NULL && old != NULL && fsver_same(v, old)) {
		/* Something else of the slot changed in the store: older versions are not served any more. */
		pins_touched(s->groups, old);
		goto out;
	}
	cs = slot_find(t, "", type);
	src = cs != NULL ? cs->ver : NULL;
	/*
	 * The /ca file follows the newest activation of the type.  Only when its
	 * source is this slot and the slot goes away or gets an older version
	 * must all slots of the type be looked at again (tree_settle).
	 */
	if (src != NULL && old != NULL && strcmp(src->tenant, tenant) == 0)
		rescan = v == NULL || !fsver_newer(v, old);
	if (v != NULL && !rescan)
		chain_to_v = src == NULL || strcmp(src->tenant, tenant) == 0 || fsver_newer(v, src);

	if (ann_reserve(anns, FK_N + 2) != 0 || (rescan && !is_unsettled(t, type) && reserve_unsettled(t) != 0) ||
	    (s == NULL && (s = slot_add(t, tenant, type)) == NULL) ||
	    (chain_to_v && cs == NULL && (cs = slot_add(t, "", type)) == NULL)) {
		rc = CMK_ERR_NOMEM;
		if (s != NULL)
			slot_maybe_free(t, s);
		goto out;
	}
	if (!gens_left(s) || (chain_to_v && !gens_left(cs))) {
		rc = cmk_fail(CMK_ERR_INTERNAL, "%s-%s changed more often than one mount can show", tenant, type);
		goto out;
	}
	rc = 1;
	if (v != NULL) {
		bool has_key = v->sealed != NULL;

		s->ver = v;
		v = NULL;
		fsver_unref(old);
		fsver_unref(s->last);
		s->last = NULL;
		s->switched_ms = cmk_monotonic_ms();
		s->dir_mtime = cmk_now();
		renew_name(t, s, FK_TLSDIR, anns);
		renew_name(t, s, FK_CERT, anns);
		renew_name(t, s, FK_TLSCRT, anns);
		renew_name(t, s, FK_TLSCA, anns);
		for (size_t i = 0; i < sizeof(keyed) / sizeof(keyed[0]); i++) {
			if (has_key)
				renew_name(t, s, keyed[i], anns);
			else
				drop_name(t, s, keyed[i], anns);
		}
		if (chain_to_v)
			set_chain(t, cs, s->ver, anns);
	} else {
		/* Gone from the store: nothing of it is served from now on, pins included. */
		pins_drop(t->pins, &s->groups);
		fsver_unref(s->last);
		s->last = old;
		s->ver = NULL;
		drop_name(t, s, FK_TLSCRT, anns);
		drop_name(t, s, FK_TLSKEY, anns);
		drop_name(t, s, FK_TLSCA, anns);
		drop_name(t, s, FK_TLSDIR, anns);
		drop_name(t, s, FK_CERT, anns);
		drop_name(t, s, FK_KEY, anns);
		drop_name(t, s, FK_BUNDLE, anns);
	}
	if (rescan && !is_unsettled(t, type))
		snprintf(t->unsettled[t->n_unsettled++], CMK_TYPE_MAX + 1, "%s", type);
	slot_maybe_free(t, s);
out:
	fsver_unref(v);
	return rc;
}

int tree_settle(struct tree *t, struct ann_list *anns)
{
	while (t->n_unsettled > 0) {
		const char *type = t->unsettled[t->n_unsettled - 1];
		struct fsver *best = NULL;
		struct slot *cs = slot_find(t, "", type);

		for (struct slot *s = t->first; s != NULL; s = s->next)
			if (s->tenant[0] != '\0' && s->ver != NULL && strcmp(s->type, type) == 0 &&
			    (best == NULL || fsver_newer(s->ver, best)))
				best = s->ver;
		if (ann_reserve(anns, 1) != 0)
			return CMK_ERR_NOMEM;   /* stays unsettled; the caller tries again later */
		if (best == NULL) {
			if (cs != NULL)
				empty_chain(t, cs, anns);
		} else {
			if (cs == NULL && (cs = slot_add(t, "", type)) == NULL)
				return CMK_ERR_NOMEM;
			if (!gens_left(cs))
				return cmk_fail(CMK_ERR_INTERNAL, "the %s CA chain changed more often than one mount "
						"can show", type);
			set_chain(t, cs, best, anns);
		}
		t->n_unsettled--;
	}
	return 0;
}

/* ---- announcements --------------------------------------------------------- */

/* Is announcement `a` still wanted? */
static bool wanted(const struct ann *a)
{
	const struct slot *s = a->slot;

	if (a->op == ANN_RENAME)
		return s->pending[a->kind] == a->gen && slot_parent(s, a->kind) != 0;
	return (s->leaving & (1u << a->kind)) != 0 && s->shown[a->kind] != 0 && slot_parent(s, a->kind) != 0;
}

/* The directory of kind `k` of `s`, relative to the root ("certs", "tls/acme-aws_kms"). */
static void dir_path(const struct slot *s, enum fkind k, char *buf, size_t size)
{
	static const char *const fixed[N_DIRS + 1] = { NULL, NULL, "certs", "private", "ca", "bundle", "tls" };
	char dir[TREE_NAME_MAX];

	if (is_tls_file(k)) {
		slot_name(s, FK_TLSDIR, dir, sizeof(dir));
		snprintf(buf, size, "tls/%s", dir);
	} else {
		snprintf(buf, size, "%s", fixed[slot_parent(s, k)]);
	}
}

bool tree_ann_paths(struct tree *t, const struct ann *a, char *from, char *to, size_t size)
{
	char dir[TREE_PATH_MAX], name[TREE_NAME_MAX];

	(void)t;
	if (!wanted(a))
		return false;
	dir_path(a->slot, a->kind, dir, sizeof(dir));
	slot_name(a->slot, a->kind, name, sizeof(name));
	snprintf(to, size, "%s/%s", dir, name);
	if (a->op == ANN_RENAME)
		snprintf(from, size, "%s/.~%llx", dir, (unsigned long long)ino_make(a->slot->no, a->kind, a->gen));
	else
		from[0] = '\0';
	return true;
}

static fuse_ino_t parse_hidden_ino(const char *name)
{
	char *end;
	unsigned long long ino;

	if (name[0] != '.' || name[1] != '~' || name[2] == '\0')
		return 0;
	errno = 0;
	ino = strtoull(name + 2, &end, 16);
	return errno == 0 && *end == '\0' ? (fuse_ino_t)ino : 0;
}

int tree_ann_rename(struct tree *t, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname)
{
	fuse_ino_t ino = parse_hidden_ino(name);
	char real[TREE_NAME_MAX];
	struct slot *s;
	enum fkind k;

	if (newparent != parent)
		return EXDEV;
	if (ino == 0 || (s = slot_by_no(t, ino_slot_no(ino))) == NULL)
		return ENOENT;
	k = ino_kind(ino);
	if (k >= FK_N || s->pending[k] != ino_gen(ino) || slot_parent(s, k) != parent)
		return ENOENT;
	slot_name(s, k, real, sizeof(real));
	if (strcmp(real, newname) != 0)
		return EINVAL;
	s->shown[k] = s->pending[k];
	s->pending[k] = 0;
	s->leaving &= ~(1u << k);
	touch_parent(t, s, k);
	return 0;
}

int tree_ann_unlink(struct tree *t, fuse_ino_t parent, const char *name, bool dir)
{
	struct node *n;
	struct slot *s;
	bool nomem;

	/* Resolved as the announcer sees names: a leaving one is still there for it. */
	n = tree_lookup_ref(t, parent, name, true, &nomem);
	if (n == NULL)
		return nomem ? ENOMEM : ENOENT;
	n->nlookup--;
	s = n->slot;
	if (s == NULL)
		return EBUSY;
	if (dir != (n->kind == FK_TLSDIR))
		return dir ? ENOTDIR : EISDIR;
	if ((s->leaving & (1u << n->kind)) == 0 || s->shown[n->kind] != n->gen)
		return EBUSY;
	touch_parent(t, s, n->kind);
	s->shown[n->kind] = 0;
	s->leaving &= ~(1u << n->kind);
	tree_forget(t, n->ino, 0);      /* frees the node if the kernel did not hold it */
	return 0;
}

void tree_ann_force(struct tree *t, const struct ann *a, struct notes *ns)
{
	struct slot *s = a->slot;
	enum fkind k = a->kind;
	char name[TREE_NAME_MAX];
	fuse_ino_t parent;
	uint32_t old;

	if (!wanted(a))
		return;
	parent = slot_parent(s, k);
	slot_name(s, k, name, sizeof(name));
	old = s->shown[k];
	if (a->op == ANN_RENAME) {
		s->shown[k] = a->gen;
		s->pending[k] = 0;
		s->leaving &= ~(1u << k);
		/* The kernel forgets what it held for the name and looks it up again. */
		if (old != 0)
			notes_add(ns, NOTE_DELETE, parent, ino_make(s->no, k, old), name);
		else
			notes_add(ns, NOTE_ENTRY, parent, 0, name);
	} else {
		s->shown[k] = 0;
		s->leaving &= ~(1u << k);
		notes_add(ns, NOTE_DELETE, parent, ino_make(s->no, k, old), name);
	}
	notes_add(ns, NOTE_INODE, 0, parent, NULL);
	touch_parent(t, s, k);
}
