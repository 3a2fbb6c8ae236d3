/*
 * store_pool.c - the key pool's entries on Berkeley DB (pool.db).
 *
 * Keys of pool.db:
 *   <pool name> 0x00 <id, 8 bytes big-endian>   an entry (ordered by pool, then age)
 *   0x00 "next"                                 the next entry id
 *   0x00 "count" 0x00 <pool name>               generated, used, discarded (8 bytes each)
 * A pool name never starts with a NUL, so the bookkeeping keys sort apart.
 *
 * Entry value (format 1, integers big-endian):
 *   0  1   format
 *   1  4   key slot (keys.db, store_keys.c)
 *   5  8   created_at
 *   13 4   pid of the process using it, 0 = free
 *   17 8   claimed_at
 *   25 32  SHA-256 of the public key
 *
 * The sealed key sits in a key slot like a certificate's, so taking or
 * discarding an entry zeroes its bytes in place (store_keys.c explains why
 * a B-tree item would not do).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "store_bdb_int.h"

#define ENTRY_V1 1u
#define ENTRY_LEN 57
#define KEY_MAX (CMK_POOL_NAME_MAX + 1 + 8)
#define COUNT_KEY_MAX (7 + CMK_POOL_NAME_MAX)
#define REAP_MAX 64            /* stale entries discarded per transaction */

static const uint8_t next_key[] = { 0, 'n', 'e', 'x', 't' };

static void dbt_set(DBT *d, const void *p, size_t n)
{
	memset(d, 0, sizeof(*d));
	d->data = (void *)p;
	d->size = (u_int32_t)n;
}

static void dbt_buf(DBT *d, void *buf, size_t n, size_t cap)
{
	dbt_set(d, buf, n);
	d->ulen = (u_int32_t)cap;
	d->flags = DB_DBT_USERMEM;
}

