/*
 * opjson.h - the JSON documents that describe certificate records and the
 * results of operations, shared by the CLI's --json output and the
 * daemon's control socket, so both say the same thing the same way.
 *
 * Every function returns a new reference (json_decref() it), or NULL only
 * when memory runs out.  Nothing here ever holds key bytes.
 */
#ifndef CMKCERT_OPJSON_H
#define CMKCERT_OPJSON_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "cmkcert/lifecycle.h"
#include "cmkcert/store.h"

/* A time as "YYYY-MM-DDTHH:MM:SSZ", or null for t <= 0. */
json_t *cmk_json_time(int64_t t);

/*
 * A certificate record: id, tenant_id, type, status, serial_number,
 * fingerprint_sha256, subject, times, supersedes, key_sealed,
 * revocation_pending, last_error and the mount's paths; with `pem` also
 * "certificate" and "ca_chain".  Never the key.
 */
json_t *cmk_json_record(const struct cmk_cert_record *r, bool pem);

/* Append one finished step {"step", "result": "ok"|"failed", "ms", "detail"} to the array `steps`. */
void cmk_json_step(json_t *steps, const char *step, int rc, int64_t ms, const char *detail);

/*
 * The failure fields every error answer carries, added to `o`:
 * "ok": false, "error" (cmk_strerror(rc)), "detail" (cmk_errdetail(), or the
 * error text when there is none), "operation" and "code" (rc).
 */
void cmk_json_set_error(json_t *o, int rc, const char *operation);

/* An error answer: the fields of cmk_json_set_error() alone. */
json_t *cmk_json_error(int rc, const char *operation);

/*
 * The result of keystore add: ok, id, status, type, serial_number,
 * fingerprint_sha256, not_after, renew_at, warnings, and `steps` (an array
 * of cmk_json_step() objects, stolen; NULL gives []).  When rc != 0 the
 * failure fields too, and "failed_step" naming the first failed step.
 */
json_t *cmk_json_add_result(const struct cmk_op_result *res, int rc, json_t *steps);

/* The result of renew, revoke or keystore remove (`operation`): ok, operation, status, serial_number, type, id. */
json_t *cmk_json_op_result(const char *operation, int rc, const struct cmk_op_result *res);

#endif
