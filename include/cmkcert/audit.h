/*
 * audit.h - the tamper-evident audit trail (DESIGN §9, REQ-012).
 *
 * Append-only JSON lines, fsync'd, one object per event:
 *   {"seq":N,"time":"...Z","event":"credentialCreate","tenant":...,"type":...,
 *    "serial":...,"fingerprint":...,"actor":...,"step":...,"key_origin":...,
 *    "outcome":"success"|"failure",
 *    ...optional fields..., "prev":"<sha256 hex of the previous line>",
 *    "mac":"<HMAC-SHA256 of the line before this member>"}
 * The first line's prev is 64 zeros.  Several processes append safely: the
 * file is locked (flock) while the tail is read and the line written.
 *
 * Keyed and anchored.  A trail bound to a store (cmk_audit_bind(); every
 * context does it) MACs each line with a key derived from the master key,
 * and records the last line of every append (sequence and MAC) in the
 * store, in the transaction of the operation it records.  Without the
 * master key nobody can append a line that verifies or re-chain edited
 * ones; lines removed from the end fall short of the anchor.  A trail
 * written before keying verifies as such: its unkeyed lines are vouched for
 * by the first keyed line after them.
 *
 * Never pass keys, PEM, tokens or secret ids in any field.
 */
#ifndef CMKCERT_AUDIT_H
#define CMKCERT_AUDIT_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "cmkcert/store.h"

/* Event names (OpenKCM audit vocabulary first). */
#define CMK_AUDIT_CREATE "credentialCreate"
#define CMK_AUDIT_RENEW "credentialRenew"
#define CMK_AUDIT_ACTIVATE "credentialActivate"
#define CMK_AUDIT_REVOKE "credentialRevokation"
#define CMK_AUDIT_DELETE "credentialDelete"
#define CMK_AUDIT_EXPIRE "credentialExpiration"
#define CMK_AUDIT_KEY_READ "privateKeyRead"
#define CMK_AUDIT_LOGIN "authLogin"
#define CMK_AUDIT_ERROR "error"
#define CMK_AUDIT_ROTATE "auditRotate"
#define CMK_AUDIT_CONTROL "controlRequest"   /* a request on cmkcertfs's control socket */

struct cmk_audit;

struct cmk_audit_event {
	const char *event;        /* required */
	const char *tenant;       /* NULL = omitted */
	const char *type;
	const char *serial;
	const char *fingerprint;
	const char *actor;        /* "cli:uid=0", "cmkcertfs", ... NULL = omitted */
	const char *outcome;      /* "success" | "failure" | "denied" ...; required */
	const char *step;         /* the lifecycle step: "issue", "test", "seal" ... */
	const char *detail;       /* short reason, never a secret */
	const char *key_origin;   /* issuance: where the private key came from: "pool", "inline", "openbao" */
	uint64_t record_id;       /* 0 = omitted */
	long uid, gid, pid;       /* -1 = omitted */
	uint64_t count;           /* events this line stands for (aggregated refusals); 0 = omitted */
};

/* Designated-initialiser helper: every numeric field "omitted". */
#define CMK_AUDIT_EVENT_INIT { .uid = -1, .gid = -1, .pid = -1 }

/*
 * Open for appending (created 0600 with its directory, 0700, when missing).
 * CMK_ERR_AUDIT when it cannot be opened or is not a regular file.  A handle
 * inherited across fork() reopens the file on its first append in the child,
 * so parent and child do not share one flock.  Release with cmk_audit_close().
 */
int cmk_audit_open(const char *path, struct cmk_audit **out);
void cmk_audit_close(struct cmk_audit *a);

struct cmk_store;
struct cmk_txn;

/*
 * Key the trail and anchor it in `st` (which must outlive `a`): from now on
 * lines carry a MAC under `key` (32 bytes, copied; see
 * cmk_sealer_audit_key()) and every append records its last line in the
 * store.  Appending then refuses a trail that ends before the anchored line
 * or whose line there is not the one recorded (CMK_ERR_AUDIT): it was cut or
 * rewritten, and a person must look.
 */
