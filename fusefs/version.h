/*
 * version.h - one active certificate of a (tenant, type) as the mount serves
 * it: an immutable, reference-counted snapshot of the record's bytes.
 *
 * The tree points at the current version of each file; an open file handle
 * holds its own reference, so a reader keeps the bytes it opened while a
 * newer version is swapped in.  The private key stays sealed in here; it is
 * unsealed per open (file.c).
 */
#ifndef CMKCERTFS_VERSION_H
#define CMKCERTFS_VERSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cmkcert/config.h"
#include "cmkcert/crypto.h"
#include "cmkcert/names.h"
#include "cmkcert/store.h"

struct fsver {
	unsigned long refs;             /* atomic */
	uint64_t gen;                   /* unique per version object, never reused */
	uint64_t record_id;
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
	char serial[CMK_SERIAL_MAX];
	char fingerprint[CMK_FPR_LEN + 1];
	int64_t activated_at;
	uid_t uid;                      /* the tenant's owner ([tenant:<id>] or [fuse]) */
	gid_t gid;
	char *cert;                     /* leaf PEM, always ending in "\n" */
	size_t cert_len;
	char *chain;                    /* CA chain PEM, "" or ending in "\n" */
	size_t chain_len;
	uint8_t *sealed;                /* sealed private key, NULL when the record has none */
	size_t sealed_len;
	size_t key_len;                 /* plaintext length of the sealed key */
};

/*
 * Build a version from an active record (copies what it needs).  Returns 0,
 * CMK_ERR_NOMEM, or CMK_ERR_INVALID for a record without a certificate.
 * The new version has one reference.
 */
int fsver_new(const struct cmk_cert_record *rec, const struct cmk_config *cfg, struct fsver **out);

struct fsver *fsver_ref(struct fsver *v);
/* Drop a reference; the last one frees (the sealed key is wiped). NULL is a no-op. */
void fsver_unref(struct fsver *v);

/* True when both would serve the same bytes with the same attributes. */
bool fsver_same(const struct fsver *a, const struct fsver *b);

/* True when `a` was activated after `b` (ties: the higher record id). */
bool fsver_newer(const struct fsver *a, const struct fsver *b);

/*
 * Bundle layout: the key, one "\n" (so the key's PEM block ends on its own
 * line whether or not the sealed key ends with a newline; otherwise it is a
 * blank line, which PEM readers skip), the leaf, the chain.  The length is
 * known without unsealing, so stat can report it exactly.
 */
size_t fsver_bundle_len(const struct fsver *v);

#endif
