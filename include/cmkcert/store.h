/*
 * store.h - the Berkeley DB store (DESIGN §5).
 *
 * One transactional environment (DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG |
 * DB_INIT_MPOOL, durable commits) that several processes (the daemon and CLI
 * runs) share.  Databases:
 *   meta       store id, next record id, format version
 *   certs      id -> certificate record (versioned encoding); its sealed key
 *              lives in a slot of its size (keys*.db), its CA chain in chains
 *   chains     SHA-256 of a CA chain -> the chain, kept once for every record
 *              that has it
 *   by_tts     secondary: (tenant, type, status) -> id
 *   by_renew   secondary: renew_at (big-endian) -> id, active records with renew_at > 0 only
 *   by_serial  secondary: serial -> id
 *   by_status  secondary: status -> id, and "revocation pending" -> id
 *              (format 2: built when an older store is first opened)
 *   keystores  (tenant, type) -> keystore connection config
 *   changes    sequence -> (tenant, type, time), appended in the same
 *              transaction as every mutation of certs or keystores
 *   audit      the audit trail's anchor: sequence number and MAC of the
 *              last line written (audit.h)
 *   pool       keys generated ahead of need, sealed, waiting to be taken
 *              by an issuance (pool.h), and each pool's counters
 *   session    the OpenBao token every process of the store shares, sealed,
 *              and the CA chains already verified up to their root
 *
 * Every mutation takes a transaction.  Reads accept txn = NULL (read
 * committed data) or a transaction (reads its own writes; single-record
 * reads lock the record for update, walks take ordinary read locks).
 * A deadlock or lock conflict returns CMK_ERR_BUSY: abort and retry the
 * whole transaction.  (Reads without a transaction are retried
 * inside the store and rarely return CMK_ERR_BUSY.)
 *
 * Dead processes.  Any process using the store may be killed at any moment.
 * Every handle runs Berkeley DB's failure check every 200 ms on a thread of
 * its own: the transactions and locks of a dead process are released
 * without recovery, so nobody waits on them for long.  A process killed
 * inside a Berkeley DB call can leave shared memory that only recovery
 * repairs: then every handle replaces its environment by a new one (one of
 * them runs recovery, the others wait for it), transparently: a transaction
 * that began in the old environment answers CMK_ERR_BUSY (redo it, as after
 * a deadlock), reads without a transaction are retried.  A thread that waits
 * on something the dead process held never comes back; the handle notices
 * it and calls the wedged callback (cmk_store_on_wedged()).
 *
 * Processes and threads: one struct cmk_store may be shared by the threads
 * of a process; a struct cmk_txn belongs to one thread.  The registry of
 * processes is per process, so a process may have only one handle on a given
 * store open at a time (a second open fails with CMK_ERR_STATE), and a child
 * made by fork() must not use its parent's handle: it opens its own.
 *
 * Get and find functions overwrite *out (they do not free what it held);
 * release it with the matching _clear().  On failure *out is zeroed.
 */
#ifndef CMKCERT_STORE_H
#define CMKCERT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmkcert/config.h"
#include "cmkcert/crypto.h"
#include "cmkcert/names.h"
#include "cmkcert/seal.h"

struct cmk_store;
struct cmk_txn;

enum cmk_status {
	CMK_ST_PENDING = 0,    /* issued and stored, connection not yet tested */
	CMK_ST_ACTIVE = 1,     /* served; at most one per (tenant, type) */
	CMK_ST_ROTATING = 2,   /* superseded, still readable for the grace period */
	CMK_ST_FAILED = 3,     /* connection test refused it, or interrupted */
	CMK_ST_REVOKED = 4,    /* revoked in OpenBao; sealed key destroyed */
	CMK_ST_CLEANED_UP = 5, /* grace period over; sealed key destroyed */
	CMK_ST_EXPIRED = 6,    /* reached not_after without renewal */
	CMK_ST_COUNT
};

