/*
 * pool.c - the key pool (pool.h): which pools the configuration asks for,
 * filling them, and a key's way from the pool into one record.
 *
 * A pool key is sealed under the pool's own key, bound to the pool's name
 * and the entry id (seal.h), so a pool blob opens only as that entry; the
 * record that takes it seals the key again under the tenant's key, bound
 * to that record.  Plaintext exists only in memory: as PEM in a locked
 * buffer while it is sealed or opened, and in the key handle.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/pool.h"
#include "cmkcert/util.h"

#define TXN_RETRIES 6
#define CLAIM_TRIES 4          /* keys that fail to unseal are discarded, and the next one tried */

void cmk_pool_name(enum cmk_key_type type, int bits, char out[CMK_POOL_NAME_MAX])
{
	snprintf(out, CMK_POOL_NAME_MAX, "%s-%d", cmk_key_type_name(type), bits);
}

static unsigned template_pool_size(const struct cmk_config *cfg, const struct cmk_template *tpl)
{
	int n = tpl->pool_size >= 0 ? tpl->pool_size : cfg->keys.pool_size;

	return n > 0 ? (unsigned)n : 0;
}

unsigned cmk_pool_target(const struct cmk_config *cfg, enum cmk_key_type type, int bits)
{
	unsigned target = 0;

	if (cfg->openbao.mode != CMK_MODE_SIGN)
		return 0;
	for (size_t i = 0; i < cfg->n_templates; i++) {
		const struct cmk_template *tpl = &cfg->templates[i];
		unsigned n = template_pool_size(cfg, tpl);

		if (tpl->key_type == type && tpl->key_bits == bits && n > target)
			target = n;
	}
	return target;
}

int cmk_pool_specs(const struct cmk_config *cfg, struct cmk_pool_spec **out, size_t *n)
{
	struct cmk_pool_spec *specs = calloc(cfg->n_templates + 1, sizeof(*specs));
	size_t count = 0;

	*out = NULL;
	*n = 0;
	if (specs == NULL)
		return CMK_ERR_NOMEM;
	for (size_t i = 0; i < cfg->n_templates; i++) {
		const struct cmk_template *tpl = &cfg->templates[i];
		unsigned target = cmk_pool_target(cfg, tpl->key_type, tpl->key_bits);
		bool seen = false;

		for (size_t j = 0; j < count; j++)
			seen = seen || (specs[j].type == tpl->key_type && specs[j].bits == tpl->key_bits);
		if (seen || target == 0)
			continue;
		cmk_pool_name(tpl->key_type, tpl->key_bits, specs[count].name);
		specs[count].type = tpl->key_type;
		specs[count].bits = tpl->key_bits;
		specs[count].target = target;
		count++;
	}
	*out = specs;
	*n = count;
	return 0;
}

/* ---- sealing ------------------------------------------------------------ */

static struct cmk_seal_aad pool_aad(const char *pool, uint64_t id)
{
	return (struct cmk_seal_aad){ CMK_SEAL_POOL, pool, id, "" };
}

/* Seal `key` as entry `id` of `pool` (*blob malloc'd, not secret). */
static int seal_key(struct cmk_sealer *s, const char *pool, uint64_t id, const struct cmk_key *key, uint8_t **blob,
		    size_t *len)
{
	struct cmk_seal_aad aad = pool_aad(pool, id);
	char *pem = NULL;
	size_t pem_len = 0;
	int rc;

	if ((rc = cmk_key_write_pem(key, &pem, &pem_len)) != 0)
		return rc;
	rc = cmk_seal(s, &aad, (const uint8_t *)pem, pem_len, blob, len);
	cmk_freezero(pem, pem_len + 1);
	return rc;
}

/* Open entry e's sealed key into a key handle; the PEM passes through locked memory only. */
static int open_key(struct cmk_sealer *s, const struct cmk_pool_entry *e, struct cmk_key **key)
{
	struct cmk_seal_aad aad = pool_aad(e->pool, e->id);
	size_t cap = cmk_unseal_size(e->sealed_key_len), len = 0;
	uint8_t *pem;
	int rc;

	*key = NULL;
	if (cap == 0)
		return cmk_fail(CMK_ERR_VERIFY, "key pool %s: entry %" PRIu64 " holds no sealed key", e->pool, e->id);
	if ((pem = cmk_locked_alloc(cap + 1)) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = cmk_unseal_into(s, &aad, e->sealed_key, e->sealed_key_len, pem, cap, &len)) == 0)
		rc = cmk_key_parse_pem((const char *)pem, len, key);
	cmk_locked_free(pem);
	return rc;
}

