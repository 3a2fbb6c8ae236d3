/*
 * crypto_crl.c - proof of revocation (REQ-011): is a certificate listed on
 * a CRL that its issuing CA signed?  Part of the mbedTLS boundary.
 *
 * The leaf is verified against its chain with the CRL given to mbedTLS, so
 * the CRL's signature is checked against the very CA that issued the leaf,
 * not just parsed: a CRL from another CA, or an altered one, is no proof.
 */
#include <string.h>

#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "crypto_int.h"

static int parse_pem(mbedtls_x509_crt *crt, const char *pem, const char *what)
{
	int ret;

	if (pem == NULL || strstr(pem, "-----BEGIN CERTIFICATE-----") == NULL)
		return cmk_fail(CMK_ERR_INVALID, "crl: %s: no PEM certificate", what);
	/* mbedtls_x509_crt_parse() wants the terminating NUL counted for PEM input. */
	ret = mbedtls_x509_crt_parse(crt, (const unsigned char *)pem, strlen(pem) + 1);
	if (ret < 0)
		return cmk_mbedtls_fail(ret, what);
	return 0;
}

int cmk_crl_lists(const char *crl_pem, const char *leaf_pem, const char *chain_pem, int64_t *revoked_at)
{
	mbedtls_x509_crt presented, cas, roots;
	mbedtls_x509_crl crl;
	const mbedtls_x509_crl_entry *e;
	uint32_t flags = 0;
	int ret, rc;

	mbedtls_x509_crt_init(&presented);
	mbedtls_x509_crt_init(&cas);
	mbedtls_x509_crt_init(&roots);
	mbedtls_x509_crl_init(&crl);
	if ((rc = parse_pem(&presented, leaf_pem, "crl: certificate")) != 0 ||
	    (rc = parse_pem(&cas, chain_pem, "crl: CA chain")) != 0)
		goto out;
	if (crl_pem == NULL || strstr(crl_pem, "-----BEGIN X509 CRL-----") == NULL) {
		rc = cmk_fail(CMK_ERR_VERIFY, "crl: no PEM CRL in the answer");
		goto out;
	}
	if ((ret = mbedtls_x509_crl_parse(&crl, (const unsigned char *)crl_pem, strlen(crl_pem) + 1)) != 0) {
		rc = cmk_mbedtls_fail(ret, "crl: parsing the CRL");
		goto out;
	}
	/* Intermediates follow the leaf; self-signed roots are the trust anchors. */
	for (const mbedtls_x509_crt *c = &cas; c != NULL && c->raw.p != NULL; c = c->next) {
		ret = mbedtls_x509_crt_parse_der(cmk_x509_is_self_signed(c) ? &roots : &presented, c->raw.p, c->raw.len);
		if (ret != 0) {
			rc = cmk_mbedtls_fail(ret, "crl: CA chain");
			goto out;
		}
	}
	if (roots.raw.p == NULL) {
		rc = cmk_fail(CMK_ERR_VERIFY, "crl: the CA chain has no self-signed root");
		goto out;
	}
	ret = mbedtls_x509_crt_verify(&presented, &roots, &crl, NULL, &flags, NULL, NULL);
	if (ret != 0 && ret != MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
		rc = cmk_mbedtls_fail(ret, "crl: verifying");
		goto out;
	}
	if (flags & MBEDTLS_X509_BADCRL_NOT_TRUSTED) {
		rc = cmk_fail(CMK_ERR_VERIFY, "crl: the CRL is not signed by the certificate's issuing CA");
		goto out;
	}
	if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
		rc = cmk_fail(CMK_ERR_VERIFY, "crl: the certificate does not chain to the given CA chain");
		goto out;
	}
	if (!(flags & MBEDTLS_X509_BADCERT_REVOKED)) {
		rc = cmk_fail(CMK_ERR_VERIFY, "crl: the serial is not listed on the CRL");
		goto out;
	}
	for (e = &crl.entry; e != NULL && e->serial.len > 0; e = e->next) {
		if (e->serial.len == presented.serial.len &&
		    memcmp(e->serial.p, presented.serial.p, e->serial.len) == 0) {
			if (revoked_at != NULL)
				*revoked_at = cmk_x509_time_unix(&e->revocation_date);
			break;
		}
	}
	rc = 0;
out:
	mbedtls_x509_crt_free(&presented);
	mbedtls_x509_crt_free(&cas);
	mbedtls_x509_crt_free(&roots);
	mbedtls_x509_crl_free(&crl);
	return rc;
}