/* "pending", "active", ...; NULL for an unknown value. */
const char *cmk_status_name(enum cmk_status st);
/* -1 when unknown. */
int cmk_status_parse(const char *name);

struct cmk_cert_record {
	uint64_t id;
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	enum cmk_status status;
	char serial[CMK_SERIAL_MAX];      /* exactly as OpenBao returned it */
	char fingerprint[CMK_FPR_LEN + 1];
	char *subject;
	int64_t not_before, not_after;
	int64_t renew_at;                 /* 0 = not scheduled */
	int64_t created_at, activated_at, revoked_at, updated_at;
	uint64_t supersedes;              /* id of the record this one replaces, 0 = none */
	uint32_t attempts;                /* failed renewal attempts since the last success */
	uint32_t flags;                   /* CMK_CERT_F_* */
	char *last_error;                 /* NULL when none */
	char *cert_pem;
	char *chain_pem;                  /* issuing CA first, then parents */
	uint8_t *sealed_key;              /* NULL once destroyed */
	size_t sealed_key_len;
};

#define CMK_CERT_F_NO_STORE 0x1u      /* issued by a no_store role: revoke by PEM */
#define CMK_CERT_F_ISSUE_MODE 0x2u    /* key generated by OpenBao */
#define CMK_CERT_F_REVOKING 0x4u      /* revocation requested and not yet confirmed: no longer served,
					 finished by the next revocation run or start-up recovery */

/* Free owned fields (wiping the sealed key) and zero the struct. */
void cmk_cert_record_clear(struct cmk_cert_record *rec);

struct cmk_keystore_record {
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	char **endpoints;                 /* "host:port" */
	size_t n_endpoints;
	char *server_ca_pem;              /* NULL = none given */
	enum cmk_verify verify;
	int64_t created_at;
};

void cmk_keystore_record_clear(struct cmk_keystore_record *rec);

struct cmk_change {
	uint64_t seq;
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	int64_t time;
};

/*
 * Open (creating the directory 0700 and the environment when missing;
 * whatever dead processes left is released, by recovery when needed).  An
 * existing directory must be owned by root or the effective user and give
 * group and others no access (CMK_ERR_PERM otherwise); a symbolic link is
 * refused (CMK_ERR_INVALID: name the real directory).  A store written by a
 * newer format is refused with CMK_ERR_STORE.
 */
int cmk_store_open(const char *path, struct cmk_store **out);
/* End every transaction first.  NULL is a no-op. */
void cmk_store_close(struct cmk_store *st);

/*
 * True while the environment under the handle has failed and not been
 * replaced yet (the next call replaces it).
 */
bool cmk_store_needs_recovery(const struct cmk_store *st);

/* How many environments the handle has opened: more than 1 once a recovery replaced one. */
uint64_t cmk_store_generation(const struct cmk_store *st);

/*
 * Run the failure check now (the handle's monitor does it every 200 ms):
 * release what dead processes held, and replace the environment when that
 * is not enough.  0, or the error of the replacement.
 */
int cmk_store_check(struct cmk_store *st);

/* Threads of this process wedged in a replaced environment (they will not return). */
unsigned cmk_store_stuck(const struct cmk_store *st);

/*
 * `fn` is called (on the monitor thread) when a thread of this process is
 * found wedged on something only a dead process could have released: it
 * has waited more than 2 s inside an environment that was replaced
 * (`whole_store` false: other threads go on), or an open of the environment
 * has not returned for 45 s (`whole_store` true: the handle is unusable).
 * The CLI exits; a daemon replaces its threads, or exits to be restarted.
 */
typedef void (*cmk_store_wedged_fn)(const char *path, bool whole_store, void *arg);
void cmk_store_on_wedged(struct cmk_store *st, cmk_store_wedged_fn fn, void *arg);
/* The callback every handle opened from now on starts with (it covers its first open too). */
void cmk_store_set_wedged_default(cmk_store_wedged_fn fn, void *arg);

