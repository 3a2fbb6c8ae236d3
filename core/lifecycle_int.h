/*
 * lifecycle_int.h - internals shared by the lifecycle operations
 * (op_check.c, op_add.c, ...) and the state machine in lifecycle.c.
 */
#ifndef CMKCERT_LIFECYCLE_INT_H
#define CMKCERT_LIFECYCLE_INT_H

#include <stdbool.h>
#include "cmkcert/crypto.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/pool.h"

/* Report a finished step to the caller's callback (if any). */
void cmk_lc_report(cmk_step_fn step, void *arg, const char *name, int rc, int64_t t0, const char *detail);

/* Audit one event about a record (rec may be NULL); failures are logged and returned. */
int cmk_lc_audit(struct cmk_ctx *ctx, const char *event, const char *outcome, const char *step,
		 const struct cmk_cert_record *rec, const char *detail);
/* Audit a failed step that has no record yet. */
int cmk_lc_audit_failure(struct cmk_ctx *ctx, const char *tenant, const char *type, const char *step,
			 const char *detail);

/*
 * After keys were destroyed: make their old copies leave every store file
 * (cmk_store_shred()).  A failure is logged and returned; the next call
 * tries again.
 */
int cmk_lc_shred(struct cmk_ctx *ctx);

/* Uniform random number in [0, 1). */
double cmk_lc_random_unit(void);

/*
 * The client holds a usable token: the one the store's processes share when
 * it is fresh, else one this call obtains (login or renewal, one process at
 * a time) and shares.  Logins and failed logins are audited (token_share.c).
 */
int cmk_lc_ensure_token(struct cmk_ctx *ctx, struct cmk_bao *bao);
/* A new client starts with the shared token and shares every token it gets from now on. */
int cmk_lc_token_attach(struct cmk_ctx *ctx, struct cmk_bao *bao);

/*
 * The audit line of a state change, written by the transaction that makes
 * the change, as its last step: a committed change always has its line, and
 * the commit anchors it (audit.h).  `rec` names tenant, type, serial,
 * fingerprint and record (NULL: `tenant` and `type` alone); it is read after
 * the transaction function ran, so it may be a record that function fills.
 * The function sets `skip` when it found nothing to change.
 */
struct cmk_lc_note {
	const char *event, *outcome, *step, *detail;
	const struct cmk_cert_record *rec;
	const char *tenant, *type;
	bool skip;
	const char *key_origin;   /* issuance lines: where the key came from (NULL = omitted) */
};

/*
 * Run fn inside a store transaction, then write `note` (may be NULL) in it,
 * then commit; the whole transaction is retried on CMK_ERR_BUSY.  If the
 * trail cannot be written the transaction is not committed: no change goes
 * unrecorded.
 */
typedef int (*cmk_lc_txn_fn)(struct cmk_ctx *ctx, struct cmk_txn *txn, void *arg);
int cmk_lc_with_txn(struct cmk_ctx *ctx, cmk_lc_txn_fn fn, void *arg, struct cmk_lc_note *note);
/* The same with several lines (at most CMK_LC_NOTES_MAX), in order, written with one fsync. */
#define CMK_LC_NOTES_MAX 4
int cmk_lc_with_txn_notes(struct cmk_ctx *ctx, cmk_lc_txn_fn fn, void *arg, struct cmk_lc_note *const *notes,
			  size_t n);

/* May a record go from `from` to `to`?  (The transition table of lifecycle.c.) */
bool cmk_lc_transition_allowed(enum cmk_status from, enum cmk_status to);

/*
 * Apply a transition to `rec` (already read in `txn`) and write it: refuses
 * transitions the state machine does not allow, sets the timestamps that go
 * with the new state, destroys the sealed key on revoked / cleaned_up, and
 * records `error` (NULL clears it).
 */
int cmk_lc_transition(struct cmk_txn *txn, struct cmk_cert_record *rec, enum cmk_status to, const char *error);

/* Move record `id` from `from` to `to` in its own transaction, recording `note` (may be NULL) in it. */
struct cmk_lc_set {
	uint64_t id;
	enum cmk_status from, to;
	int64_t renew_at;      /* for to == active */
	const char *error;
};
int cmk_lc_set_status(struct cmk_ctx *ctx, const struct cmk_lc_set *s, struct cmk_lc_note *note);

/*
 * One operation per (tenant, type) at a time, across processes: an flock on
 * <store>/locks/<tenant>-<type>.lock.  The kernel drops it when a process
 * dies, so a crash never leaves a stale lock.  `wait` false: CMK_ERR_BUSY
 * when another operation holds it.
 */
