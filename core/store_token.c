/*
 * store_token.c - what the store's processes share besides records, on
 * Berkeley DB (session.db): the OpenBao token, and the CA chains verified.
 *
 * One record per name (the lifecycle names a token after the server and
 * login it belongs to).  Value, format 1, integers big-endian:
 *   0  1   format
 *   1  8   granted_ms     9  8  ttl     17 8  increment
 *   25 1   renewable      26 8  version
 *   34 4   length of the sealed token, then its bytes
 * The token itself arrives sealed (lifecycle); nothing here sees it.
 *
 * A verified chain is the key "chain:" and the chain's SHA-256 (38 bytes,
 * never 64 like a token's name), with an empty value.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/util.h"
#include "store_bdb_int.h"

#define TOKEN_V1 1u
#define HEAD_LEN 38
#define SEALED_MAX 4096        /* a sealed token is a few hundred bytes */

static void dbt_set(DBT *d, const void *p, size_t n)
{
	memset(d, 0, sizeof(*d));
	d->data = (void *)p;
	d->size = (u_int32_t)n;
}

int store_token_open(struct store_gen *g, DB_TXN *t)
{
	DB *db = NULL;
	int ret;

	if ((ret = db_create(&db, g->env, 0)) != 0)
		return db_fail(g, ret, "store_open: %s: creating a handle for session.db", g->st->path);
	if ((ret = db->open(db, t, "session.db", NULL, DB_BTREE, DB_CREATE | DB_THREAD, 0600)) != 0) {
		db->close(db, DB_NOSYNC);
		return db_fail(g, ret, "store_open: %s: opening session.db", g->st->path);
	}
	g->session = db;
	return 0;
}

void store_token_close(struct store_gen *g, u_int32_t flags)
{
	if (g->session != NULL)
		g->session->close(g->session, flags);
	g->session = NULL;
}

void cmk_stored_token_clear(struct cmk_stored_token *t)
{
	if (t == NULL)
		return;
	cmk_freezero(t->sealed, t->sealed_len);
	memset(t, 0, sizeof(*t));
}

static int check_name(const char *name)
{
	if (name == NULL || strlen(name) != CMK_TOKEN_NAME_LEN)
		return cmk_fail(CMK_ERR_INVALID, "store_token: a token name is %d characters", CMK_TOKEN_NAME_LEN);
	return 0;
}

struct get_arg {
	const char *name;
	struct cmk_stored_token *out;
};

static int decode(struct store_gen *g, const uint8_t *b, size_t n, struct cmk_stored_token *out)
{
	uint32_t len;

	if (n < HEAD_LEN || b[0] != TOKEN_V1 || (len = cmk_be32_get(b + 34)) != n - HEAD_LEN || len == 0 ||
	    len > SEALED_MAX)
		return cmk_fail(CMK_ERR_STORE, "store: %s: the stored OpenBao token record is damaged", g->st->path);
	out->granted_ms = (int64_t)cmk_be64_get(b + 1);
	out->ttl = (int64_t)cmk_be64_get(b + 9);
	out->increment = (int64_t)cmk_be64_get(b + 17);
	out->renewable = b[25] != 0;
	out->version = cmk_be64_get(b + 26);
	if ((out->sealed = malloc(len)) == NULL)
		return CMK_ERR_NOMEM;
	memcpy(out->sealed, b + HEAD_LEN, len);
	out->sealed_len = len;
	return 0;
}

static int get_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	struct get_arg *a = arg;
	DBT k, d;
	int ret, rc;

	dbt_set(&k, a->name, CMK_TOKEN_NAME_LEN);
	memset(&d, 0, sizeof(d));
	d.flags = DB_DBT_MALLOC;
	if ((ret = g->session->get(g->session, t, &k, &d, rmw)) == DB_NOTFOUND)
		return CMK_ERR_NOTFOUND;
	if (ret != 0)
		return db_fail(g, ret, "store: %s: reading the stored OpenBao token", g->st->path);
	rc = decode(g, d.data, d.size, a->out);
	cmk_freezero(d.data, d.size);
	return rc;
}

int cmk_store_token_get(struct cmk_store *st, const char *name, struct cmk_stored_token *out)
{
	struct get_arg a = { name, out };
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = check_name(name)) != 0)
		return rc;
	if ((rc = in_read_txn(st, NULL, get_fn, &a)) != 0)
		cmk_stored_token_clear(out);
	return rc;
}

