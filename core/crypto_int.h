/*
 * crypto_int.h - what the two mbedTLS boundary files (crypto_mbedtls.c and
 * probe_tls.c) share and nothing else may see: the inside of a key handle,
 * the process-wide random generator and the translation of mbedTLS error
 * codes.  Including this header pulls in mbedTLS, so no other core file
 * includes it.
 */
#ifndef CMKCERT_CRYPTO_INT_H
#define CMKCERT_CRYPTO_INT_H

#include <stddef.h>

#include <stdbool.h>
#include <stdint.h>

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "cmkcert/crypto.h"

/* A private key: an RSA or EC mbedTLS key context that holds the private part. */
struct cmk_key {
	mbedtls_pk_context pk;
};

/*
 * The key's mbedTLS context, for mbedtls_ssl_conf_own_cert() and the like.
 * mbedTLS takes non-const key pointers even where it only reads them; the
 * caller must not change the key through the pointer.
 */
mbedtls_pk_context *cmk_key_pk(const struct cmk_key *key);

/*
 * The process-wide CTR-DRBG as an mbedTLS f_rng callback (pass NULL as
 * p_rng).  Safe to call from any thread: each call takes the generator's
 * lock only while it draws bytes.  Seeded once from the system entropy
 * source on first use, and reseeded after fork() so parent and child never
 * share a stream.  Returns 0 or an mbedTLS error code.
 */
int cmk_rng(void *p_rng, unsigned char *out, size_t len);

/*
 * Make sure the generator is seeded: 0, or CMK_ERR_CRYPTO with detail when
 * the entropy source failed.  Call before handing cmk_rng to mbedTLS so a
 * seeding failure is reported as such rather than as a failed handshake.
 */
int cmk_rng_ready(void);

/*
 * Translate an mbedTLS return code into a CMK_ERR_* code (CMK_ERR_NOMEM for
 * allocation failures, CMK_ERR_CRYPTO otherwise) and record the detail
 * "<what>: <mbedTLS message> (-0xNNNN)".  `what` names the operation, for
 * example "csr: signing".  Returns the CMK_ERR_* code.
 */
int cmk_mbedtls_fail(int mbedtls_ret, const char *what);

/* Unix seconds of an X.509 time (UTC calendar fields). */
int64_t cmk_x509_time_unix(const mbedtls_x509_time *t);

/* Subject and issuer are the same name: a root, a trust anchor. */
bool cmk_x509_is_self_signed(const mbedtls_x509_crt *crt);

#endif