/*
 * Shredding.  A destroyed sealed key is overwritten in place at once; its
 * older copies in the log (Berkeley DB logs the bytes each change replaces)
 * and in the log's shared buffer go with this step: the log moves to a new
 * file and every file recovery no longer needs is overwritten with zeros
 * and removed.  After it, no store file holds the bytes of a key destroyed
 * before it started.  Cheap to call when nothing was destroyed (it only
 * checks); a log file still needed by a transaction that is running stays
 * until the next call.
 */
struct cmk_shred_stats {
	uint64_t keys;            /* keys destroyed since the last shred that this one covers */
	unsigned logs_removed;    /* log files overwritten and removed */
};
int cmk_store_shred(struct cmk_store *st, struct cmk_shred_stats *stats);
/* True when keys were destroyed since the last shred. */
bool cmk_store_shred_pending(struct cmk_store *st);

/* The store's random 16-byte id (sealing salt). */
const uint8_t *cmk_store_id(const struct cmk_store *st);

int cmk_store_begin(struct cmk_store *st, struct cmk_txn **txn);
/* Durable commit; frees txn whatever the outcome. */
int cmk_store_commit(struct cmk_txn *txn);
/* Frees txn; NULL is a no-op. */
void cmk_store_abort(struct cmk_txn *txn);

/* Certificates. */
int cmk_store_cert_next_id(struct cmk_txn *txn, uint64_t *id);
/*
 * Insert or replace by rec->id (taken from cmk_store_cert_next_id()); updates
 * the indexes and appends a change.  Refused: a record moving to another
 * tenant or type (CMK_ERR_INVALID), and a second `active` record for a
 * (tenant, type) (CMK_ERR_STATE) - demote the old one first, in the same
 * transaction.
 */
int cmk_store_cert_put(struct cmk_txn *txn, const struct cmk_cert_record *rec);
/* CMK_ERR_NOTFOUND when absent.  With a txn the record is locked for update. */
int cmk_store_cert_get(struct cmk_store *st, struct cmk_txn *txn, uint64_t id, struct cmk_cert_record *out);
/* The newest record (highest id) of (tenant, type) in `status`; CMK_ERR_NOTFOUND when none. */
int cmk_store_cert_find(struct cmk_store *st, struct cmk_txn *txn, const char *tenant, const char *type,
			enum cmk_status status, struct cmk_cert_record *out);
int cmk_store_cert_by_serial(struct cmk_store *st, struct cmk_txn *txn, const char *serial,
			     struct cmk_cert_record *out);

/*
 * Callback: return 0 to go on, anything else stops the walk and is returned.
 * The record is valid only during the call.  Walks read a few records at a
 * time and call the callback with no cursor open, so the callback may use
 * the store (even begin and commit its own transaction).  Without a
 * transaction, each record is seen as last committed when its chunk was
 * read, not as one snapshot.  A record that does not decode is logged and
 * skipped; cmk_store_cert_get() reports it.
 */
typedef int (*cmk_cert_cb)(const struct cmk_cert_record *rec, void *arg);

struct cmk_cert_filter {
	const char *tenant;   /* NULL = any */
	const char *type;     /* NULL = any */
	int status;           /* -1 = any */
};

/*
 * Walk records in id order.  Only a walk without tenant and status reads
 * every record: a tenant is found through by_tts (its ids read and sorted
 * first), a status through by_status, tenant + type + status through one
 * by_tts key.  CMK_ERR_INVALID for a malformed name or status.
 */
int cmk_store_cert_each(struct cmk_store *st, struct cmk_txn *txn, const struct cmk_cert_filter *f,
			cmk_cert_cb cb, void *arg);
/*
 * Records whose revocation is pending (CMK_CERT_F_REVOKING, not yet revoked
 * or cleaned up), in id order, through by_status: what recovery must finish.
 */
int cmk_store_cert_revoking(struct cmk_store *st, struct cmk_txn *txn, cmk_cert_cb cb, void *arg);
/* Active records with 0 < renew_at <= now, earliest first, via the by_renew index. */
int cmk_store_cert_due(struct cmk_store *st, struct cmk_txn *txn, int64_t now, cmk_cert_cb cb, void *arg);

