/*
 * http_int.h - shared by http_curl.c (the libcurl boundary) and
 * http_openssl.c (the OpenSSL boundary): what the curl side may ask of the
 * TLS library libcurl runs on.
 */
#ifndef CMKCERT_HTTP_INT_H
#define CMKCERT_HTTP_INT_H

#include <stdbool.h>

/*
 * True when `curl_ssl_version` (curl_version_info()'s ssl_version, e.g.
 * "OpenSSL/3.0.19") names the very OpenSSL this program is linked with and
 * that OpenSSL can cleanse received plaintext.  Only then may an SSL_CTX
 * handed out by libcurl be given to cmk_http_openssl_harden_ctx().
 */
bool cmk_http_openssl_matches(const char *curl_ssl_version);

/*
 * Make connections made from `ssl_ctx` (an OpenSSL SSL_CTX *) wipe each
 * record's decrypted bytes once libcurl has read them.
 */
void cmk_http_openssl_harden_ctx(void *ssl_ctx);

#endif
