/*
 * http_openssl.c - the OpenSSL boundary: the only file that includes an
 * OpenSSL header.
 *
 * cmkcert does its own cryptography with mbedTLS; OpenSSL is in the process
 * only because Debian's libcurl runs TLS on it.  OpenSSL decrypts each TLS
 * record in place in a read buffer that lives as long as the connection
 * (libcurl keeps connections open between requests) and, by default, leaves
 * the plaintext there until the next record overwrites it.  In issue mode
 * that plaintext is the JSON answer holding a private key.
 * SSL_OP_CLEANSE_PLAINTEXT (OpenSSL 3.0) makes OpenSSL wipe those bytes as
 * soon as libcurl has copied them out; libcurl hands us each new SSL_CTX
 * through CURLOPT_SSL_CTX_FUNCTION, and this file sets the option on it.
 *
 * Why a file of its own rather than a few lines in http_curl.c: a second
 * library's headers and conventions would otherwise leak into the curl
 * boundary, and the checks that an SSL_CTX really comes from the OpenSSL
 * we are linked with belong next to the one call that relies on it.
 *
 * OpenSSL's allocator is left as it is (no CRYPTO_set_mem_functions): with
 * the option set, the buffers OpenSSL frees hold ciphertext and wiped
 * plaintext only, and its own secrets (traffic keys) are cleansed by OpenSSL
 * itself, so a process-wide allocator hook would buy nothing measurable.
 */
#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "http_int.h"

bool cmk_http_openssl_matches(const char *curl_ssl_version)
{
#ifdef SSL_OP_CLEANSE_PLAINTEXT
	const char *prefix = "OpenSSL/", *ours = OpenSSL_version(OPENSSL_VERSION_STRING);
	size_t plen = strlen(prefix);

	/* Another TLS library, or another OpenSSL loaded beside ours: its SSL_CTX is not ours to touch. */
	if (curl_ssl_version == NULL || strncmp(curl_ssl_version, prefix, plen) != 0 || ours == NULL)
		return false;
	return strcmp(curl_ssl_version + plen, ours) == 0;
#else
	(void)curl_ssl_version;
	return false;
#endif
}

void cmk_http_openssl_harden_ctx(void *ssl_ctx)
{
#ifdef SSL_OP_CLEANSE_PLAINTEXT
	SSL_CTX_set_options((SSL_CTX *)ssl_ctx, SSL_OP_CLEANSE_PLAINTEXT);
#else
	(void)ssl_ctx;
#endif
}
