/*
 * lifecycle.h - the certificate lifecycle (DESIGN §8): one context that ties
 * configuration, store, sealing, audit and the OpenBao client together, and
 * the operations the CLI and the daemon perform with it.
 *
 * The state machine itself (which status may follow which, and what is
 * reset after a crash) is described and enforced in core/lifecycle.c.
 */
#ifndef CMKCERT_LIFECYCLE_H
#define CMKCERT_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmkcert/audit.h"
#include "cmkcert/config.h"
#include "cmkcert/openbao.h"
#include "cmkcert/seal.h"
#include "cmkcert/store.h"

struct cmk_ctx {
	struct cmk_config *cfg;
	struct cmk_store *store;
	struct cmk_sealer *sealer;
	struct cmk_audit *audit;
	struct cmk_bao *bao;        /* created on first use */
	char actor[64];             /* audit actor: "cli:uid=0", "cmkcertfs" */
	bool shared;                /* a thread's context: only bao is its own (cmk_ctx_thread) */
};

/*
 * Load the configuration and open store, sealer and audit trail.
 * `actor` names who acts in the audit trail.  Release with cmk_ctx_free().
 */
int cmk_ctx_open(const char *config_path, const char *actor, struct cmk_ctx **out);
void cmk_ctx_free(struct cmk_ctx *ctx);

/*
 * A context for another thread: shares the configuration, store, sealer
 * and audit trail of `ctx` (all safe to use from several threads) and has
 * its own OpenBao client (one curl handle per thread).  Release it with
 * cmk_ctx_free() before `ctx`.
 */
int cmk_ctx_thread(struct cmk_ctx *ctx, struct cmk_ctx **out);

/* The OpenBao client, created on first call. */
int cmk_ctx_bao(struct cmk_ctx *ctx, struct cmk_bao **out);

/* Progress of a multi-step operation: called once per finished step. */
typedef void (*cmk_step_fn)(const char *step, int rc, int64_t elapsed_ms, const char *detail, void *arg);

/*
 * Story 1: reach OpenBao, authenticate, verify the PKI mount and every
 * template's role; report each step.  Returns 0 when all hold, else the
 * code of the first failed step (later steps that depend on it are skipped).
 * Authenticating uses the token the store's processes share when it is
 * fresh (lookup-self proves it works); `login` logs in regardless, which
 * tests the credentials themselves (the new token is shared).
 */
int cmk_check(struct cmk_ctx *ctx, bool login, cmk_step_fn step, void *arg);

/* A keystore connection request (story 2). */
struct cmk_keystore_request {
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];     /* as given: a type or an alias */
	char **endpoints;                /* "host:port" */
	size_t n_endpoints;
	char *server_ca_pem;             /* NULL = none */
	int verify;                      /* enum cmk_verify, or -1 = the template's */
};
void cmk_keystore_request_clear(struct cmk_keystore_request *req);

/*
 * Parse the use case's keystore request JSON:
 *   {"tenant_id": "...", "keystore_config": {"type": "...",
 *    "connection_endpoints": ["host:port", ...],
 *    "authentication_method": "client_certificate", "certificate_required": true}}
 * keystore_config may also carry "server_ca" (PEM of the CA the keystore's
 * server certificate must chain to) and "verify" ("tls", "kmip", "none").
 * Unknown keys are refused; detail names the bad field.  Validation of the
 * values themselves happens in cmk_keystore_add().
 */
int cmk_keystore_request_from_json(const char *text, size_t len, struct cmk_keystore_request *out);

struct cmk_op_result {
	uint64_t id;                     /* certificate record, 0 when none was stored */
	enum cmk_status status;
	char serial[CMK_SERIAL_MAX];
	char fingerprint[CMK_FPR_LEN + 1];
	char type[CMK_TYPE_MAX + 1];     /* canonical type */
	int64_t not_after, renew_at;
	struct cmk_bao_warnings warnings;
};
void cmk_op_result_clear(struct cmk_op_result *res);

/*
 * Story 2: validate, issue or sign from the template, check, seal and store
 * as pending, test the connection, then activate.  A refused test leaves
 * the record failed and returns CMK_ERR_KEYSTORE.  Bad input returns
 * CMK_ERR_INVALID before anything is stored or audited.
 */
int cmk_keystore_add(struct cmk_ctx *ctx, const struct cmk_keystore_request *req, struct cmk_op_result *res,
		     cmk_step_fn step, void *arg);

/*
 * Start-up recovery: every pending record whose (tenant, type) no running
 * operation holds was left by a process that died mid-operation; it becomes
 * failed ("interrupted"), audited.  *n_reset receives how many.  Pool keys
 * claimed by processes that died are discarded (and shredded).
 */
int cmk_recover(struct cmk_ctx *ctx, unsigned *n_reset);

/*
 * Story 3: renew (tenant, type) now.  The new certificate keeps the subject
 * and names of the one it replaces, is stored pending, tested against the
 * keystore endpoints, and then becomes active while the old one becomes
 * rotating, in one transaction.  A refused test marks the new one failed,
 * leaves the old one active and schedules a retry with backoff.
 */
