/*
 * audit.h - the tamper-evident audit trail (DESIGN §9, REQ-012).
 *
 * Append-only JSON lines, fsync'd, one object per event:
 *   {"seq":N,"time":"...Z","event":"credentialCreate","tenant":...,"type":...,
 *    "serial":...,"fingerprint":...,"actor":...,"outcome":"success"|"failure",
 *    ...optional fields..., "prev":"<sha256 hex of the previous line>"}
 * The first line's prev is 64 zeros.  Several processes append safely: the
 * file is locked (flock) while the tail is read and the line written.
 * Never pass keys, PEM, tokens or secret ids in any field.
 */
#ifndef CMKCERT_AUDIT_H
#define CMKCERT_AUDIT_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

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
	uint64_t record_id;       /* 0 = omitted */
	long uid, gid, pid;       /* -1 = omitted */
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

/*
 * Append one line durably (write + fsync). CMK_ERR_AUDIT on failure, also
 * when the trail's last line is a complete line that is not a record (the
 * chain is not continued over a damaged end: a person must look).  An
 * incomplete last line (no newline: a writer died mid-write) is removed
 * first, and an "error" line with outcome "repaired" saying so is appended
 * before the event;
 * CMK_ERR_INVALID when event or outcome is missing.  String fields are
 * JSON-escaped (a newline cannot start a second line); bytes that are not
 * UTF-8 are replaced by U+FFFD.  Safe from several threads and processes.
 */
int cmk_audit_append(struct cmk_audit *a, const struct cmk_audit_event *ev);

/*
 * Append n events in order as n chained lines with one write and one fsync
 * (for high-rate events such as key reads).  All or none: on failure no
 * line of the batch is left in the trail.
 */
int cmk_audit_append_batch(struct cmk_audit *a, const struct cmk_audit_event *evs, size_t n);

/*
 * Verify the chain of a whole file.  0 when every line parses, sequence
 * numbers count up from 1 without gaps and each prev matches the SHA-256 of
 * the line before; otherwise CMK_ERR_AUDIT with *bad_line = the first bad
 * line (1-based) and detail saying why.  *n_lines receives the line count.
 * *n_lines counts every line of the file, also after a bad one; either
 * pointer may be NULL.  An empty file verifies with 0 lines; a missing file
 * is CMK_ERR_NOTFOUND.  Lines appended while verifying are not read.
 * A hash chain cannot tell that lines were cut from the end of the file
 * (or the last line rewritten): compare the line count with an earlier one.
 */
int cmk_audit_verify(const char *path, uint64_t *n_lines, uint64_t *bad_line);

#endif