/* ---- filling ------------------------------------------------------------ */

struct add_arg {
	struct cmk_sealer *s;
	const char *pool;
	const struct cmk_key *key;
	const uint8_t *public_sha256;
};

static int add_txn(struct cmk_txn *txn, struct add_arg *a)
{
	struct cmk_pool_entry e = { 0 };
	int rc;

	if ((rc = cmk_store_pool_next_id(txn, &e.id)) != 0)
		return rc;
	snprintf(e.pool, sizeof(e.pool), "%s", a->pool);
	e.created_at = cmk_now();
	memcpy(e.public_sha256, a->public_sha256, sizeof(e.public_sha256));
	if ((rc = seal_key(a->s, a->pool, e.id, a->key, &e.sealed_key, &e.sealed_key_len)) == 0)
		rc = cmk_store_pool_add(txn, &e);
	cmk_pool_entry_clear(&e);
	return rc;
}

/* Run one store step in a transaction of its own, redone after a lock conflict. */
static int with_txn(struct cmk_store *st, int (*fn)(struct cmk_txn *, void *), void *arg)
{
	for (int attempt = 0;; attempt++) {
		struct cmk_txn *txn = NULL;
		int rc = cmk_store_begin(st, &txn);

		if (rc == 0)
			rc = fn(txn, arg);
		if (rc == 0)
			rc = cmk_store_commit(txn);
		else
			cmk_store_abort(txn);
		if (rc != CMK_ERR_BUSY || attempt >= TXN_RETRIES)
			return rc;
		cmk_errclear();
	}
}

static int add_fn(struct cmk_txn *txn, void *arg)
{
	return add_txn(txn, arg);
}

int cmk_pool_put(struct cmk_store *st, struct cmk_sealer *s, const char *pool, const struct cmk_key *key)
{
	uint8_t pub[32];
	int rc;

	if ((rc = cmk_key_public_sha256(key, pub)) == 0) {
		struct add_arg a = { s, pool, key, pub };
		rc = with_txn(st, add_fn, &a);
	}
	return rc;
}

int cmk_pool_add_one(struct cmk_store *st, struct cmk_sealer *s, const struct cmk_pool_spec *spec)
{
	struct cmk_key *key = NULL;
	int rc;

	/* The slow part, outside any transaction. */
	if ((rc = cmk_key_generate(spec->type, spec->bits, &key)) != 0)
		return rc;
	rc = cmk_pool_put(st, s, spec->name, key);
	cmk_key_free(key);
	return rc;
}

int cmk_pool_fill(struct cmk_store *st, struct cmk_sealer *s, const struct cmk_pool_spec *spec,
		  cmk_pool_stop_fn stop, void *arg, unsigned *added)
{
	unsigned n = 0, reaped = 0;
	int rc;

	if (added != NULL)
		*added = 0;
	if ((rc = cmk_store_pool_reap(st, &reaped)) != 0)
		return rc;
	for (;;) {
		struct cmk_pool_counts c;

		if ((rc = cmk_store_pool_counts(st, NULL, spec->name, &c)) != 0)
			break;
		if (c.free + c.claimed >= spec->target || (stop != NULL && stop(arg)))
			break;
		if ((rc = cmk_pool_add_one(st, s, spec)) != 0)
			break;
		n++;
		if (added != NULL)
			*added = n;
	}
	return rc;
}

/* ---- a key's way out of the pool ------------------------------------------ */

struct claim_arg {
	const char *pool;
	struct cmk_pool_entry *e;
};

static int claim_fn(struct cmk_txn *txn, void *arg)
{
	struct claim_arg *a = arg;

	cmk_pool_entry_clear(a->e);
	return cmk_store_pool_claim(txn, a->pool, a->e);
}

struct id_arg {
	const char *pool;
	uint64_t id;
};

static int discard_fn(struct cmk_txn *txn, void *arg)
{
	struct id_arg *a = arg;

	return cmk_store_pool_remove(txn, a->pool, a->id, false);
}

static int unclaim_fn(struct cmk_txn *txn, void *arg)
{
	struct id_arg *a = arg;

	return cmk_store_pool_unclaim(txn, a->pool, a->id);
}

int cmk_pool_claim(struct cmk_store *st, struct cmk_sealer *s, enum cmk_key_type type, int bits,
		   struct cmk_pool_claim *c, struct cmk_key **key)
{
	struct cmk_pool_entry e = { 0 };
	struct claim_arg a = { c->pool, &e };
	int rc = 0;