struct cmk_lc_lock;
int cmk_lc_lock(struct cmk_ctx *ctx, const char *tenant, const char *type, bool wait, struct cmk_lc_lock **out);
void cmk_lc_unlock(struct cmk_lc_lock *lock);
/* The same for a lock shared by every operation: `name` starts with '#' ("#token"). */
int cmk_lc_lock_named(struct cmk_ctx *ctx, const char *name, bool wait, struct cmk_lc_lock **out);

/* Test the pair against every endpoint of the keystore; all must accept it. */
int cmk_lc_test_connection(const struct cmk_keystore_record *ks, const char *cert_pem, const char *chain_pem,
			   const struct cmk_key *key);

/* What to ask OpenBao for: a template and the names (expanded, or copied from a certificate being renewed). */
struct cmk_lc_plan {
	const struct cmk_template *tpl;
	enum cmk_verify verify;
	char *cn;
	char **sans;           /* alt names other than the CN */
	size_t n_sans;
	char *alt_csv;         /* the same, comma-joined for OpenBao */
	char *subject;         /* renewal: the subject the new certificate must have; NULL = any */
};
void cmk_lc_plan_clear(struct cmk_lc_plan *p);
/* Names from p->tpl for `tenant`. */
int cmk_lc_plan_names(struct cmk_lc_plan *p, const char *tenant);
/* Names (and the exact subject) of a certificate being renewed. */
int cmk_lc_plan_from_cert(struct cmk_lc_plan *p, const struct cmk_cert_info *old);

/*
 * The private key of one issuance and where it came from.  A key claimed
 * from the pool stays claimed until the transaction storing its record takes
 * it (claim.id = 0 once that committed); cmk_lc_key_done() settles what is
 * left.
 */
enum cmk_key_origin {
	CMK_ORIGIN_NONE = 0,
	CMK_ORIGIN_POOL,       /* claimed from the key pool */
	CMK_ORIGIN_INLINE,     /* generated by this operation */
	CMK_ORIGIN_OPENBAO,    /* issue mode: made by OpenBao */
};
struct cmk_lc_key {
	struct cmk_key *key;
	enum cmk_key_origin origin;
	struct cmk_pool_claim claim;
	bool sent;             /* its public key left the host in a request */
	bool refused;          /* ...which OpenBao refused with an answer: no certificate exists for it */
};
/* "pool", "inline", "openbao"; NULL for none. */
const char *cmk_lc_key_origin(const struct cmk_lc_key *k);
/*
 * The operation is over: a claimed key its record did not take goes back to
 * the pool when no certificate can exist for it, else it is discarded (and
 * shredded); the key is freed.  Safe on a zeroed struct.
 */
void cmk_lc_key_done(struct cmk_ctx *ctx, struct cmk_lc_key *k);

/* Issue (mode issue), or sign the CSR of a pool key or of one generated now (mode sign). */
int cmk_lc_obtain(struct cmk_ctx *ctx, const struct cmk_lc_plan *p, struct cmk_bao_cert *cert, struct cmk_lc_key *k);
/* The answer is what was asked for, for this key, under its chain, valid now. */
int cmk_lc_check_issued(struct cmk_ctx *ctx, const struct cmk_lc_plan *p, const struct cmk_bao_cert *cert,
			const struct cmk_lc_key *k, struct cmk_cert_info *info);
/* "sign" or "issue": the name of the step that obtains a certificate in this configuration. */
const char *cmk_lc_issue_step_name(const struct cmk_ctx *ctx);
/* cmk_lc_obtain() then cmk_lc_check_issued(), reported as one timed step. */
int cmk_lc_issue_step(struct cmk_ctx *ctx, const struct cmk_lc_plan *p, cmk_step_fn step, void *arg,
		      struct cmk_bao_cert *cert, struct cmk_lc_key *k, struct cmk_cert_info *info);
/* A pending record for the issued certificate (no id or sealed key yet). */
int cmk_lc_fill_record(const char *tenant, const struct cmk_lc_plan *p, const struct cmk_bao_cert *cert,
		       const struct cmk_cert_info *info, struct cmk_cert_record *rec);
/*
 * Allocate rec->id, seal the key bound to (tenant, type, id, serial), put
 * the record, and take a pool key out of the pool, all in `txn`.
 */
int cmk_lc_store_pending(struct cmk_ctx *ctx, struct cmk_txn *txn, struct cmk_cert_record *rec,
			 const struct cmk_lc_key *k);

/* Finish revocations a crashed run left requested but unconfirmed (op_revoke.c). */
int cmk_lc_finish_revocations(struct cmk_ctx *ctx, unsigned *n_done);

#endif