/*
 * How many certificate records this handle has read (by id, through an
 * index, or looked at by a walk) since it was opened: what an operation
 * touched, for tests and metrics.
 */
uint64_t cmk_store_records_read(const struct cmk_store *st);

/* Keystores. */
int cmk_store_keystore_put(struct cmk_txn *txn, const struct cmk_keystore_record *rec);
int cmk_store_keystore_get(struct cmk_store *st, struct cmk_txn *txn, const char *tenant, const char *type,
			   struct cmk_keystore_record *out);
/* CMK_ERR_NOTFOUND when absent (and no change is logged). */
int cmk_store_keystore_del(struct cmk_txn *txn, const char *tenant, const char *type);
typedef int (*cmk_keystore_cb)(const struct cmk_keystore_record *rec, void *arg);
int cmk_store_keystore_each(struct cmk_store *st, struct cmk_txn *txn, cmk_keystore_cb cb, void *arg);

/*
 * Change log.  It keeps the newest CMK_STORE_CHANGES_KEPT entries: older ones
 * are trimmed, a few at a time, by the transactions that append.
 */
#define CMK_STORE_CHANGES_KEPT 10000u

typedef int (*cmk_change_cb)(const struct cmk_change *ch, void *arg);
/*
 * Changes with seq > after, in order.  When some of them were already trimmed
 * (the caller fell more than CMK_STORE_CHANGES_KEPT behind), the first change
 * delivered has an empty tenant and type, meaning "anything may have
 * changed", and the seq just before the oldest entry kept.  A damaged entry
 * is delivered the same way, with its own seq.
 */
int cmk_store_changes_since(struct cmk_store *st, uint64_t after, cmk_change_cb cb, void *arg);
/* Highest sequence (0 when empty). Cheap: safe to poll. */
int cmk_store_change_last(struct cmk_store *st, uint64_t *seq);

/*
 * The audit trail's anchor: the last line an operation recorded, written in
 * the same transaction as the operation (audit.h).  Get: CMK_ERR_NOTFOUND
 * before the first keyed line; with a transaction the anchor is locked for
 * update (every appender takes it before the trail's file lock).
 */
#define CMK_AUDIT_MAC_LEN 32
struct cmk_audit_anchor {
	uint64_t seq;
	uint8_t mac[CMK_AUDIT_MAC_LEN];
};
int cmk_store_audit_anchor_get(struct cmk_store *st, struct cmk_txn *txn, struct cmk_audit_anchor *out);
int cmk_store_audit_anchor_put(struct cmk_txn *txn, const struct cmk_audit_anchor *a);

/*
 * Key pool storage (pool.h is the pool itself).  A pool is named after the
 * keys it holds ("rsa-4096", "ec-256").  An entry is one sealed private key
 * in a key slot of its own, like a certificate's (so it is zeroed in place
 * when it goes), the SHA-256 of its public key (SubjectPublicKeyInfo DER),
 * and, while an operation is using it, the pid of that process.  Each pool
 * counts the keys ever added (generated), moved into a record (used) and
 * destroyed unused (discarded): generated = free + claimed + used + discarded.
 */
#define CMK_POOL_NAME_MAX 16

struct cmk_pool_entry {
	uint64_t id;
	char pool[CMK_POOL_NAME_MAX];
	int64_t created_at;
	uint32_t claim_pid;               /* 0 = free; else the process using it */
	int64_t claimed_at;
	uint8_t public_sha256[32];
	uint8_t *sealed_key;              /* only from cmk_store_pool_claim() */
	size_t sealed_key_len;
};

/* Free the sealed key (wiped) and zero the struct. */
void cmk_pool_entry_clear(struct cmk_pool_entry *e);

struct cmk_pool_counts {
	uint64_t free, claimed;           /* entries now */
	uint64_t generated, used, discarded;
};

