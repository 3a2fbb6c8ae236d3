/*
 * pool.h - private keys generated before they are needed (the key pool).
 *
 * RSA key generation takes seconds (0.1 to 5 s for 4096 bits, a random
 * search); issuing a certificate should not.  For each (key type, bits)
 * that a template uses, the store keeps a pool of keys made ahead of time,
 * each sealed under the pool's own key (seal.h: CMK_SEAL_POOL, bound to
 * the pool's name and the entry's id).  An issuance claims one key, signs
 * its CSR, and the transaction that stores the pending record seals the key
 * again, bound to that record (DESIGN §6), and removes it from the pool.  A
 * key is used once: a claim the operation did not store goes back to the
 * pool only when its public key never led to a certificate (nothing was
 * sent, or OpenBao refused the request); otherwise, and when the process
 * that claimed it died, it is discarded, zeroed in place and shredded like
 * any destroyed key.  An empty pool makes the issuance generate its key
 * itself, as it would without a pool.
 *
 * Pools are filled by `cmkcert pool fill` and, in the background at low
 * priority, by cmkcertfs.  Sizes come from the configuration: [keys]
 * pool_size, or a template's own pool_size.
 */
#ifndef CMKCERT_POOL_H
#define CMKCERT_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmkcert/config.h"
#include "cmkcert/crypto.h"
#include "cmkcert/seal.h"
#include "cmkcert/store.h"

/* The pool of (type, bits): "rsa-4096", "ec-256". */
void cmk_pool_name(enum cmk_key_type type, int bits, char out[CMK_POOL_NAME_MAX]);

/* A pool the configuration asks for. */
struct cmk_pool_spec {
	char name[CMK_POOL_NAME_MAX];
	enum cmk_key_type type;
	int bits;
	unsigned target;       /* keys to keep ready */
};

/*
 * The pools of `cfg`: one per (key type, bits) some template uses, sized to
 * the largest pool_size among those templates (a template's own, else
 * [keys] pool_size); pools of size 0 are left out, and in issue mode there
 * are none (OpenBao makes the keys).  *out is malloc'd (free()); *n may be 0.
 */
int cmk_pool_specs(const struct cmk_config *cfg, struct cmk_pool_spec **out, size_t *n);

/* The target of the pool of (type, bits) under `cfg` (0: no pool). */
unsigned cmk_pool_target(const struct cmk_config *cfg, enum cmk_key_type type, int bits);

/* Asked between two keys: true stops a fill. */
typedef bool (*cmk_pool_stop_fn)(void *arg);

/*
 * Generate keys for `spec` and add them, sealed, until the pool holds its
 * target (free and claimed keys count); `stop` (may be NULL) is asked
 * before each key.  Entries claimed by dead processes are discarded first.
 * *added (may be NULL) receives how many keys were added, also on failure.
 */
int cmk_pool_fill(struct cmk_store *st, struct cmk_sealer *s, const struct cmk_pool_spec *spec,
		  cmk_pool_stop_fn stop, void *arg, unsigned *added);

/* Generate one key for the pool named in `spec` and add it (whatever the pool holds). */
int cmk_pool_add_one(struct cmk_store *st, struct cmk_sealer *s, const struct cmk_pool_spec *spec);

/* A key claimed for one issuance; id 0 = none. */
struct cmk_pool_claim {
	char pool[CMK_POOL_NAME_MAX];
	uint64_t id;
};

/*
 * Claim the oldest free key of (type, bits) for this process (a durable
 * commit: a crash from here on discards it) and unseal it into *key
 * (cmk_key_free()).  CMK_ERR_NOTFOUND when the pool has no free key.  A key
 * that does not unseal or parse is discarded and the next one tried.
 */
int cmk_pool_claim(struct cmk_store *st, struct cmk_sealer *s, enum cmk_key_type type, int bits,
		   struct cmk_pool_claim *c, struct cmk_key **key);

/*
 * Inside the transaction that stores the record holding the claimed key:
 * the key leaves the pool (zeroed in place, counted as used).  After that
 * transaction commits, set c->id = 0.  CMK_ERR_NOTFOUND when the entry is
 * no longer there (the key is still this caller's alone: discarded keys are
 * never handed out again).
 */
int cmk_pool_take(struct cmk_txn *txn, const struct cmk_pool_claim *c);

/*
 * The operation did not store the claimed key: `reusable` (no certificate
 * can exist for it) puts it back in the pool, else it is discarded (and
 * counted for cmk_store_shred()).  c->id is 0 afterwards.  A no-op for id 0.
 */
int cmk_pool_release(struct cmk_store *st, struct cmk_pool_claim *c, bool reusable);

/* One pool as it stands. */
struct cmk_pool_state {
	char name[CMK_POOL_NAME_MAX];
	unsigned target;       /* 0 when no template asks for it any more */
	struct cmk_pool_counts counts;
};

/*
 * Every pool of the configuration and every pool the store holds entries or
 * counters of, in order of name.  *out malloc'd (free()).
 */
int cmk_pool_states(struct cmk_store *st, const struct cmk_config *cfg, struct cmk_pool_state **out, size_t *n);

#endif
