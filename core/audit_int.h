/*
 * audit_int.h - the audit trail's line format, shared by appending
 * (audit.c) and verifying (audit_verify.c).
 *
 * A line is one JSON object with keys in a fixed order.  "prev" is the
 * SHA-256 (hex) of the previous line's bytes without the newline (64 zeros
 * for the first line).  A keyed line ends with one more member,
 * "mac":"<hex>", the HMAC-SHA256 under the trail's key of every byte of the
 * line before that member:
 *
 *   body = {"seq":1,...,"prev":"..."
 *   line = body ,"mac":"<HMAC(key, body)>"}
 *
 * Since prev covers the whole previous line, MAC included, each MAC vouches
 * for every line before it.
 */
#ifndef CMKCERT_AUDIT_INT_H
#define CMKCERT_AUDIT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmkcert/store.h"

/* Longest line read back or written; keeps a damaged file from making us allocate without bound. */
#define AUDIT_LINE_MAX (1024 * 1024)
#define AUDIT_HASH_HEX 64
#define AUDIT_MAC_SUFFIX_LEN (sizeof(",\"mac\":\"\"}") - 1 + 2 * CMK_AUDIT_MAC_LEN)

extern const char cmk_audit_zero_hash[AUDIT_HASH_HEX + 1];

/* Hex SHA-256 of `len` bytes. */
void cmk_audit_hash(const char *data, size_t len, char out[AUDIT_HASH_HEX + 1]);

/*
 * If `line` (len bytes, no newline) ends in a well-formed "mac" member, its
 * MAC bytes go to mac and the length of the body it covers (the line's
 * first *body_len bytes) to *body_len; false otherwise.
 */
bool cmk_audit_split_mac(const char *line, size_t len, uint8_t mac[CMK_AUDIT_MAC_LEN], size_t *body_len);

/* The event an interrupted write's repair is recorded as. */
#define AUDIT_REPAIR_OUTCOME "repaired"
#define AUDIT_REPAIR_STEP "audit"

#endif
