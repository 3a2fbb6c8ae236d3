/*
 * crypto_mbedtls.c - the crypto backend: the only core file (with
 * probe_tls.c for the TLS client) that includes mbedTLS.  mbedTLS returns
 * negative codes; they are translated to CMK_ERR_* here with the library's
 * message in the detail.
 */
#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/util.h"

void cmk_wipe(void *p, size_t len)
{
	if (p != NULL)
		mbedtls_platform_zeroize(p, len);
}

void cmk_freezero(void *p, size_t len)
{
	if (p == NULL)
		return;
	mbedtls_platform_zeroize(p, len);
	free(p);
}