int cmk_renew(struct cmk_ctx *ctx, const char *tenant, const char *type, struct cmk_op_result *res,
	      cmk_step_fn step, void *arg);

struct cmk_pass_stats {
	unsigned renewed, failed, busy, expired, cleaned;
};

/*
 * One scheduler pass at time `now`: renew what the renew_at index says is
 * due (at most `max_ops`, 0 = no limit), expire active certificates past
 * not_after, and clean up rotating ones past the grace period.
 */
int cmk_run_due(struct cmk_ctx *ctx, int64_t now, unsigned max_ops, struct cmk_pass_stats *stats);

/* The scheduler's pieces, for callers that spread the work over threads. */
/* Ids of active certificates with 0 < renew_at <= now, earliest first, at most max (0 = all). */
int cmk_due_ids(struct cmk_ctx *ctx, int64_t now, size_t max, uint64_t **ids, size_t *n);
/* Renew one due certificate, or expire it when past not_after; skipped (busy) when its lock is held. */
void cmk_run_one(struct cmk_ctx *ctx, uint64_t id, int64_t now, struct cmk_pass_stats *st);
/* Clean up rotating certificates whose grace period is over. */
void cmk_cleanup_due(struct cmk_ctx *ctx, int64_t now, struct cmk_pass_stats *st);

/* Reasons for revocation (RFC 5280 names). */
enum cmk_revoke_reason { CMK_REVOKE_UNSPECIFIED = 0, CMK_REVOKE_COMPROMISE = 1, CMK_REVOKE_SUPERSEDED = 4,
			 CMK_REVOKE_CESSATION = 5 };

/*
 * "compromise" (or "keyCompromise"), "superseded", "cessation" (or
 * "cessationOfOperation"), "unspecified": the reason, or -1 for anything else.
 */
int cmk_revoke_reason_parse(const char *s);

/*
 * Story 4: revoke every live certificate of (tenant, type) in OpenBao
 * (by serial, or by PEM for a no_store role), confirm each serial is on the
 * CRL signed by the issuing CA, mark it revoked and destroy its sealed key.
 * An answer that did not revoke (for example an already expired
 * certificate) is returned as CMK_ERR_STATE with OpenBao's warning.
 * res->id/serial describe the last certificate handled.
 */
int cmk_revoke(struct cmk_ctx *ctx, const char *tenant, const char *type, enum cmk_revoke_reason reason,
	       struct cmk_op_result *res, cmk_step_fn step, void *arg);

/* Keystore disconnected: cmk_revoke(..., cessation) then forget the keystore's connection config. */
int cmk_keystore_remove(struct cmk_ctx *ctx, const char *tenant, const char *type, struct cmk_op_result *res,
			cmk_step_fn step, void *arg);

struct cmk_verify_stats {
	unsigned active;       /* active certificates checked */
	unsigned bad;          /* of which failed */
	unsigned reset;        /* interrupted operations reset by recovery first */
};

/*
 * Integrity check: recover interrupted operations, then for every active
 * certificate unseal its key, check it matches the certificate and that
 * the certificate chains to its CA chain; one step report per certificate
 * ("<tenant>-<type>").  CMK_ERR_VERIFY when any fails.
 */
int cmk_verify_store(struct cmk_ctx *ctx, struct cmk_verify_stats *st, cmk_step_fn step, void *arg);

/*
 * Before an operation that changes the store: with `needs_openbao`, the
 * files the configuration names for talking to OpenBao must be readable
 * (cmk_bao_check_files(); a broken configuration is refused before the
 * operation records anything); then interrupted operations are recovered
 * (cmk_recover(); *recovered says how many; its failures are left for the
 * next run).
 */
int cmk_prepare(struct cmk_ctx *ctx, bool needs_openbao, unsigned *recovered);

/*
 * Records matching `f` in id order, as `cmkcert list` shows them: the tenant
 * and type are checked (CMK_ERR_INVALID naming tenant_id or type) and a
 * type may be an alias.  cb as for cmk_store_cert_each().
 */
int cmk_cert_list(struct cmk_ctx *ctx, const struct cmk_cert_filter *f, cmk_cert_cb cb, void *arg);

/*
 * The record `cmkcert show` shows for (tenant, type): names checked, an
 * alias resolved, then the active certificate, else the first record found
 * in the order of the statuses.  CMK_ERR_NOTFOUND with detail when there is
 * none.  Release `out` with cmk_cert_record_clear().
 */
int cmk_cert_current(struct cmk_ctx *ctx, const char *tenant, const char *type, struct cmk_cert_record *out);

/* renew_at for a certificate valid [not_before, not_after] under cfg (without jitter when jitter_rand < 0). */
int64_t cmk_renew_at(const struct cmk_config *cfg, int64_t not_before, int64_t not_after, double jitter_rand);

#endif
