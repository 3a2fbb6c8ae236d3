/*
 * tree.c - slots, nodes, names and listings of the mount (see tree.h).
 *
 * Two hash tables find a slot by (tenant, type) and by its number (the
 * high half of its inode numbers); a third finds the nodes the kernel
 * holds by inode number.  Names are not stored: a lookup parses the name
 * into (tenant, type, kind) and asks the slot which generation, if any,
 * the caller may see under it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/util.h"
#include "tree_int.h"

static const char *const dir_names[N_DIRS + 1] = { NULL, NULL, "certs", "private", "ca", "bundle", "tls" };

static size_t name_hash(const char *tenant, const char *type)
{
	uint64_t h = 1469598103934665603ull;

	for (const unsigned char *p = (const unsigned char *)tenant; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211ull;
	h = (h ^ '/') * 1099511628211ull;
	for (const unsigned char *p = (const unsigned char *)type; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (size_t)h;
}

static size_t num_hash(uint64_t x)
{
	return (size_t)((x * 0x9e3779b97f4a7c15ull) >> 20);
}

int tree_new(const struct cmk_config *cfg, struct tree **out)
{
	struct tree *t;
	int64_t now = cmk_now();

	*out = NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return CMK_ERR_NOMEM;
	t->cfg = cfg;
	t->slots_mask = 1023;
	t->inos_mask = 1023;
	t->next_no = 1;
	t->by_name = calloc(t->slots_mask + 1, sizeof(*t->by_name));
	t->by_no = calloc(t->slots_mask + 1, sizeof(*t->by_no));
	t->inos = calloc(t->inos_mask + 1, sizeof(*t->inos));
	if (t->by_name == NULL || t->by_no == NULL || t->inos == NULL || pins_new(&t->pins) != 0 ||
	    pthread_mutex_init(&t->mu, NULL) != 0) {
		pins_free(t->pins);
		free(t->by_name);
		free(t->by_no);
		free(t->inos);
		free(t);
		return CMK_ERR_NOMEM;
	}
	for (fuse_ino_t i = 1; i <= N_DIRS; i++) {
		t->dirs[i].ino = i;
		t->dir_mtime[i] = now;
	}
	*out = t;
	return 0;
}

static void slot_destroy(struct tree *t, struct slot *s)
{
	pins_drop(t->pins, &s->groups);
	fsver_unref(s->ver);
	fsver_unref(s->last);
	free(s);
}

void tree_free(struct tree *t)
{
	struct slot *s, *next;

	if (t == NULL)
		return;
	for (size_t i = 0; i <= t->inos_mask; i++) {
		struct node *n = t->inos[i], *nn;
		for (; n != NULL; n = nn) {
			nn = n->hnext;
			fsver_unref(n->ver);
			free(n);
		}
	}
	for (s = t->first; s != NULL; s = next) {
		next = s->next;
		slot_destroy(t, s);
	}
	pins_free(t->pins);
	free(t->by_name);
	free(t->by_no);
	free(t->inos);
	free(t->unsettled);
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

/* ---- slots ---------------------------------------------------------------- */

/* Double the slot tables when they hold as many slots as buckets; failure only means longer chains. */
static void grow_slots(struct tree *t)
{
	size_t mask = t->slots_mask * 2 + 1;
	struct slot **bn = calloc(mask + 1, sizeof(*bn)), **bo = calloc(mask + 1, sizeof(*bo));

	if (bn == NULL || bo == NULL) {
		free(bn);
		free(bo);
		return;
	}
	for (struct slot *s = t->first; s != NULL; s = s->next) {
		size_t h = name_hash(s->tenant, s->type) & mask, g = num_hash(s->no) & mask;
		s->next_by_name = bn[h];
		bn[h] = s;
		s->next_by_no = bo[g];
		bo[g] = s;
	}
	free(t->by_name);
	free(t->by_no);
	t->by_name = bn;
	t->by_no = bo;
	t->slots_mask = mask;
}

struct slot *slot_find(struct tree *t, const char *tenant, const char *type)
{
	struct slot *s = t->by_name[name_hash(tenant, type) & t->slots_mask];

	for (; s != NULL; s = s->next_by_name)
		if (strcmp(s->tenant, tenant) == 0 && strcmp(s->type, type) == 0)
			return s;
	return NULL;
}

struct slot *slot_by_no(struct tree *t, uint32_t no)
{
	struct slot *s = t->by_no[num_hash(no) & t->slots_mask];

