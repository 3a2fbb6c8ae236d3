/*
 * slot.c - which version each file of the tree shows.
 *
 * A "slot" is one (tenant, type): its active certificate appears as
 * /certs/T-K.crt, /private/T-K.key and /bundle/T-K.pem, all three pointing
 * at the same version object, so a /certs and a /private read that start
 * after the same change always match.  /ca/K-ca-chain.pem shows the chain
 * of the most recently activated certificate of type K.
 *
 * tree_put() first creates every name and node it will need, then swaps
 * pointers, so running out of memory leaves the slot as it was rather than
 * half-changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "tree_int.h"

#define NAME_MAX_LEN (CMK_TENANT_MAX + CMK_TYPE_MAX + 16)

static void file_name(char *buf, enum node_kind kind, const char *tenant, const char *type)
{
	switch (kind) {
	case NODE_CERT: snprintf(buf, NAME_MAX_LEN, "%s-%s.crt", tenant, type); break;
	case NODE_KEY: snprintf(buf, NAME_MAX_LEN, "%s-%s.key", tenant, type); break;
	case NODE_BUNDLE: snprintf(buf, NAME_MAX_LEN, "%s-%s.pem", tenant, type); break;
	case NODE_CHAIN: snprintf(buf, NAME_MAX_LEN, "%s-ca-chain.pem", type); break;
	case NODE_DIR: buf[0] = '\0'; break;
	}
}

static fuse_ino_t kind_dir(enum node_kind kind)
{
	switch (kind) {
	case NODE_CERT: return INO_CERTS;
	case NODE_KEY: return INO_PRIVATE;
	case NODE_BUNDLE: return INO_BUNDLE;
	case NODE_CHAIN: return INO_CA;
	case NODE_DIR: break;
	}
	return INO_ROOT;
}

/* Make sure a node exists for the name (not yet visible); NULL when out of memory. */
static struct node *prepare(struct tree *t, enum node_kind kind, const char *name)
{
	fuse_ino_t dir = kind_dir(kind);
	struct name_ent *e = tree_name_find(t, dir, name);

	if (e == NULL && (e = tree_name_add(t, dir, name)) == NULL)
		return NULL;
	if (e->node != NULL)
		return e->node;
	return tree_node_new(t, e, kind);
}

/* Show `v` in node `n` (found or prepared); never allocates except for notes. */
static void show(struct tree *t, struct node *n, struct fsver *v, struct notes *ns)
{
	if (n->ver != v) {
		/*
		 * A rotation: tell the kernel the name's old file is gone (it is
		 * looked up afresh at the next access), so watchers of the file get
		 * a deletion event (IN_DELETE_SELF; fsnotify's Remove) — a plain
		 * invalidation reaches no watcher.  Open handles keep their version.
		 */
		if (n->ver != NULL && n->attached && n->nlookup > 0 && !fsver_same(n->ver, v))
			notes_add(ns, NOTE_DELETE, n->parent, n->ino, n->name);
		fsver_unref(n->ver);
		n->ver = fsver_ref(v);
		tree_cache_changed(t, n);
	}
	if (!n->attached) {
		tree_attach(t, n);
		/* The kernel may hold a negative entry for the name from an earlier lookup. */
		notes_add(ns, NOTE_ENTRY, n->parent, 0, n->name);
		notes_add(ns, NOTE_INODE, 0, n->parent, NULL);
	}
	if (n->nlookup > 0)
		notes_add(ns, NOTE_INODE, n->parent, n->ino, NULL);
}

static void hide(struct tree *t, struct node *n, struct notes *ns)
{
	if (n == NULL || !n->attached)
		return;
	tree_detach(t, n);
	if (n->nlookup > 0)
		notes_add(ns, NOTE_DELETE, n->parent, n->ino, n->name);
	notes_add(ns, NOTE_INODE, 0, n->parent, NULL);
	tree_node_maybe_free(t, n);
}