static int put_txn(struct cmk_txn *txn, const char *name, const struct cmk_stored_token *t, uint64_t *version)
{
	struct cmk_stored_token old = { 0 };
	struct get_arg a = { name, &old };
	struct store_gen *g = txn->g;
	uint8_t *buf;
	size_t n = HEAD_LEN + t->sealed_len;
	DBT k, d;
	int ret, rc;

	rc = get_fn(g, txn->t, DB_RMW, &a);
	*version = rc == 0 ? old.version + 1 : 1;
	cmk_stored_token_clear(&old);
	if (rc != 0 && rc != CMK_ERR_NOTFOUND && rc != CMK_ERR_STORE)
		return rc;
	if ((buf = malloc(n)) == NULL)
		return CMK_ERR_NOMEM;
	buf[0] = TOKEN_V1;
	cmk_be64_put(buf + 1, (uint64_t)t->granted_ms);
	cmk_be64_put(buf + 9, (uint64_t)t->ttl);
	cmk_be64_put(buf + 17, (uint64_t)t->increment);
	buf[25] = t->renewable ? 1 : 0;
	cmk_be64_put(buf + 26, *version);
	cmk_be32_put(buf + 34, (uint32_t)t->sealed_len);
	memcpy(buf + HEAD_LEN, t->sealed, t->sealed_len);
	dbt_set(&k, name, CMK_TOKEN_NAME_LEN);
	dbt_set(&d, buf, n);
	rc = 0;
	if ((ret = g->session->put(g->session, txn->t, &k, &d, 0)) != 0)
		rc = db_fail(g, ret, "store: %s: writing the stored OpenBao token", g->st->path);
	else
		txn->wrote = true;
	cmk_freezero(buf, n);
	return rc;
}

/* Run fn(txn) in a write transaction of its own, retried on lock conflicts. */
static int in_write_txn(struct cmk_store *st, int (*fn)(struct cmk_txn *, const void *, void *), const void *in,
			void *out)
{
	for (int attempt = 1;; attempt++) {
		struct cmk_txn *txn = NULL;
		int rc;

		if ((rc = cmk_store_begin(st, &txn)) != 0)
			return rc;
		if ((rc = gen_enter_txn(txn)) == 0) {
			rc = fn(txn, in, out);
			gen_leave(txn->g);
		}
		if (rc == 0)
			rc = cmk_store_commit(txn);
		else
			cmk_store_abort(txn);
		if (rc != CMK_ERR_BUSY || attempt == 5)
			return rc;
		store_backoff(attempt);
	}
}

struct put_in {
	const char *name;
	const struct cmk_stored_token *t;
};

static int put_fn(struct cmk_txn *txn, const void *in, void *out)
{
	const struct put_in *p = in;

	return put_txn(txn, p->name, p->t, out);
}

int cmk_store_token_put(struct cmk_store *st, const char *name, const struct cmk_stored_token *t,
			uint64_t *out_version)
{
	struct put_in p = { name, t };
	uint64_t version = 0;
	int rc;

	if ((rc = check_name(name)) != 0)
		return rc;
	if (t->sealed == NULL || t->sealed_len == 0 || t->sealed_len > SEALED_MAX)
		return cmk_fail(CMK_ERR_INVALID, "store_token_put: no sealed token, or one too large");
	rc = in_write_txn(st, put_fn, &p, &version);
	if (rc == 0 && out_version != NULL)
		*out_version = version;
	return rc;
}

static int del_fn(struct cmk_txn *txn, const void *in, void *out)
{
	const char *name = in;
	struct store_gen *g = txn->g;
	DBT k;
	int ret;

	(void)out;
	dbt_set(&k, name, CMK_TOKEN_NAME_LEN);
	if ((ret = g->session->del(g->session, txn->t, &k, 0)) == DB_NOTFOUND)
		return 0;
	if (ret != 0)
		return db_fail(g, ret, "store: %s: removing the stored OpenBao token", g->st->path);
	txn->wrote = true;
	return 0;
}

int cmk_store_token_del(struct cmk_store *st, const char *name)
{
	int rc;

	if ((rc = check_name(name)) != 0)
		return rc;
	return in_write_txn(st, del_fn, name, NULL);
}

/* ---- verified CA chains ---------------------------------------------------- */

#define CHAIN_KEY_LEN 38

static void chain_key(const uint8_t sha256[32], uint8_t out[CHAIN_KEY_LEN])
{
	memcpy(out, "chain:", 6);
	memcpy(out + 6, sha256, 32);
}

static int chain_get_fn(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg)
{
	uint8_t kb[CHAIN_KEY_LEN];
	DBT k, d;
	int ret;

	chain_key(arg, kb);
	dbt_set(&k, kb, sizeof(kb));
	memset(&d, 0, sizeof(d));
	d.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL;
	if ((ret = g->session->get(g->session, t, &k, &d, rmw)) == DB_NOTFOUND)
		return CMK_ERR_NOTFOUND;
	return ret == 0 ? 0 : db_fail(g, ret, "store: %s: reading the verified CA chains", g->st->path);
}

bool cmk_store_chain_known(struct cmk_store *st, const uint8_t sha256[32])
{
	return in_read_txn(st, NULL, chain_get_fn, (void *)sha256) == 0;
}

static int chain_put_fn(struct cmk_txn *txn, const void *in, void *out)
{
	struct store_gen *g = txn->g;
	uint8_t kb[CHAIN_KEY_LEN];
	DBT k, d;
	int ret;

	(void)out;
	chain_key(in, kb);
	dbt_set(&k, kb, sizeof(kb));
	dbt_set(&d, "", 0);
	if ((ret = g->session->put(g->session, txn->t, &k, &d, 0)) != 0)
		return db_fail(g, ret, "store: %s: noting a verified CA chain", g->st->path);
	txn->wrote = true;
	return 0;
}

int cmk_store_chain_note(struct cmk_store *st, const uint8_t sha256[32])
{
	return in_write_txn(st, chain_put_fn, sha256, NULL);
}
