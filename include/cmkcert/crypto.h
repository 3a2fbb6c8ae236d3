/*
 * crypto.h - the crypto backend (mbedTLS): keys, CSRs, certificate parsing
 * and checks, hashing, randomness, AEAD and key derivation.
 *
 * Private keys live in `struct cmk_key` handles; PEM of a private key only
 * exists transiently in buffers the caller wipes with cmk_freezero().
 */
#ifndef CMKCERT_CRYPTO_H
#define CMKCERT_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmkcert/config.h"

#define CMK_SERIAL_MAX 128
#define CMK_FPR_LEN 64            /* lowercase hex SHA-256 */

struct cmk_key;                   /* a private key */

/*
 * Generate RSA (2048/3072/4096, exponent 65537) or EC (256 = P-256,
 * 384 = P-384); other sizes are CMK_ERR_INVALID naming the size.
 * RSA-4096 takes seconds: call it from a worker, never a FUSE handler.
 */
int cmk_key_generate(enum cmk_key_type type, int bits, struct cmk_key **out);

/* Parse a PEM private key (PKCS#1, SEC1 or PKCS#8, unencrypted; an encrypted key is CMK_ERR_INVALID). */
int cmk_key_parse_pem(const char *pem, size_t len, struct cmk_key **out);

/* PEM of the private key (PKCS#1 for RSA, SEC1 for EC); caller cmk_freezero()s *pem (len bytes + NUL). */
int cmk_key_write_pem(const struct cmk_key *key, char **pem, size_t *len);

/*
 * SHA-256 of the key's public part as a certificate carries it (the DER of
 * its SubjectPublicKeyInfo): tells keys apart without touching the secret.
 */
int cmk_key_public_sha256(const struct cmk_key *key, uint8_t out[32]);

enum cmk_key_type cmk_key_type(const struct cmk_key *key);
int cmk_key_bits(const struct cmk_key *key);

/* Wipes and frees; NULL is a no-op. */
void cmk_key_free(struct cmk_key *key);

/*
 * A PEM certificate signing request with subject CN=`cn` and DNS SANs
 * (the CN first, then each of `dns`, duplicates dropped), signed with SHA-256.
 * *pem is malloc'd.  It asks for key usage digitalSignature (plus
 * keyEncipherment for RSA) and extended key usage clientAuth.  The CN and
 * every name must be a DNS name (letters, digits, '-', '_', dot-separated
 * labels of 1..63, at most 253 in all, optionally starting with "*.");
 * anything else is CMK_ERR_INVALID naming the field.
 */
int cmk_csr_create(const struct cmk_key *key, const char *cn, const char *const *dns, size_t n_dns, char **pem);

struct cmk_cert_info {
	char serial[CMK_SERIAL_MAX];      /* lowercase colon hex, leading zero octets dropped */
	char fingerprint[CMK_FPR_LEN + 1];/* SHA-256 of the DER */
	char subject[512];                /* RFC 4514-ish "CN=..., O=..." */
	char issuer[512];
	int64_t not_before;
	int64_t not_after;
	enum cmk_key_type key_type;
	int key_bits;
	char **dns_names;                 /* SAN dNSName entries */
	size_t n_dns_names;
	bool client_auth;                 /* ExtendedKeyUsage allows clientAuth (or no EKU) */
};

/*
 * Parse the first certificate of a PEM text (other PEM blocks, such as the
 * key in an OpenBao pem_bundle, are skipped). Release with cmk_cert_info_clear().
 */
int cmk_cert_parse(const char *pem, struct cmk_cert_info *out);
void cmk_cert_info_clear(struct cmk_cert_info *info);

/* Number of certificates in a PEM text (other PEM blocks are ignored); CMK_ERR_INVALID when any is unparsable. */
int cmk_pem_cert_count(const char *pem);

/* 0 when the certificate's public key is the key's; CMK_ERR_VERIFY otherwise. */
int cmk_cert_matches_key(const char *cert_pem, const struct cmk_key *key);

/*
 * The same by comparing the public halves only (no private-key arithmetic):
 * enough for a key this process generated or took from the pool, whose
 * halves belong together by construction.  A key from elsewhere (an issue
 * answer) needs cmk_cert_matches_key(), which also checks the key itself.
 */
int cmk_cert_has_public_key(const char *cert_pem, const struct cmk_key *key);

/*
 * 0 when `leaf_pem` chains to a self-signed root in `chain_pem` (issuing CA
 * first, then parents) and every certificate is valid now; CMK_ERR_VERIFY
 * with detail naming the reason otherwise.
 */
int cmk_cert_verify_chain(const char *leaf_pem, const char *chain_pem);

/*
 * The part of cmk_cert_verify_chain() that depends on the leaf: the chain's
 * first certificate (the issuing CA) signed `leaf_pem`, and every
 * certificate of leaf and chain is valid now.  For a caller that already
 * verified this very chain up to its root (one signature less per call).
 */
int cmk_cert_verify_issued_by(const char *leaf_pem, const char *chain_pem);

/*
 * 0 when `crl_pem` (an X509 CRL in PEM) is signed by the CA that issued
 * `leaf_pem` (verified through `chain_pem`, issuing CA first, then parents
 * up to a self-signed root) and lists the leaf's serial; *revoked_at (may
 * be NULL) receives the revocation date from the CRL.  CMK_ERR_VERIFY
 * naming the reason otherwise (not listed, CRL not signed by the issuer).
 */
int cmk_crl_lists(const char *crl_pem, const char *leaf_pem, const char *chain_pem, int64_t *revoked_at);

/* Lowercase hex SHA-256 of the DER of the first certificate in `pem`. */
int cmk_cert_fingerprint(const char *pem, char out[CMK_FPR_LEN + 1]);

/* Primitives. */
int cmk_random(void *buf, size_t len);
void cmk_sha256(const void *data, size_t len, uint8_t out[32]);
/* Constant-time comparison (for MACs): true when equal. */
bool cmk_memeq(const void *a, const void *b, size_t n);
void cmk_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len, uint8_t out[32]);
void cmk_hex(const uint8_t *in, size_t len, char *out); /* out: 2*len+1 */
int cmk_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
		    const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/* AES-256-GCM with a 96-bit nonce and a 128-bit tag appended to the ciphertext. */
int cmk_aead_seal(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
		  const uint8_t *pt, size_t pt_len, uint8_t *ct_and_tag);
int cmk_aead_open(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
		  const uint8_t *ct_and_tag, size_t ct_len_with_tag, uint8_t *pt);

/* base64 (standard, padded); malloc'd NUL-terminated output. */
int cmk_base64_encode(const uint8_t *in, size_t len, char **out);
int cmk_base64_decode(const char *in, size_t len, uint8_t **out, size_t *outlen);

#endif