void cmk_audit_bind(struct cmk_audit *a, struct cmk_store *st, const uint8_t key[32]);

/*
 * Append one line durably (write + fsync; bound: then the anchor commits).
 * CMK_ERR_AUDIT on failure, also when the trail's last line is a complete
 * line that is not a record or the anchor says lines are missing (the chain
 * is not continued over a damaged end: a person must look).  An incomplete
 * last line that no anchor recorded (a writer died mid-write) is removed
 * first, and an "error" line with outcome "repaired" saying how many bytes
 * went and their SHA-256 is appended before the event.  CMK_ERR_INVALID when
 * event or outcome is missing.  String fields are JSON-escaped (a newline
 * cannot start a second line); bytes that are not UTF-8 are replaced by
 * U+FFFD.  Safe from several threads and processes.
 */
int cmk_audit_append(struct cmk_audit *a, const struct cmk_audit_event *ev);

/*
 * Append n events in order as n chained lines with one write and one fsync
 * (for high-rate events such as key reads), anchored in a transaction of
 * its own.  All or none: on failure no line of the batch is left in the
 * trail (lines written before a failed anchor commit stay, unanchored).
 */
int cmk_audit_append_batch(struct cmk_audit *a, const struct cmk_audit_event *evs, size_t n);

/*
 * The same inside the caller's transaction, which records the anchor:
 * call it as the transaction's last store step (it takes the anchor's lock,
 * then the file's), then commit.  The lines are durable on return; if the
 * transaction then aborts they stay in the trail, unanchored, recording an
 * operation that did not complete.  Unbound: like cmk_audit_append_batch().
 */
int cmk_audit_append_txn(struct cmk_audit *a, struct cmk_txn *txn, const struct cmk_audit_event *evs, size_t n);

/*
 * Start a new trail file (a bound trail only): the current file is renamed
 * to "<path>.<UTC time>" (copied into moved_to) and a new file takes its
 * path, whose first line (event auditRotate) continues the chain: the next
 * sequence number, the hash of the old last line, a MAC, and the old file's
 * name.  The anchor moves to that line in the same transaction.  Processes
 * that have the trail open follow to the new file at their next append.
 * CMK_ERR_STATE for an empty trail or an incomplete last line.
 */
int cmk_audit_rotate(struct cmk_audit *a, char *moved_to, size_t cap);

/* What to check a trail against. */
struct cmk_audit_check {
	const uint8_t *key;                       /* the MAC key (32 bytes); NULL: hashes only */
	const struct cmk_audit_anchor *anchor;    /* the store's anchor; NULL: none recorded */
};

struct cmk_audit_report {
	uint64_t lines;           /* every line of the file, also after a bad one */
	uint64_t bad_line;        /* first bad line (1-based), 0 = none */
	uint64_t keyed_from;      /* first line carrying a MAC, 0 = none */
	uint64_t anchored;        /* the line the anchor names, 0 = no anchor */
	uint64_t unanchored;      /* complete lines after it (written by operations that did not commit) */
	uint64_t repairs;         /* recorded removals of interrupted writes */
	uint64_t first_seq;       /* 1, or where a rotated trail continues (its first line's number) */
};

/*
 * Verify a whole file.  0 when every line parses, sequence numbers count up
 * from 1 without gaps (or, in a rotated trail whose keyed first line is an
 * auditRotate event, from that line's number), each prev matches the SHA-256 of the line before,
 * every line from the first keyed one on carries a MAC that `chk->key`
 * confirms, and the anchor's line is there with the MAC the store recorded.
 * Otherwise CMK_ERR_AUDIT, rep->bad_line = the first bad line (the line
 * after the last one when lines are missing from the end) and detail saying
 * why.  With a key, a trail that has an anchor but no keyed line fails.  An
 * empty file verifies with 0 lines; a missing file is CMK_ERR_NOTFOUND.
 * Lines appended while verifying are not read.  `chk` and `rep` may be NULL.
 */
int cmk_audit_verify(const char *path, const struct cmk_audit_check *chk, struct cmk_audit_report *rep);

#endif