	*key = NULL;
	memset(c, 0, sizeof(*c));
	cmk_pool_name(type, bits, c->pool);
	for (int i = 0; i < CLAIM_TRIES; i++) {
		uint8_t pub[32];

		if ((rc = with_txn(st, claim_fn, &a)) != 0)
			break;
		/* What the entry says it holds must be what it holds: a wrong key is never used. */
		rc = open_key(s, &e, key);
		if (rc == 0 && (cmk_key_type(*key) != type || cmk_key_bits(*key) != bits ||
				cmk_key_public_sha256(*key, pub) != 0 || !cmk_memeq(pub, e.public_sha256, sizeof(pub))))
			rc = cmk_fail(CMK_ERR_VERIFY, "key pool %s: entry %" PRIu64 " holds another key than it says",
				      c->pool, e.id);
		if (rc == 0) {
			c->id = e.id;
			break;
		}
		cmk_key_free(*key);
		*key = NULL;
		cmk_log(CMK_LOG_WARN, "key pool %s: entry %" PRIu64 " is unusable (%s); discarding it", c->pool, e.id,
			cmk_errdetail());
		{
			struct id_arg d = { c->pool, e.id };
			if (with_txn(st, discard_fn, &d) != 0)
				cmk_log(CMK_LOG_WARN, "key pool %s: discarding entry %" PRIu64 ": %s", c->pool, e.id,
					cmk_errdetail());
		}
		rc = CMK_ERR_NOTFOUND;
	}
	cmk_pool_entry_clear(&e);
	if (rc == CMK_ERR_NOTFOUND)
		cmk_fail(rc, "key pool %s is empty", c->pool);
	return rc;
}

int cmk_pool_take(struct cmk_txn *txn, const struct cmk_pool_claim *c)
{
	if (c->id == 0)
		return 0;
	return cmk_store_pool_remove(txn, c->pool, c->id, true);
}

int cmk_pool_release(struct cmk_store *st, struct cmk_pool_claim *c, bool reusable)
{
	struct id_arg a = { c->pool, c->id };
	int rc;

	if (c->id == 0)
		return 0;
	rc = with_txn(st, reusable ? unclaim_fn : discard_fn, &a);
	if (rc == CMK_ERR_NOTFOUND)
		rc = 0;
	if (rc != 0)
		cmk_log(CMK_LOG_WARN, "key pool %s: %s entry %" PRIu64 ": %s (it is discarded when this process is gone)",
			c->pool, reusable ? "returning" : "discarding", c->id, cmk_errdetail());
	c->id = 0;
	return rc;
}

/* ---- status ------------------------------------------------------------- */

struct names {
	struct cmk_pool_state *v;
	size_t n, cap;
};

static int add_name(struct names *ns, const char *name, unsigned target)
{
	for (size_t i = 0; i < ns->n; i++) {
		if (strcmp(ns->v[i].name, name) == 0) {
			if (target > ns->v[i].target)
				ns->v[i].target = target;
			return 0;
		}
	}
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 8;
		struct cmk_pool_state *v = realloc(ns->v, cap * sizeof(*v));
		if (v == NULL)
			return CMK_ERR_NOMEM;
		ns->v = v;
		ns->cap = cap;
	}
	memset(&ns->v[ns->n], 0, sizeof(ns->v[ns->n]));
	snprintf(ns->v[ns->n].name, sizeof(ns->v[ns->n].name), "%s", name);
	ns->v[ns->n].target = target;
	ns->n++;
	return 0;
}

static int note_entry(const struct cmk_pool_entry *e, void *arg)
{
	return add_name(arg, e->pool, 0);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct cmk_pool_state *)a)->name, ((const struct cmk_pool_state *)b)->name);
}

int cmk_pool_states(struct cmk_store *st, const struct cmk_config *cfg, struct cmk_pool_state **out, size_t *n)
{
	struct cmk_pool_spec *specs = NULL;
	struct names ns = { 0 };
	size_t n_specs = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = cmk_pool_specs(cfg, &specs, &n_specs)) != 0)
		return rc;
	for (size_t i = 0; i < n_specs && rc == 0; i++)
		rc = add_name(&ns, specs[i].name, specs[i].target);
	free(specs);
	if (rc == 0)
		rc = cmk_store_pool_each(st, note_entry, &ns);
	for (size_t i = 0; i < ns.n && rc == 0; i++)
		rc = cmk_store_pool_counts(st, NULL, ns.v[i].name, &ns.v[i].counts);
	if (rc != 0) {
		free(ns.v);
		return rc;
	}
	if (ns.n > 1)
		qsort(ns.v, ns.n, sizeof(*ns.v), by_name);
	*out = ns.v;
	*n = ns.n;
	return 0;
}
