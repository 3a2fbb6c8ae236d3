/*
 * seal.h - sealing private keys with a tenant-specific key (DESIGN §6).
 *
 * seal(tenant, aad, plaintext) -> blob; unseal(tenant, aad, blob) -> plaintext.
 * The blob carries a format version, the provider id, the key id and key
 * version so keys can be re-wrapped later.  The AAD binds tenant, type,
 * record id and serial: a blob copied onto another record or tenant does
 * not open.
 *
 * Provider "local": a 32-byte master key file (0400/0600, owned by root or
 * the effective user); tenant key = HKDF-SHA256(master, salt = store id,
 * info = "cmkcert tenant v1" || tenant); AES-256-GCM with a random 96-bit nonce.
 */
#ifndef CMKCERT_SEAL_H
#define CMKCERT_SEAL_H

#include <stddef.h>
#include <stdint.h>
#include "cmkcert/config.h"

#define CMK_STORE_ID_LEN 16

struct cmk_sealer;

/*
 * Blobs that belong to no tenant are bound to a name starting with '#',
 * which no tenant id can: CMK_SEAL_POOL for keys waiting in the key pool
 * (type = the pool's name, record_id = the entry's id, serial ""), and
 * CMK_SEAL_TOKEN for the OpenBao token the store's processes share (type =
 * the token's name).  Their key is HKDF-SHA256(master, salt = store id,
 * info = "cmkcert pool v1" or "cmkcert token v1"), never a tenant's.
 */
#define CMK_SEAL_POOL "#pool"
#define CMK_SEAL_TOKEN "#token"

/* What a sealed key is bound to. */
struct cmk_seal_aad {
	const char *tenant;
	const char *type;
	uint64_t record_id;
	const char *serial;
};

/*
 * Load the provider named in cfg->keys (reads and checks the master key file;
 * the key is kept in locked memory).  `store_id` is the store's random id.
 */
int cmk_sealer_open(const struct cmk_config *cfg, const uint8_t store_id[CMK_STORE_ID_LEN],
		    struct cmk_sealer **out);

/*
 * The audit trail's MAC key: HKDF-SHA256(master, salt = store id,
 * info = "cmkcert audit v1").  The caller wipes `key` after use.
 */
int cmk_sealer_audit_key(const struct cmk_sealer *s, uint8_t key[32]);

/* Wipes the master key and frees. NULL is a no-op. */
void cmk_sealer_free(struct cmk_sealer *s);

/* *blob is malloc'd (not secret). */
int cmk_seal(struct cmk_sealer *s, const struct cmk_seal_aad *aad, const uint8_t *pt, size_t pt_len,
	     uint8_t **blob, size_t *blob_len);

/*
 * *pt is malloc'd, NUL-terminated (not counted in *pt_len), and the caller
 * must cmk_freezero(*pt, *pt_len + 1).  CMK_ERR_VERIFY when the blob was
 * tampered with or belongs to another tenant, type, record or serial.
 */
int cmk_unseal(struct cmk_sealer *s, const struct cmk_seal_aad *aad, const uint8_t *blob, size_t blob_len,
	       uint8_t **pt, size_t *pt_len);

/* Plaintext length of a blob of `blob_len` bytes (0 when too short to be a blob). */
size_t cmk_unseal_size(size_t blob_len);

/*
 * Unseal into caller memory (for example a locked buffer) of `cap` bytes;
 * *pt_len receives the plaintext length.  The buffer is wiped on failure.
 */
int cmk_unseal_into(struct cmk_sealer *s, const struct cmk_seal_aad *aad, const uint8_t *blob, size_t blob_len,
		    uint8_t *pt, size_t cap, size_t *pt_len);

#endif