/* An id for a new entry (the sealed key is bound to it). */
int cmk_store_pool_next_id(struct cmk_txn *txn, uint64_t *id);
/* Add a free entry with its sealed key (e->id from cmk_store_pool_next_id()); counts it generated. */
int cmk_store_pool_add(struct cmk_txn *txn, const struct cmk_pool_entry *e);
/*
 * The oldest free entry of `pool`, claimed in `txn` for this process, with
 * its sealed key.  CMK_ERR_NOTFOUND when the pool has no free entry.
 * Release *out with cmk_pool_entry_clear().
 */
int cmk_store_pool_claim(struct cmk_txn *txn, const char *pool, struct cmk_pool_entry *out);
/*
 * Entry `id` of `pool`, claimed by this process, is free again.  CMK_ERR_NOTFOUND
 * when it is gone, CMK_ERR_STATE when another process holds it.
 */
int cmk_store_pool_unclaim(struct cmk_txn *txn, const char *pool, uint64_t id);
/*
 * Entry `id` leaves the pool and its slot is zeroed in place: `used` (its
 * key went into a record stored in the same transaction; the record's own
 * destruction shreds the older copies) or discarded (counted for
 * cmk_store_shred()).  CMK_ERR_NOTFOUND when it is gone.
 */
int cmk_store_pool_remove(struct cmk_txn *txn, const char *pool, uint64_t id, bool used);
/*
 * Discard every entry claimed by a process that no longer has the store
 * open: the operation that claimed it died, and whether its public key left
 * the host in a request is not known, so the key is never handed out again.
 * *n (may be NULL) receives how many.
 */
int cmk_store_pool_reap(struct cmk_store *st, unsigned *n);
/* Counters and current entries of `pool` (all zero for a pool never used). */
int cmk_store_pool_counts(struct cmk_store *st, struct cmk_txn *txn, const char *pool, struct cmk_pool_counts *out);
/*
 * Every entry in order of pool name, then id, without sealed keys; entries
 * of pools no template uses any more too.  Callback conventions as
 * cmk_cert_cb (it may use the store).
 */
typedef int (*cmk_pool_cb)(const struct cmk_pool_entry *e, void *arg);
int cmk_store_pool_each(struct cmk_store *st, cmk_pool_cb cb, void *arg);

/*
 * The OpenBao token every process of the store shares (lifecycle), stored
 * under a name that binds it to the server and login it came from.  The
 * token itself is sealed by the caller; its times are in the clear.
 */
#define CMK_TOKEN_NAME_LEN 64             /* hex SHA-256 of what the token is bound to */

struct cmk_stored_token {
	int64_t granted_ms;               /* wall clock when `ttl` was granted, ms since the epoch */
	int64_t ttl;                      /* seconds; 0 = never expires */
	int64_t increment;                /* what renewals ask for */
	bool renewable;
	uint64_t version;                 /* set by put: +1 per write of this name */
	uint8_t *sealed;                  /* the sealed token */
	size_t sealed_len;
};
void cmk_stored_token_clear(struct cmk_stored_token *t);

/* CMK_ERR_NOTFOUND when none is stored under `name`. */
int cmk_store_token_get(struct cmk_store *st, const char *name, struct cmk_stored_token *out);
/* Store (replace) in a transaction of its own; t->version is ignored, out_version (may be NULL) gets the new one. */
int cmk_store_token_put(struct cmk_store *st, const char *name, const struct cmk_stored_token *t,
			uint64_t *out_version);
/* Forget the token stored under `name` (no error when none is). */
int cmk_store_token_del(struct cmk_store *st, const char *name);

/*
 * CA chains (by SHA-256 of their PEM) that an issuance verified up to their
 * self-signed root: the next issuance that receives the same chain checks
 * only the leaf's own signature (cmk_cert_verify_issued_by()).  Noting one
 * is a transaction of its own; losing it costs one verification.
 */
bool cmk_store_chain_known(struct cmk_store *st, const uint8_t sha256[32]);
int cmk_store_chain_note(struct cmk_store *st, const uint8_t sha256[32]);

#endif