static void drop_unused(struct tree *t, struct node *n)
{
	if (n != NULL)
		tree_node_maybe_free(t, n);
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

int tree_put(struct tree *t, const char *tenant, const char *type, struct fsver *v, struct notes *ns)
{
	char crt[NAME_MAX_LEN], key[NAME_MAX_LEN], pem[NAME_MAX_LEN], ca[NAME_MAX_LEN];
	struct node *cn = NULL, *kn = NULL, *bn = NULL, *an = NULL, *cur, *ca_cur;
	struct fsver *old, *src, *v_key;
	bool ca_to_v = false, rescan = false;
	int rc = 0;

	file_name(crt, NODE_CERT, tenant, type);
	file_name(key, NODE_KEY, tenant, type);
	file_name(pem, NODE_BUNDLE, tenant, type);
	file_name(ca, NODE_CHAIN, tenant, type);
	cur = tree_lookup(t, INO_CERTS, crt);
	old = cur != NULL ? cur->ver : NULL;
	if ((v == NULL && old == NULL) || (v != NULL && old != NULL && fsver_same(v, old)))
		goto out;
	rc = 1;
	ca_cur = tree_lookup(t, INO_CA, ca);
	src = ca_cur != NULL ? ca_cur->ver : NULL;

	/*
	 * The /ca file follows the newest activation of the type.  Only when its
	 * source is this slot and the slot goes away or gets an older version
	 * must all slots of the type be looked at again (tree_settle).
	 */
	if (src != NULL && old != NULL && src->gen == old->gen)
		rescan = v == NULL || !fsver_newer(v, old);
	if (v != NULL && !rescan)
		ca_to_v = src == NULL || src->gen == (old ? old->gen : 0) || fsver_newer(v, src);
	v_key = v != NULL && v->sealed != NULL ? v : NULL;

	if (rescan && !is_unsettled(t, type) && reserve_unsettled(t) != 0) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	if (v != NULL) {
		if ((cn = prepare(t, NODE_CERT, crt)) == NULL ||
		    (v_key != NULL && ((kn = prepare(t, NODE_KEY, key)) == NULL ||
				       (bn = prepare(t, NODE_BUNDLE, pem)) == NULL)) ||
		    (ca_to_v && (an = prepare(t, NODE_CHAIN, ca)) == NULL)) {
			rc = CMK_ERR_NOMEM;
			drop_unused(t, cn);
			drop_unused(t, kn);
			drop_unused(t, bn);
			drop_unused(t, an);
			goto out;
		}
		show(t, cn, v, ns);
		if (ca_to_v)
			show(t, an, v, ns);
	} else {
		hide(t, cur, ns);
	}
	if (v_key != NULL) {
		show(t, kn, v, ns);
		show(t, bn, v, ns);
	} else {
		hide(t, tree_lookup(t, INO_PRIVATE, key), ns);
		hide(t, tree_lookup(t, INO_BUNDLE, pem), ns);
	}
	if (rescan && !is_unsettled(t, type))
		snprintf(t->unsettled[t->n_unsettled++], CMK_TYPE_MAX + 1, "%s", type);
out:
	fsver_unref(v);
	return rc;
}

int tree_settle(struct tree *t, struct notes *ns)
{
	char ca[NAME_MAX_LEN];

	while (t->n_unsettled > 0) {
		const char *type = t->unsettled[t->n_unsettled - 1];
		struct fsver *best = NULL;
		struct node *n;

		for (n = t->dirs[INO_CERTS].first; n != NULL; n = n->dnext)
			if (strcmp(n->ver->type, type) == 0 && (best == NULL || fsver_newer(n->ver, best)))
				best = n->ver;
		file_name(ca, NODE_CHAIN, "", type);
		if (best == NULL) {
			hide(t, tree_lookup(t, INO_CA, ca), ns);
		} else {
			if ((n = prepare(t, NODE_CHAIN, ca)) == NULL)
				return CMK_ERR_NOMEM;   /* stays unsettled; the caller tries again later */
			show(t, n, best, ns);
		}
		t->n_unsettled--;
	}
	return 0;
}

int tree_each_slot(struct tree *t, int (*cb)(const char *tenant, const char *type, void *arg), void *arg)
{
	int rc;

	for (struct node *n = t->dirs[INO_CERTS].first; n != NULL; n = n->dnext)
		if ((rc = cb(n->ver->tenant, n->ver->type, arg)) != 0)
			return rc;
	return 0;
}