int store_pool_open(struct store_gen *g, DB_TXN *t)
{
	DB *db = NULL;
	int ret;

	if ((ret = db_create(&db, g->env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating a handle for pool.db", g->st->path);
	if ((ret = db->open(db, t, "pool.db", NULL, DB_BTREE, DB_CREATE | DB_THREAD, 0600)) != 0) {
		db->close(db, DB_NOSYNC);
		return db_fail(g, ret, "store_open: %s: opening pool.db", g->st->path);
	}
	g->pool = db;
	return 0;
}

void store_pool_close(struct store_gen *g, u_int32_t flags)
{
	if (g->pool != NULL)
		g->pool->close(g->pool, flags);
	g->pool = NULL;
}

void cmk_pool_entry_clear(struct cmk_pool_entry *e)
{
	if (e == NULL)
		return;
	cmk_freezero(e->sealed_key, e->sealed_key_len);
	memset(e, 0, sizeof(*e));
}

/* A pool name as the pool module makes them: short, printable, no NUL. */
static size_t pool_name_len(const char *pool)
{
	size_t n = pool != NULL ? strnlen(pool, CMK_POOL_NAME_MAX) : 0;

	return n == 0 || n >= CMK_POOL_NAME_MAX ? 0 : n;
}

static size_t entry_key(const char *pool, uint64_t id, uint8_t out[KEY_MAX])
{
	size_t n = pool_name_len(pool);

	if (n == 0)
		return 0;
	memcpy(out, pool, n);
	out[n] = 0;
	cmk_be64_put(out + n + 1, id);
	return n + 9;
}

static size_t count_key(const char *pool, uint8_t out[COUNT_KEY_MAX])
{
	static const uint8_t prefix[] = { 0, 'c', 'o', 'u', 'n', 't', 0 };
	size_t n = pool_name_len(pool);

	memcpy(out, prefix, sizeof(prefix));
	memcpy(out + sizeof(prefix), pool, n);
	return sizeof(prefix) + n;
}

static void entry_encode(const struct cmk_pool_entry *e, uint32_t slot, uint8_t out[ENTRY_LEN])
{
	out[0] = ENTRY_V1;
	cmk_be32_put(out + 1, slot);
	cmk_be64_put(out + 5, (uint64_t)e->created_at);
	cmk_be32_put(out + 13, e->claim_pid);
	cmk_be64_put(out + 17, (uint64_t)e->claimed_at);
	memcpy(out + 25, e->public_sha256, 32);
}

/* The entry stored under key `k` (pool name, NUL, id) with value `v`; *slot its key slot. */
static int entry_decode(struct store_gen *g, const DBT *k, const DBT *v, struct cmk_pool_entry *e, uint32_t *slot)
{
	const uint8_t *kb = k->data, *vb = v->data;
	size_t n;

	memset(e, 0, sizeof(*e));
	if (k->size < 10 || k->size - 9 >= CMK_POOL_NAME_MAX || kb[k->size - 9] != 0 || v->size != ENTRY_LEN ||
	    vb[0] != ENTRY_V1)
		return cmk_fail(CMK_ERR_STORE, "store: %s: a key pool entry is damaged", g->st->path);
	n = k->size - 9;
	memcpy(e->pool, kb, n);
	e->id = cmk_be64_get(kb + n + 1);
	*slot = cmk_be32_get(vb + 1);
	e->created_at = (int64_t)cmk_be64_get(vb + 5);
	e->claim_pid = cmk_be32_get(vb + 13);
	e->claimed_at = (int64_t)cmk_be64_get(vb + 17);
	memcpy(e->public_sha256, vb + 25, 32);
	return 0;
}

/* ---- counters ---------------------------------------------------------- */

enum counter { C_GENERATED = 0, C_USED = 1, C_DISCARDED = 2, C_N };

static int counters_read(struct store_gen *g, DB_TXN *t, const char *pool, u_int32_t rmw, uint64_t c[C_N])
{
	uint8_t kb[COUNT_KEY_MAX], vb[8 * C_N];
	DBT k, v;
	int ret;

	memset(c, 0, sizeof(uint64_t) * C_N);
	dbt_set(&k, kb, count_key(pool, kb));
	dbt_buf(&v, vb, 0, sizeof(vb));
	ret = g->pool->get(g->pool, t, &k, &v, rmw);
	if (ret == DB_NOTFOUND)
		return 0;
	if (ret == 0 && v.size != sizeof(vb))
		return cmk_fail(CMK_ERR_STORE, "store: %s: the counters of key pool %s are damaged", g->st->path, pool);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: reading the counters of key pool %s", g->st->path, pool);
	for (int i = 0; i < C_N; i++)
		c[i] = cmk_be64_get(vb + 8 * i);
	return 0;
}

static int counter_add(struct store_gen *g, DB_TXN *t, const char *pool, enum counter which)
{
	uint8_t kb[COUNT_KEY_MAX], vb[8 * C_N];
	uint64_t c[C_N];
	DBT k, v;
	int ret, rc;

	if ((rc = counters_read(g, t, pool, DB_RMW, c)) != 0)
		return rc;
	c[which]++;
	for (int i = 0; i < C_N; i++)
		cmk_be64_put(vb + 8 * i, c[i]);
	dbt_set(&k, kb, count_key(pool, kb));
	dbt_set(&v, vb, sizeof(vb));
	if ((ret = g->pool->put(g->pool, t, &k, &v, 0)) != 0)
		return db_fail(g, ret, "store: %s: writing the counters of key pool %s", g->st->path, pool);
	return 0;
}

/* ---- entries ----------------------------------------------------------- */

int cmk_store_pool_next_id(struct cmk_txn *txn, uint64_t *id)
{
	struct store_gen *g;
	uint8_t vb[8];
	uint64_t next = 1;
	DBT k, v;
	int ret, rc;

	*id = 0;
	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	g = txn->g;
	dbt_set(&k, next_key, sizeof(next_key));
	dbt_buf(&v, vb, 0, sizeof(vb));
	ret = g->pool->get(g->pool, txn->t, &k, &v, DB_RMW);
	if (ret == 0 && v.size == sizeof(vb) && cmk_be64_get(vb) != 0)
		next = cmk_be64_get(vb);
	else if (ret == 0 || ret == DB_BUFFER_SMALL)
		rc = cmk_fail(CMK_ERR_STORE, "store: %s: the key pool's next id is damaged", g->st->path);
	else if (ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: reading the key pool's next id", g->st->path);
	if (rc == 0) {
		cmk_be64_put(vb, next + 1);
		dbt_set(&v, vb, sizeof(vb));
		if ((ret = g->pool->put(g->pool, txn->t, &k, &v, 0)) != 0)
			rc = db_fail(g, ret, "store: %s: writing the key pool's next id", g->st->path);
	}
	if (rc == 0) {
		txn->wrote = true;
		*id = next;
	}
	gen_leave(g);
	return rc;
}

int cmk_store_pool_add(struct cmk_txn *txn, const struct cmk_pool_entry *e)
{
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	struct store_gen *g;
	uint32_t slot = 0;
	size_t n;
	DBT k, v;
	int ret, rc;

	if (e->id == 0 || (n = entry_key(e->pool, e->id, kb)) == 0 || e->sealed_key == NULL || e->claim_pid != 0)
		return cmk_fail(CMK_ERR_INVALID, "store_pool_add: an entry needs an id, a pool name and a sealed key");
	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	g = txn->g;
	if ((rc = store_key_write(g, txn->t, &slot, e->sealed_key, e->sealed_key_len)) != 0)
		goto out;
	entry_encode(e, slot, vb);
	dbt_set(&k, kb, n);
	dbt_set(&v, vb, sizeof(vb));
	if ((ret = g->pool->put(g->pool, txn->t, &k, &v, DB_NOOVERWRITE)) != 0) {
		rc = db_fail(g, ret, "store: %s: adding key pool entry %" PRIu64, g->st->path, e->id);
		goto out;
	}
	txn->wrote = true;
	rc = counter_add(g, txn->t, e->pool, C_GENERATED);
out:
	gen_leave(g);
	return rc;
}

int cmk_store_pool_claim(struct cmk_txn *txn, const char *pool, struct cmk_pool_entry *out)
{
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	size_t plen = pool_name_len(pool);
	struct store_gen *g;
	uint32_t slot = 0;
	DBT k, v;
	DBC *c;
	int ret, rc;

	memset(out, 0, sizeof(*out));
	if (plen == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_pool_claim: no pool name");
	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	g = txn->g;
	if ((ret = g->pool->cursor(g->pool, txn->t, &c, 0)) != 0) {
		rc = db_fail(g, ret, "store: %s: reading key pool %s", g->st->path, pool);
		goto out;
	}
	/* From the first key of the pool (its name and the NUL): the oldest entry first. */
	memcpy(kb, pool, plen);
	kb[plen] = 0;
	dbt_buf(&k, kb, plen + 1, sizeof(kb));
	dbt_buf(&v, vb, 0, sizeof(vb));
	rc = CMK_ERR_NOTFOUND;
	for (ret = c->get(c, &k, &v, DB_SET_RANGE | DB_RMW); ret == 0; ret = c->get(c, &k, &v, DB_NEXT | DB_RMW)) {
		if (k.size != plen + 9 || memcmp(kb, pool, plen) != 0 || kb[plen] != 0)
			break;
		if ((rc = entry_decode(g, &k, &v, out, &slot)) != 0)
			break;
		if (out->claim_pid != 0) {
			rc = CMK_ERR_NOTFOUND;
			continue;
		}
		out->claim_pid = (uint32_t)getpid();
		out->claimed_at = cmk_now();
		entry_encode(out, slot, vb);
		dbt_set(&v, vb, sizeof(vb));
		if ((ret = c->put(c, &k, &v, DB_CURRENT)) != 0)
			rc = db_fail(g, ret, "store: %s: claiming key pool entry %" PRIu64, g->st->path, out->id);
		break;
	}
	c->close(c);
	if (rc == CMK_ERR_NOTFOUND && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: reading key pool %s", g->st->path, pool);
	if (rc == 0) {
		txn->wrote = true;
		rc = store_key_read(g, txn->t, slot, DB_RMW, &out->sealed_key, &out->sealed_key_len);
	}
out:
	if (rc != 0)
		cmk_pool_entry_clear(out);
	gen_leave(g);
	return rc;
}

/* Read entry `id` of `pool` for update. */
static int entry_get(struct store_gen *g, DB_TXN *t, const char *pool, uint64_t id, struct cmk_pool_entry *e,
		     uint32_t *slot)
{
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	size_t n = entry_key(pool, id, kb);
	DBT k, v;
	int ret, rc;

	if (n == 0)
		return cmk_fail(CMK_ERR_INVALID, "store: no key pool name given");
	dbt_set(&k, kb, n);
	dbt_buf(&v, vb, 0, sizeof(vb));
	if ((ret = g->pool->get(g->pool, t, &k, &v, DB_RMW)) == DB_NOTFOUND)
		return cmk_fail(CMK_ERR_NOTFOUND, "store: key pool %s has no entry %" PRIu64, pool, id);
	if (ret == DB_BUFFER_SMALL)
		return cmk_fail(CMK_ERR_STORE, "store: %s: a key pool entry is damaged", g->st->path);
	if (ret != 0)
		return db_fail(g, ret, "store: %s: reading key pool entry %" PRIu64, g->st->path, id);
	if ((rc = entry_decode(g, &k, &v, e, slot)) != 0)
		return rc;
	if (e->claim_pid != (uint32_t)getpid())
		return cmk_fail(CMK_ERR_STATE, "store: key pool entry %" PRIu64 " is not claimed by this process", id);
	return 0;
}

int cmk_store_pool_unclaim(struct cmk_txn *txn, const char *pool, uint64_t id)
{
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	struct cmk_pool_entry e;
	struct store_gen *g;
	uint32_t slot;
	DBT k, v;
	int ret, rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	g = txn->g;
	if ((rc = entry_get(g, txn->t, pool, id, &e, &slot)) == 0) {
		e.claim_pid = 0;
		e.claimed_at = 0;
		entry_encode(&e, slot, vb);
		dbt_set(&k, kb, entry_key(pool, id, kb));
		dbt_set(&v, vb, sizeof(vb));
		if ((ret = g->pool->put(g->pool, txn->t, &k, &v, 0)) != 0)
			rc = db_fail(g, ret, "store: %s: freeing key pool entry %" PRIu64, g->st->path, id);
		else
			txn->wrote = true;
	}
	gen_leave(g);
	return rc;
}

/* Delete the entry under cursor `c` (or else stored under `k`), zero its slot, count it. */
static int entry_drop(struct store_gen *g, DB_TXN *t, DBC *c, DBT *k, const struct cmk_pool_entry *e,
		      uint32_t slot, bool used)
{
	int ret, rc;

	if ((ret = c != NULL ? c->del(c, 0) : g->pool->del(g->pool, t, k, 0)) != 0)
		return db_fail(g, ret, "store: %s: removing key pool entry %" PRIu64, g->st->path, e->id);
	rc = used ? store_key_wipe(g, t, slot) : store_key_destroy(g, t, slot);
	if (rc == 0)
		rc = counter_add(g, t, e->pool, used ? C_USED : C_DISCARDED);
	return rc;
}

int cmk_store_pool_remove(struct cmk_txn *txn, const char *pool, uint64_t id, bool used)
{
	uint8_t kb[KEY_MAX];
	struct cmk_pool_entry e;
	struct store_gen *g;
	uint32_t slot;
	DBT k;
	int rc;

	if ((rc = gen_enter_txn(txn)) != 0)
		return rc;
	g = txn->g;
	if ((rc = entry_get(g, txn->t, pool, id, &e, &slot)) == 0) {
		dbt_set(&k, kb, entry_key(pool, id, kb));
		if ((rc = entry_drop(g, txn->t, NULL, &k, &e, slot, used)) == 0)
			txn->wrote = true;
	}
	gen_leave(g);
	return rc;
}

/* ---- reaping ----------------------------------------------------------- */

struct reap_arg {
	unsigned n;
	bool more;             /* stopped at REAP_MAX: another round */
};

static int reap_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct reap_arg *a = arg;
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	struct cmk_pool_entry e;
	uint32_t slot;
	DBT k, v;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	if ((ret = g->pool->cursor(g->pool, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: reading the key pool", g->st->path);
	dbt_buf(&k, kb, 0, sizeof(kb));
	dbt_buf(&v, vb, 0, sizeof(vb));
	for (ret = c->get(c, &k, &v, DB_FIRST | DB_RMW); ret == 0; ret = c->get(c, &k, &v, DB_NEXT | DB_RMW)) {
		if (k.size < 10 || kb[0] == 0)
			continue;
		if ((rc = entry_decode(g, &k, &v, &e, &slot)) != 0)
			break;
		if (e.claim_pid == 0 || store_process_alive(g->st, (pid_t)e.claim_pid))
			continue;
		cmk_log(CMK_LOG_INFO, "key pool %s: entry %" PRIu64 " was claimed by process %" PRIu32 ", which is gone; "
			"discarding it", e.pool, e.id, e.claim_pid);
		if ((rc = entry_drop(g, t, c, NULL, &e, slot, false)) != 0)
			break;
		if (++a->n == REAP_MAX) {
			a->more = true;
			break;
		}
	}
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND && !a->more)
		rc = db_fail(g, ret, "store: %s: reading the key pool", g->st->path);
	return rc;
}

/* One round of reaping in a write transaction of its own. */
static int reap_round(struct cmk_store *st, struct reap_arg *a)
{
	struct cmk_txn *txn = NULL;
	int rc;

	for (int attempt = 1;; attempt++) {
		*a = (struct reap_arg){ 0, false };
		if ((rc = cmk_store_begin(st, &txn)) != 0)
			return rc;
		if ((rc = gen_enter_txn(txn)) == 0) {
			rc = reap_fn(txn->g, txn->t, DB_RMW, a);
			if (rc == 0 && a->n > 0)
				txn->wrote = true;
			gen_leave(txn->g);
		}
		if (rc == 0 && a->n > 0) {
			rc = cmk_store_commit(txn);
		} else {
			cmk_store_abort(txn);
		}
		if (rc != CMK_ERR_BUSY || attempt == 5)
			return rc;
		store_backoff(attempt);
	}
}

struct stale_arg {
	bool any;
};

static int stale_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct stale_arg *a = arg;
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	struct cmk_pool_entry e;
	uint32_t slot;
	DBT k, v;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	if ((ret = g->pool->cursor(g->pool, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: reading the key pool", g->st->path);
	dbt_buf(&k, kb, 0, sizeof(kb));
	dbt_buf(&v, vb, 0, sizeof(vb));
	for (ret = c->get(c, &k, &v, DB_FIRST); ret == 0 && !a->any; ret = c->get(c, &k, &v, DB_NEXT)) {
		if (k.size < 10 || kb[0] == 0)
			continue;
		if ((rc = entry_decode(g, &k, &v, &e, &slot)) != 0)
			break;
		a->any = e.claim_pid != 0 && !store_process_alive(g->st, (pid_t)e.claim_pid);
	}
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: reading the key pool", g->st->path);
	return rc;
}

int cmk_store_pool_reap(struct cmk_store *st, unsigned *n)
{
	struct stale_arg s = { false };
	struct reap_arg a;
	unsigned total = 0;
	int rc;

	if (n != NULL)
		*n = 0;
	/* A look without write locks first: most of the time nothing is stale. */
	if ((rc = in_read_txn(st, NULL, stale_fn, &s)) != 0 || !s.any)
		return rc;
	do {
		if ((rc = reap_round(st, &a)) != 0)
			break;
		total += a.n;
	} while (a.more);
	if (n != NULL)
		*n = total;
	return rc;
}

/* ---- reading ----------------------------------------------------------- */

struct counts_arg {
	const char *pool;
	struct cmk_pool_counts *out;
};

static int counts_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct counts_arg *a = arg;
	size_t plen = pool_name_len(a->pool);
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	struct cmk_pool_entry e;
	uint64_t c3[C_N];
	uint32_t slot;
	DBT k, v;
	DBC *c;
	int ret, rc;

	(void)rmw;
	if ((rc = counters_read(g, t, a->pool, 0, c3)) != 0)
		return rc;
	a->out->generated = c3[C_GENERATED];
	a->out->used = c3[C_USED];
	a->out->discarded = c3[C_DISCARDED];
	if ((ret = g->pool->cursor(g->pool, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: reading key pool %s", g->st->path, a->pool);
	memcpy(kb, a->pool, plen);
	kb[plen] = 0;
	dbt_buf(&k, kb, plen + 1, sizeof(kb));
	dbt_buf(&v, vb, 0, sizeof(vb));
	for (ret = c->get(c, &k, &v, DB_SET_RANGE); ret == 0; ret = c->get(c, &k, &v, DB_NEXT)) {
		if (k.size != plen + 9 || memcmp(kb, a->pool, plen) != 0 || kb[plen] != 0)
			break;
		if ((rc = entry_decode(g, &k, &v, &e, &slot)) != 0)
			break;
		if (e.claim_pid == 0)
			a->out->free++;
		else
			a->out->claimed++;
	}
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: reading key pool %s", g->st->path, a->pool);
	return rc;
}

int cmk_store_pool_counts(struct cmk_store *st, struct cmk_txn *txn, const char *pool, struct cmk_pool_counts *out)
{
	struct counts_arg a = { pool, out };

	memset(out, 0, sizeof(*out));
	if (pool_name_len(pool) == 0)
		return cmk_fail(CMK_ERR_INVALID, "store_pool_counts: no pool name");
	return in_read_txn(st, txn, counts_fn, &a);
}

#define EACH_CHUNK 64

struct each_arg {
	uint8_t start[KEY_MAX];   /* resume after this key (none: from the first) */
	size_t start_len;
	uint8_t after[KEY_MAX];   /* the last key delivered by this chunk */
	size_t after_len;
	struct cmk_pool_entry e[EACH_CHUNK];
	size_t n;
	bool done;
};

static int each_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct each_arg *a = arg;
	uint8_t kb[KEY_MAX], vb[ENTRY_LEN];
	uint32_t slot;
	DBT k, v;
	DBC *c;
	int ret, rc = 0;

	(void)rmw;
	a->n = 0;
	a->done = true;
	if ((ret = g->pool->cursor(g->pool, t, &c, 0)) != 0)
		return db_fail(g, ret, "store: %s: reading the key pool", g->st->path);
	memcpy(kb, a->start, a->start_len);
	a->after_len = a->start_len;
	memcpy(a->after, a->start, a->start_len);
	dbt_buf(&k, kb, a->start_len, sizeof(kb));
	dbt_buf(&v, vb, 0, sizeof(vb));
	ret = a->start_len == 0 ? c->get(c, &k, &v, DB_FIRST) : c->get(c, &k, &v, DB_SET_RANGE);
	for (; ret == 0; ret = c->get(c, &k, &v, DB_NEXT)) {
		/* The bookkeeping keys, and the key we resume after. */
		if (k.size < 10 || kb[0] == 0 || (k.size == a->start_len && memcmp(kb, a->start, k.size) == 0))
			continue;
		if (a->n == EACH_CHUNK) {
			a->done = false;
			break;
		}
		if ((rc = entry_decode(g, &k, &v, &a->e[a->n], &slot)) != 0)
			break;
		a->n++;
		memcpy(a->after, kb, k.size);
		a->after_len = k.size;
	}
	c->close(c);
	if (rc == 0 && ret != 0 && ret != DB_NOTFOUND)
		rc = db_fail(g, ret, "store: %s: reading the key pool", g->st->path);
	return rc;
}

int cmk_store_pool_each(struct cmk_store *st, cmk_pool_cb cb, void *arg)
{
	struct each_arg *a = calloc(1, sizeof(*a));
	int rc = 0;

	if (a == NULL)
		return CMK_ERR_NOMEM;
	/* A chunk at a time, the callback called with no cursor open (as the certificate walks do). */
	while (rc == 0 && !a->done) {
		if ((rc = in_read_txn(st, NULL, each_fn, a)) != 0)
			break;
		for (size_t i = 0; i < a->n && rc == 0; i++)
			rc = cb(&a->e[i], arg);
		memcpy(a->start, a->after, a->after_len);
		a->start_len = a->after_len;
	}
	free(a);
	return rc;
}
