/*
 * store_int.h - what the store's two files share: the binary encoding of
 * records and index keys (store_codec.c, which knows nothing of Berkeley DB)
 * used by the Berkeley DB boundary (store_bdb.c).  Tests include it to check
 * the decoder against damaged bytes.
 *
 * Every record value starts with a format byte (CMK_REC_V1), followed by
 * fields, each a 4-byte big-endian length and that many bytes; the length
 * CMK_FIELD_ABSENT marks a NULL pointer, so NULL and "" stay distinct.
 * Integers are fixed-width big-endian.  The fields of version 1 are all
 * required; fields added later are appended after them, optional, and
 * ignored by older code, so a record written by newer code still decodes
 * here as long as its format byte is known.  Every length is checked against
 * the buffer: damaged bytes fail with CMK_ERR_STORE "corrupt ... record",
 * never a read out of bounds.
 */
#ifndef CMKCERT_STORE_INT_H
#define CMKCERT_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmkcert/store.h"

/*
 * Layout of the store as a whole (meta "version"); a newer one is refused.
 *   1  the first layout
 *   2  adds the by_status index, built when a store of format 1 is opened
 *      (code that does not keep it in step must not write, so older code
 *      refuses the store from then on); records written from then on keep
 *      their CA chain in chains.db and their key in a slot of its size
 */
#define CMK_STORE_FORMAT 2u
/* Leading byte of every record value. */
#define CMK_REC_V1 1u
#define CMK_FIELD_ABSENT 0xffffffffu

/* tenant '\0' type '\0' status */
#define CMK_TTS_KEY_MAX (CMK_TENANT_MAX + 1 + CMK_TYPE_MAX + 1 + 1)
/*
 * by_status keys are one byte: the status, and for a record whose
 * revocation is pending (CMK_CERT_F_REVOKING, not yet revoked or cleaned up)
 * CMK_STATUS_KEY_REVOKING as well.
 */
#define CMK_STATUS_KEY_REVOKING 0x80u
#define CMK_STATUS_KEYS_MAX 2

/* tenant '\0' type */
#define CMK_KS_KEY_MAX (CMK_TENANT_MAX + 1 + CMK_TYPE_MAX)

static inline void cmk_be64_put(uint8_t out[8], uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		out[i] = (uint8_t)v;
}

static inline uint64_t cmk_be64_get(const uint8_t in[8])
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | in[i];
	return v;
}

static inline void cmk_be32_put(uint8_t out[4], uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		out[i] = (uint8_t)v;
}

static inline uint32_t cmk_be32_get(const uint8_t in[4])
{
	return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

/*
 * Encode a certificate record (rec->id is the database key, not part of the
 * value).  *buf is malloc'd and holds the sealed key: release it with
 * cmk_freezero(*buf, *len).  CMK_ERR_INVALID when a fixed-size field is not
 * NUL-terminated or the status is out of range.
 */
int cmk_codec_cert_encode(const struct cmk_cert_record *rec, uint8_t **buf, size_t *len);
/*
 * The same with the sealed key kept in key slot `key_slot` (store_keys.c):
 * the record then carries the slot number instead of the key's bytes.
 * 0 = no slot (as cmk_codec_cert_encode()).
 */
int cmk_codec_cert_encode_slot(const struct cmk_cert_record *rec, uint32_t key_slot, uint8_t **buf, size_t *len);

/*
 * What a record names instead of holding it: its sealed key's slot
 * (store_keys.c; 0 = the key, if any, is in the record) and its CA chain,
 * kept once per distinct chain under the SHA-256 of its text (chains.db).
 */
#define CMK_CHAIN_ID_LEN 32
struct cmk_cert_refs {
	uint32_t key_slot;
	bool has_chain_id;
	uint8_t chain_id[CMK_CHAIN_ID_LEN];
};
/* Encode with those references; rec->chain_pem is left out when refs->has_chain_id. */
int cmk_codec_cert_encode_refs(const struct cmk_cert_record *rec, const struct cmk_cert_refs *refs, uint8_t **buf,
			       size_t *len);

/*
 * Decode into *out (overwritten, not freed first; release with
 * cmk_cert_record_clear()), setting out->id = id.  On failure *out is
 * cleared and the result is CMK_ERR_STORE "corrupt certificate record <id>"
 * or CMK_ERR_NOMEM.
 */
int cmk_codec_cert_decode(uint64_t id, const void *buf, size_t len, struct cmk_cert_record *out);
/* The same, also giving the record's key slot (0 = none: the key, if any, is in the record). */
int cmk_codec_cert_decode_slot(uint64_t id, const void *buf, size_t len, struct cmk_cert_record *out,
			       uint32_t *key_slot);
/* The same with every reference; out->chain_pem is NULL when the chain is kept apart (refs->has_chain_id). */
int cmk_codec_cert_decode_refs(uint64_t id, const void *buf, size_t len, struct cmk_cert_record *out,
			       struct cmk_cert_refs *refs);

/* The indexed fields of an encoded certificate record, pointing into the buffer. */
struct cmk_cert_keys {
	const char *tenant;
	size_t tenant_len;
	const char *type;
	size_t type_len;
	enum cmk_status status;
	const char *serial;
	size_t serial_len;
	int64_t renew_at;
	uint32_t flags;
};

/* Read only the indexed fields (no allocation).  CMK_ERR_STORE when damaged. */
int cmk_codec_cert_keys(const void *buf, size_t len, struct cmk_cert_keys *k);

/* Keystore records: same conventions as the certificate functions. */
int cmk_codec_keystore_encode(const struct cmk_keystore_record *rec, uint8_t **buf, size_t *len);
int cmk_codec_keystore_decode(const void *buf, size_t len, struct cmk_keystore_record *out);

/* Change log entries (ch->seq is the key).  *buf is malloc'd; free() it. */
int cmk_codec_change_encode(const struct cmk_change *ch, uint8_t **buf, size_t *len);
int cmk_codec_change_decode(uint64_t seq, const void *buf, size_t len, struct cmk_change *out);

/*
 * Index and table keys.  Names are taken with explicit lengths so the same
 * builder serves C strings and fields inside an encoded record.  Each returns
 * the key length, or 0 when a name is empty, too long or holds a NUL.
 */
size_t cmk_codec_tts_key(const char *tenant, size_t tenant_len, const char *type, size_t type_len,
			 enum cmk_status status, uint8_t out[CMK_TTS_KEY_MAX]);
size_t cmk_codec_ks_key(const char *tenant, size_t tenant_len, const char *type, size_t type_len,
			uint8_t out[CMK_KS_KEY_MAX]);
/* The by_status keys of a record (one byte each, see CMK_STATUS_KEY_REVOKING); returns how many. */
size_t cmk_codec_status_keys(enum cmk_status status, uint32_t flags, uint8_t out[CMK_STATUS_KEYS_MAX]);
/* Whether a record with this status and these flags still has a revocation to finish. */
bool cmk_codec_is_revoking(enum cmk_status status, uint32_t flags);

/*
 * Write the store format version into meta inside `txn`.  For future
 * migrations, and for tests that check a newer store is refused.
 */
int cmk_store_set_format(struct cmk_txn *txn, uint32_t version);

#endif