	for (; s != NULL; s = s->next_by_no)
		if (s->no == no)
			return s;
	return NULL;
}

struct slot *slot_add(struct tree *t, const char *tenant, const char *type)
{
	struct slot *s;
	size_t h;

	/* Numbers are never reused while mounted; 2^32 - 1 slots created in one mount is the end. */
	if (t->next_no == 0 || (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->no = t->next_no++;
	snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
	snprintf(s->type, sizeof(s->type), "%s", type);
	s->next_gen = 1;
	s->dir_mtime = cmk_now();
	if (t->n_slots >= t->slots_mask)
		grow_slots(t);
	h = name_hash(tenant, type) & t->slots_mask;
	s->next_by_name = t->by_name[h];
	t->by_name[h] = s;
	h = num_hash(s->no) & t->slots_mask;
	s->next_by_no = t->by_no[h];
	t->by_no[h] = s;
	s->prev = t->last;
	if (t->last != NULL)
		t->last->next = s;
	else
		t->first = s;
	t->last = s;
	t->n_slots++;
	return s;
}

void slot_maybe_free(struct tree *t, struct slot *s)
{
	struct slot **pp;

	if (s->ver != NULL || s->refs > 0 || s->leaving != 0)
		return;
	for (int k = 0; k < FK_N; k++)
		if (s->shown[k] != 0 || s->pending[k] != 0)
			return;
	for (pp = &t->by_name[name_hash(s->tenant, s->type) & t->slots_mask]; *pp != s; pp = &(*pp)->next_by_name)
		;
	*pp = s->next_by_name;
	for (pp = &t->by_no[num_hash(s->no) & t->slots_mask]; *pp != s; pp = &(*pp)->next_by_no)
		;
	*pp = s->next_by_no;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		t->first = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	else
		t->last = s->prev;
	t->n_slots--;
	slot_destroy(t, s);
}

static bool is_tls_file(enum fkind k)
{
	return k == FK_TLSCRT || k == FK_TLSKEY || k == FK_TLSCA;
}

void slot_name(const struct slot *s, enum fkind k, char *buf, size_t size)
{
	switch (k) {
	case FK_CERT: snprintf(buf, size, "%s-%s.crt", s->tenant, s->type); break;
	case FK_KEY: snprintf(buf, size, "%s-%s.key", s->tenant, s->type); break;
	case FK_BUNDLE: snprintf(buf, size, "%s-%s.pem", s->tenant, s->type); break;
	case FK_TLSDIR: snprintf(buf, size, "%s-%s", s->tenant, s->type); break;
	case FK_TLSCRT: snprintf(buf, size, "tls.crt"); break;
	case FK_TLSKEY: snprintf(buf, size, "tls.key"); break;
	case FK_TLSCA: snprintf(buf, size, "ca.crt"); break;
	case FK_CHAIN: snprintf(buf, size, "%s-ca-chain.pem", s->type); break;
	case FK_N: buf[0] = '\0'; break;
	}
}

fuse_ino_t slot_parent(const struct slot *s, enum fkind k)
{
	switch (k) {
	case FK_CERT: return INO_CERTS;
	case FK_KEY: return INO_PRIVATE;
	case FK_BUNDLE: return INO_BUNDLE;
	case FK_CHAIN: return INO_CA;
	case FK_TLSDIR: return INO_TLS;
	case FK_TLSCRT:
	case FK_TLSKEY:
	case FK_TLSCA:
		if (s->shown[FK_TLSDIR] != 0)
			return ino_make(s->no, FK_TLSDIR, s->shown[FK_TLSDIR]);
		if (s->pending[FK_TLSDIR] != 0)
			return ino_make(s->no, FK_TLSDIR, s->pending[FK_TLSDIR]);
		return 0;
	case FK_N: break;
	}
	return 0;
}

uint32_t slot_visible(const struct slot *s, enum fkind k, bool announcer)
{
	if (s->shown[k] == 0)
		return 0;
	if ((s->leaving & (1u << k)) != 0 && !announcer)
		return 0;
	return s->shown[k];
}

/* ---- nodes ---------------------------------------------------------------- */

static void grow_inos(struct tree *t)
{
	size_t mask = t->inos_mask * 2 + 1;
	struct node **b = calloc(mask + 1, sizeof(*b));

	if (b == NULL)
		return;
	for (size_t i = 0; i <= t->inos_mask; i++) {
		struct node *n = t->inos[i], *next;
		for (; n != NULL; n = next) {
			size_t h = num_hash(n->ino) & mask;
			next = n->hnext;
			n->hnext = b[h];
			b[h] = n;
		}
	}
	free(t->inos);
	t->inos = b;
	t->inos_mask = mask;
}

struct node *tree_node(struct tree *t, fuse_ino_t ino)
{
	struct node *n;

	if (ino >= 1 && ino <= N_DIRS)
		return &t->dirs[ino];
	for (n = t->inos[num_hash(ino) & t->inos_mask]; n != NULL; n = n->hnext)
		if (n->ino == ino)
			return n;
	return NULL;
}

struct node *node_get(struct tree *t, struct slot *s, enum fkind k, uint32_t gen)
{
	fuse_ino_t ino = ino_make(s->no, k, gen);
	struct node *n = tree_node(t, ino);
	struct fsver *v = s->ver != NULL ? s->ver : s->last;
	size_t h;

	if (n != NULL)
		return n;
	if (v == NULL || (n = calloc(1, sizeof(*n))) == NULL)
		return NULL;
	n->ino = ino;
	n->slot = s;
	n->kind = k;
	n->gen = gen;
	n->ver = fsver_ref(v);
	s->refs++;
	if (t->n_nodes >= t->inos_mask)
		grow_inos(t);
	h = num_hash(ino) & t->inos_mask;
	n->hnext = t->inos[h];
	t->inos[h] = n;
	t->n_nodes++;
	return n;
}

static void node_maybe_free(struct tree *t, struct node *n)
{
	struct node **pp;
	struct slot *s = n->slot;

	if (s == NULL || n->nlookup > 0 || n->handles > 0)
		return;
	for (pp = &t->inos[num_hash(n->ino) & t->inos_mask]; *pp != n; pp = &(*pp)->hnext)
		;
	*pp = n->hnext;
	t->n_nodes--;
	fsver_unref(n->ver);
	free(n);
	s->refs--;
	slot_maybe_free(t, s);
}

void tree_ref(struct tree *t, struct node *n)
{
	(void)t;
	n->nlookup++;
}

void tree_forget(struct tree *t, fuse_ino_t ino, uint64_t count)
{
	struct node *n = tree_node(t, ino);

	if (n == NULL || n->slot == NULL)
		return;
	n->nlookup = count < n->nlookup ? n->nlookup - count : 0;
	node_maybe_free(t, n);
}

void tree_handle_opened(struct tree *t, struct node *n)
{
	(void)t;
	n->handles++;
}

void tree_handle_released(struct tree *t, struct node *n)
{
	n->handles--;
	node_maybe_free(t, n);
}

/* ---- names ---------------------------------------------------------------- */

/* "<tenant>-<type><suffix>" into its parts; false when it is not such a name. */
static bool parse_slot_name(const char *name, const char *suffix, char tenant[CMK_TENANT_MAX + 1],
			    char type[CMK_TYPE_MAX + 1])
{
	size_t len = strlen(name), sl = strlen(suffix);

	if (len <= sl || strcmp(name + len - sl, suffix) != 0)
		return false;
	return cmk_split_tenant_type(name, len - sl, tenant, type);
}

/* A hidden name ".~<hex inode>"; 0 when it is not one. */
static fuse_ino_t parse_hidden(const char *name)
{
	fuse_ino_t ino = 0;
	const char *p;

	if (name[0] != '.' || name[1] != '~' || name[2] == '\0' || strlen(name) > 18)
		return 0;
	for (p = name + 2; *p != '\0'; p++) {
		int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
		if (d < 0)
			return 0;
		ino = ino << 4 | (fuse_ino_t)d;
	}
	return ino;
}

/*
 * The /tls/<s> directory that inode `dir` is, if the caller may look into
 * it: the shown one (not leaving, unless the caller is the announcer), or
 * for the announcer also a pending one.
 */
static struct slot *tls_dir(struct tree *t, fuse_ino_t dir, bool announcer)
{
	struct slot *s;
	uint32_t gen = ino_gen(dir);

	if (dir <= N_DIRS || ino_kind(dir) != FK_TLSDIR || (s = slot_by_no(t, ino_slot_no(dir))) == NULL)
		return NULL;
	if (gen != 0 && (gen == slot_visible(s, FK_TLSDIR, announcer) || (announcer && gen == s->pending[FK_TLSDIR])))
		return s;
	return NULL;
}

/* Which slot and kind `name` in `parent` stands for; false when none. */
static bool resolve(struct tree *t, fuse_ino_t parent, const char *name, bool announcer, struct slot **sp,
		    enum fkind *kp)
{
	char tenant[CMK_TENANT_MAX + 1], type[CMK_TYPE_MAX + 1];
	struct slot *s = NULL;
	enum fkind k;

	switch (parent) {
	case INO_CERTS:
		k = FK_CERT;
		if (parse_slot_name(name, ".crt", tenant, type))
			s = slot_find(t, tenant, type);
		break;
	case INO_PRIVATE:
		k = FK_KEY;
		if (parse_slot_name(name, ".key", tenant, type))
			s = slot_find(t, tenant, type);
		break;
	case INO_BUNDLE:
		k = FK_BUNDLE;
		if (parse_slot_name(name, ".pem", tenant, type))
			s = slot_find(t, tenant, type);
		break;
	case INO_TLS:
		k = FK_TLSDIR;
		if (cmk_split_tenant_type(name, strlen(name), tenant, type))
			s = slot_find(t, tenant, type);
		break;
	case INO_CA: {
		size_t len = strlen(name), sl = strlen("-ca-chain.pem");
		k = FK_CHAIN;
		if (len > sl && len - sl <= CMK_TYPE_MAX && strcmp(name + len - sl, "-ca-chain.pem") == 0) {
			memcpy(type, name, len - sl);
			type[len - sl] = '\0';
			if (cmk_is_valid_type(type))
				s = slot_find(t, "", type);
		}
		break;
	}
	default:
		if ((s = tls_dir(t, parent, announcer)) == NULL)
			return false;
		if (strcmp(name, "tls.crt") == 0)
			k = FK_TLSCRT;
		else if (strcmp(name, "tls.key") == 0)
			k = FK_TLSKEY;
		else if (strcmp(name, "ca.crt") == 0)
			k = FK_TLSCA;
		else
			return false;
		break;
	}
	if (s == NULL || (k != FK_CHAIN && s->tenant[0] == '\0'))
		return false;
	*sp = s;
	*kp = k;
	return true;
}

struct node *tree_lookup_ref(struct tree *t, fuse_ino_t parent, const char *name, bool announcer, bool *nomem)
{
	struct slot *s;
	struct node *n;
	fuse_ino_t hidden;
	enum fkind k;
	uint32_t gen;

	*nomem = false;
	if (parent == INO_ROOT) {
		for (fuse_ino_t i = INO_CERTS; i <= N_DIRS; i++)
			if (strcmp(name, dir_names[i]) == 0)
				return &t->dirs[i];
		return NULL;
	}
	if ((hidden = parse_hidden(name)) != 0) {
		if (!announcer || (s = slot_by_no(t, ino_slot_no(hidden))) == NULL)
			return NULL;
		k = ino_kind(hidden);
		gen = ino_gen(hidden);
		if (k >= FK_N || gen == 0 || s->pending[k] != gen || slot_parent(s, k) != parent)
			return NULL;
	} else {
		if (!resolve(t, parent, name, announcer, &s, &k) || (gen = slot_visible(s, k, announcer)) == 0)
			return NULL;
	}
	if ((n = node_get(t, s, k, gen)) == NULL) {
		*nomem = true;
		return NULL;
	}
	n->nlookup++;
	return n;
}

bool tree_node_visible(const struct tree *t, const struct node *n)
{
	const struct slot *s = n->slot;

	(void)t;
	if (s == NULL)
		return true;
	if (n->gen != slot_visible(s, n->kind, false))
		return false;
	return !is_tls_file(n->kind) || slot_visible(s, FK_TLSDIR, false) != 0;
}

/* ---- attributes ----------------------------------------------------------- */

static mode_t file_mode(const struct tree *t, enum fkind k)
{
	switch (k) {
	case FK_CERT:
	case FK_TLSCRT: return t->cfg->fuse.cert_mode;
	case FK_TLSCA:
	case FK_CHAIN: return t->cfg->fuse.ca_mode;
	case FK_KEY:
	case FK_BUNDLE:
	case FK_TLSKEY: return t->cfg->fuse.key_mode;
	case FK_TLSDIR:
	case FK_N: break;
	}
	return 0;
}

static size_t file_size(enum fkind k, const struct fsver *v)
{
	switch (k) {
	case FK_CERT: return v->cert_len;
	case FK_TLSCRT: return v->cert_len + v->chain_len;
	case FK_TLSCA:
	case FK_CHAIN: return v->chain_len;
	case FK_KEY:
	case FK_TLSKEY: return v->key_len;
	case FK_BUNDLE: return fsver_bundle_len(v);
	case FK_TLSDIR:
	case FK_N: break;
	}
	return 0;
}

void tree_stat_version(const struct tree *t, const struct node *n, const struct fsver *v, struct stat *st)
{
	bool visible = tree_node_visible(t, n);

	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_blksize = 4096;
	if (n->slot == NULL) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = n->ino == INO_ROOT ? 2 + N_DIRS - 1 : 2;
		st->st_uid = t->cfg->fuse.uid;
		st->st_gid = t->cfg->fuse.gid;
		st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = t->dir_mtime[n->ino];
		return;
	}
	if (n->kind == FK_TLSDIR) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = visible ? 2 : 0;
		st->st_uid = v->uid;
		st->st_gid = v->gid;
		st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = n->slot->dir_mtime;
		return;
	}
	st->st_mode = S_IFREG | (file_mode(t, n->kind) & 07777);
	st->st_nlink = visible ? 1 : 0;
	if (n->kind == FK_CHAIN) {
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

struct fsver *tree_current(struct tree *t, const struct node *n)
{
	const struct slot *s = n->slot;

	(void)t;
	if (s == NULL || s->ver == NULL || n->kind == FK_TLSDIR)
		return NULL;
	if (n->kind == FK_CHAIN)
		return n->ver;          /* a /ca inode always shows the chain it was made for */
	if (fkind_has_key(n->kind) && s->ver->sealed == NULL)
		return NULL;
	return s->ver;
}

struct fsver *tree_choose(struct tree *t, struct node *n, pid_t tgid, pid_t tid, int64_t now_ms)
{
	struct fsver *cur = tree_current(t, n), *v;
	enum pin_role role;

	if (cur == NULL)
		return NULL;
	switch (n->kind) {
	case FK_CERT:
	case FK_TLSCRT: role = PIN_CERT; break;
	case FK_KEY:
	case FK_TLSKEY: role = PIN_KEY; break;
	case FK_BUNDLE: role = PIN_BUNDLE; break;
	case FK_TLSCA: role = PIN_FOLLOW; break;
	default: return fsver_ref(cur);
	}
	v = pins_choose(t->pins, &n->slot->groups, cur, n->slot->switched_ms, tgid, tid, role, now_ms);
	/* A key file never answers with a version that has no key (cur has one). */
	if (fkind_has_key(n->kind) && v->sealed == NULL) {
		fsver_unref(v);
		v = fsver_ref(cur);
	}
	return v;
}

void tree_bundle_closed(struct tree *t, struct node *n, pid_t tgid)
{
	(void)t;
	if (n->slot != NULL)
		pins_bundle_closed(n->slot->groups, tgid);
}

void tree_path(const struct tree *t, const struct node *n, char *buf, size_t size)
{
	char name[TREE_NAME_MAX], dir[TREE_NAME_MAX];

	if (n->slot == NULL) {
		snprintf(buf, size, "/%s", n->ino == INO_ROOT ? "" : dir_names[n->ino]);
		return;
	}
	slot_name(n->slot, n->kind, name, sizeof(name));
	if (is_tls_file(n->kind)) {
		slot_name(n->slot, FK_TLSDIR, dir, sizeof(dir));
		snprintf(buf, size, "/tls/%s/%s", dir, name);
	} else {
		snprintf(buf, size, "/%s/%s", dir_names[slot_parent(n->slot, n->kind)], name);
	}
	(void)t;
}

/* ---- listings --------------------------------------------------------------- */

int tree_each_slot(struct tree *t, int (*cb)(const char *tenant, const char *type, void *arg), void *arg)
{
	int rc;

	for (struct slot *s = t->first; s != NULL; s = s->next)
		if (s->tenant[0] != '\0' && s->ver != NULL && (rc = cb(s->tenant, s->type, arg)) != 0)
			return rc;
	return 0;
}

struct listing {
	struct dirsnap *snap;           /* NULL while counting */
	size_t n, bytes;
};

static void list_add(struct tree *t, struct listing *l, const char *name, fuse_ino_t ino, const struct slot *s,
		     enum fkind k)
{
	size_t len = strlen(name) + 1;

	if (l->snap != NULL) {
		struct dirsnap *d = l->snap;
		const struct fsver *v = s != NULL ? s->ver : NULL;
		memcpy(d->names + l->bytes, name, len);
		d->e[l->n].ino = ino;
		d->e[l->n].name = l->bytes;
		d->e[l->n].dir = s == NULL || k == FK_TLSDIR;
		d->e[l->n].uid = v != NULL && k != FK_CHAIN ? v->uid : t->cfg->fuse.uid;
		d->e[l->n].gid = v != NULL && k != FK_CHAIN ? v->gid : t->cfg->fuse.gid;
		d->e[l->n].mode = s == NULL || k == FK_TLSDIR ? S_IFDIR | 0555 : S_IFREG | (file_mode(t, k) & 07777);
	}
	l->n++;
	l->bytes += len;
}

static void list_slots(struct tree *t, struct listing *l, enum fkind k)
{
	char name[TREE_NAME_MAX];
	uint32_t gen;

	for (struct slot *s = t->first; s != NULL; s = s->next) {
		if ((k == FK_CHAIN) != (s->tenant[0] == '\0') || (gen = slot_visible(s, k, false)) == 0)
			continue;
		slot_name(s, k, name, sizeof(name));
		list_add(t, l, name, ino_make(s->no, k, gen), s, k);
	}
}

static void list_dir(struct tree *t, struct listing *l, fuse_ino_t dir, struct slot *tls)
{
	static const enum fkind tls_files[] = { FK_TLSCRT, FK_TLSKEY, FK_TLSCA };
	char name[TREE_NAME_MAX];
	uint32_t gen;

	switch (dir) {
	case INO_ROOT:
		for (fuse_ino_t i = INO_CERTS; i <= N_DIRS; i++)
			list_add(t, l, dir_names[i], i, NULL, FK_N);
		break;
	case INO_CERTS: list_slots(t, l, FK_CERT); break;
	case INO_PRIVATE: list_slots(t, l, FK_KEY); break;
	case INO_BUNDLE: list_slots(t, l, FK_BUNDLE); break;
	case INO_CA: list_slots(t, l, FK_CHAIN); break;
	case INO_TLS: list_slots(t, l, FK_TLSDIR); break;
	default:
		for (size_t i = 0; i < sizeof(tls_files) / sizeof(tls_files[0]); i++) {
			if ((gen = slot_visible(tls, tls_files[i], false)) == 0)
				continue;
			slot_name(tls, tls_files[i], name, sizeof(name));
			list_add(t, l, name, ino_make(tls->no, tls_files[i], gen), tls, tls_files[i]);
		}
		break;
	}
}

struct dirsnap *tree_dir_snapshot(struct tree *t, fuse_ino_t dir, int *err)
{
	struct listing l = { 0 };
	struct slot *tls = NULL;
	struct node *n;

	*err = 0;
	if (dir > N_DIRS) {
		if ((n = tree_node(t, dir)) == NULL) {
			*err = ENOENT;
			return NULL;
		}
		if (n->kind != FK_TLSDIR) {
			*err = ENOTDIR;
			return NULL;
		}
		/* A directory that went away lists nothing. */
		tls = tls_dir(t, dir, false);
	} else if (dir < 1) {
		*err = ENOENT;
		return NULL;
	}
	if (tls != NULL || dir <= N_DIRS)
		list_dir(t, &l, dir, tls);
	if ((l.snap = malloc(sizeof(*l.snap) + l.n * sizeof(l.snap->e[0]))) == NULL ||
	    (l.snap->names = malloc(l.bytes + 1)) == NULL) {
		free(l.snap);
		*err = ENOMEM;
		return NULL;
	}
	l.n = l.bytes = 0;
	if (tls != NULL || dir <= N_DIRS)
		list_dir(t, &l, dir, tls);
	l.snap->n = l.n;
	return l.snap;
}

size_t tree_files(const struct tree *t)
{
	size_t n = 0;

	for (const struct slot *s = t->first; s != NULL; s = s->next)
		for (int k = 0; k < FK_N; k++)
			n += slot_visible(s, (enum fkind)k, false) != 0;
	return n;
}

void dirsnap_free(struct dirsnap *s)
{
	if (s != NULL)
		free(s->names);
	free(s);
}

void notes_clear(struct notes *ns)
{
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

int notes_add(struct notes *ns, enum note_kind kind, fuse_ino_t parent, fuse_ino_t ino, const char *name)
{
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 16;
		struct note *v = realloc(ns->v, cap * sizeof(*v));
		if (v == NULL) {
			ns->oom = true;
			return CMK_ERR_NOMEM;
		}
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n].kind = kind;
	ns->v[ns->n].parent = parent;
	ns->v[ns->n].ino = ino;
	snprintf(ns->v[ns->n].name, sizeof(ns->v[ns->n].name), "%s", name != NULL ? name : "");
	ns->n++;
	return 0;
}
