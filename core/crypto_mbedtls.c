/*
 * crypto_mbedtls.c - the crypto backend: the only core file (with
 * probe_tls.c for the TLS client) that includes mbedTLS.  mbedTLS returns
 * negative codes; they are translated to CMK_ERR_* here with the library's
 * message in the detail.
 *
 * Sections, in order: secret wiping, error translation, the process-wide
 * random generator, private keys, PEM writing, certificate requests,
 * certificate parsing and checks, primitives (hash, HKDF, AES-GCM, base64).
 *
 * Private key material only ever sits in mbedTLS contexts (which wipe
 * themselves when freed) and in buffers this file allocates and wipes
 * itself.  mbedtls_pk_write_key_pem() is not used because it leaves the DER
 * on its stack and the base64 in an unwiped heap buffer.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/gcm.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/util.h"
#include "crypto_int.h"

#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----"
#define PEM_CERT_END "-----END CERTIFICATE-----"
#define GCM_TAG_LEN 16
#define GCM_NONCE_LEN 12
#define DNS_NAME_MAX 253
#define DNS_LABEL_MAX 63
/* Room for the DER of any private key mbedTLS can hold (RSA up to 8192 bits). */
#define KEY_DER_MAX 8192
#define PUB_DER_MAX 2048           /* SubjectPublicKeyInfo of an RSA-4096 key is about 550 bytes */

/* ---- secret wiping ------------------------------------------------------ */

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

/* ---- error translation -------------------------------------------------- */

/*
 * mbedTLS composes an error from a high-level part (bits 7..14) and a
 * low-level part (bits 0..6); an allocation failure can sit in either.
 */
static bool is_alloc_failure(int ret)
{
	unsigned code = ret < 0 ? (unsigned)-ret : (unsigned)ret;
	unsigned high = code & 0x7f80u, low = code & 0x007fu;

	return low == (unsigned)-MBEDTLS_ERR_MPI_ALLOC_FAILED || low == (unsigned)-MBEDTLS_ERR_ASN1_ALLOC_FAILED ||
	       high == (unsigned)-MBEDTLS_ERR_PK_ALLOC_FAILED || high == (unsigned)-MBEDTLS_ERR_X509_ALLOC_FAILED ||
	       high == (unsigned)-MBEDTLS_ERR_PEM_ALLOC_FAILED || high == (unsigned)-MBEDTLS_ERR_ECP_ALLOC_FAILED ||
	       high == (unsigned)-MBEDTLS_ERR_MD_ALLOC_FAILED || high == (unsigned)-MBEDTLS_ERR_CIPHER_ALLOC_FAILED ||
	       high == (unsigned)-MBEDTLS_ERR_SSL_ALLOC_FAILED;
}

/* Record "<what>: <mbedTLS message> (-0xNNNN)" under `code` (or NOMEM). */
static int mbedtls_failure(int ret, int code, const char *what)
{
	char msg[200];

	mbedtls_strerror(ret, msg, sizeof(msg));
	return cmk_fail(is_alloc_failure(ret) ? CMK_ERR_NOMEM : code, "%s: %s (-0x%04x)", what, msg,
			ret < 0 ? (unsigned)-ret : (unsigned)ret);
}

int cmk_mbedtls_fail(int mbedtls_ret, const char *what)
{
	return mbedtls_failure(mbedtls_ret, CMK_ERR_CRYPTO, what);
}

/* For parsers: input mbedTLS could not read is the caller's bad input, not a crypto failure. */
static int mbedtls_invalid(int mbedtls_ret, const char *what)
{
	return mbedtls_failure(mbedtls_ret, CMK_ERR_INVALID, what);
}

/* ---- the process-wide random generator ---------------------------------- */

static pthread_once_t rng_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context rng_entropy;
static mbedtls_ctr_drbg_context rng_drbg;
static int rng_seed_ret;          /* result of seeding, answered to every later caller */
static pid_t rng_pid;             /* process that last (re)seeded the generator */

/*
 * Hold the lock across fork() so the child never inherits it locked by a
 * thread that does not exist there; the pid check in cmk_rng() then
 * reseeds the child.
 */
static void rng_prefork(void)
{
	pthread_mutex_lock(&rng_lock);
}

static void rng_postfork(void)
{
	pthread_mutex_unlock(&rng_lock);
}

static void rng_init(void)
{
	static const unsigned char pers[] = "cmkcert ctr-drbg v1";

	mbedtls_entropy_init(&rng_entropy);
	mbedtls_ctr_drbg_init(&rng_drbg);
	rng_seed_ret = mbedtls_ctr_drbg_seed(&rng_drbg, mbedtls_entropy_func, &rng_entropy, pers, sizeof(pers) - 1);
	rng_pid = getpid();
	/* Can only fail for lack of memory; the pid check still reseeds a child without it. */
	(void)pthread_atfork(rng_prefork, rng_postfork, rng_postfork);
}

int cmk_rng(void *p_rng, unsigned char *out, size_t len)
{
	pid_t pid;
	int ret = 0;

	(void)p_rng;
	pthread_once(&rng_once, rng_init);
	if (rng_seed_ret != 0)
		return rng_seed_ret;
	/*
	 * The lock is held only while bytes are drawn, never across a whole
	 * key generation, so a slow RSA-4096 search in one worker does not
	 * stall the others.  mbedTLS locks the DRBG itself too when built
	 * with threading; this lock also covers the fork check.
	 */
	pthread_mutex_lock(&rng_lock);
	pid = getpid();
	if (pid != rng_pid) {
		ret = mbedtls_ctr_drbg_reseed(&rng_drbg, (const unsigned char *)&pid, sizeof(pid));
		if (ret == 0)
			rng_pid = pid;
	}
	while (ret == 0 && len > 0) {
		size_t n = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;

		ret = mbedtls_ctr_drbg_random(&rng_drbg, out, n);
		out += n;
		len -= n;
	}
	pthread_mutex_unlock(&rng_lock);
	return ret;
}

int cmk_rng_ready(void)
{
	pthread_once(&rng_once, rng_init);
	if (rng_seed_ret != 0)
		return cmk_mbedtls_fail(rng_seed_ret, "random: seeding from the system entropy source");
	return 0;
}

int cmk_random(void *buf, size_t len)
{
	int ret, rc;

	if ((rc = cmk_rng_ready()) != 0)
		return rc;
	if ((ret = cmk_rng(NULL, buf, len)) != 0)
		return cmk_mbedtls_fail(ret, "random");
	return 0;
}

/* ---- private keys ------------------------------------------------------- */

mbedtls_pk_context *cmk_key_pk(const struct cmk_key *key)
{
	/* mbedTLS takes non-const contexts for read-only uses (writing, signing). */
	return (mbedtls_pk_context *)&key->pk;
}

static struct cmk_key *key_new(void)
{
	struct cmk_key *key = calloc(1, sizeof(*key));

	if (key != NULL)
		mbedtls_pk_init(&key->pk);
	return key;
}

void cmk_key_free(struct cmk_key *key)
{
	if (key == NULL)
		return;
	mbedtls_pk_free(&key->pk);
	cmk_freezero(key, sizeof(*key));
}

enum cmk_key_type cmk_key_type(const struct cmk_key *key)
{
	return mbedtls_pk_get_type(&key->pk) == MBEDTLS_PK_RSA ? CMK_KEY_RSA : CMK_KEY_EC;
}

int cmk_key_bits(const struct cmk_key *key)
{
	return (int)mbedtls_pk_get_bitlen(&key->pk);
}

/* The supported sizes; for EC also the curve. */
static int check_key_params(enum cmk_key_type type, int bits, mbedtls_ecp_group_id *curve)
{
	if (type == CMK_KEY_RSA) {
		if (bits == 2048 || bits == 3072 || bits == 4096)
			return 0;
		return cmk_fail(CMK_ERR_INVALID, "key_generate: rsa key size %d is not supported (use 2048, 3072 or 4096)",
				bits);
	}
	if (type == CMK_KEY_EC) {
		if (bits == 256 || bits == 384) {
			*curve = bits == 256 ? MBEDTLS_ECP_DP_SECP256R1 : MBEDTLS_ECP_DP_SECP384R1;
			return 0;
		}
		return cmk_fail(CMK_ERR_INVALID, "key_generate: ec key size %d is not supported (use 256 or 384)", bits);
	}
	return cmk_fail(CMK_ERR_INVALID, "key_generate: unknown key type %d", (int)type);
}

int cmk_key_generate(enum cmk_key_type type, int bits, struct cmk_key **out)
{
	mbedtls_ecp_group_id curve = MBEDTLS_ECP_DP_NONE;
	struct cmk_key *key = NULL;
	int ret, rc;

	*out = NULL;
	if ((rc = check_key_params(type, bits, &curve)) != 0 || (rc = cmk_rng_ready()) != 0)
		return rc;
	if ((key = key_new()) == NULL)
		return CMK_ERR_NOMEM;
	ret = mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(type == CMK_KEY_RSA ? MBEDTLS_PK_RSA : MBEDTLS_PK_ECKEY));
	/*
	 * RSA prime search dominates: measured here about 0.15 s for 2048,
	 * 0.4 s for 3072 and 1.8 s on average for 4096 bits (0.1 to 5 s, it
	 * is a random search); EC takes about 1 ms.  Callers run it in worker
	 * threads, which proceed in parallel since cmk_rng() locks per draw.
	 */
	if (ret == 0 && type == CMK_KEY_RSA)
		ret = mbedtls_rsa_gen_key(mbedtls_pk_rsa(key->pk), cmk_rng, NULL, (unsigned)bits, 65537);
	else if (ret == 0)
		ret = mbedtls_ecp_gen_key(curve, mbedtls_pk_ec(key->pk), cmk_rng, NULL);
	if (ret != 0) {
		rc = cmk_mbedtls_fail(ret, type == CMK_KEY_RSA ? "key_generate: rsa" : "key_generate: ec");
		goto out;
	}
	*out = key;
	key = NULL;
out:
	cmk_key_free(key);
	return rc;
}

int cmk_key_parse_pem(const char *pem, size_t len, struct cmk_key **out)
{
	unsigned char *buf = NULL;
	struct cmk_key *key = NULL;
	mbedtls_pk_type_t type;
	int ret, rc = 0;

	*out = NULL;
	if (pem == NULL || len == 0 || memmem(pem, len, "-----BEGIN ", 11) == NULL)
		return cmk_fail(CMK_ERR_INVALID, "key_parse: not a PEM private key");
	/* mbedTLS wants PEM NUL-terminated with the NUL counted; the caller's text need not be. */
	if ((buf = malloc(len + 1)) == NULL || (key = key_new()) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	memcpy(buf, pem, len);
	buf[len] = '\0';
	ret = mbedtls_pk_parse_key(&key->pk, buf, len + 1, NULL, 0);
	if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || ret == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
		rc = cmk_fail(CMK_ERR_INVALID, "key_parse: the private key is encrypted; an unencrypted "
			      "PKCS#1, SEC1 or PKCS#8 key is needed");
		goto out;
	}
	if (ret != 0) {
		rc = mbedtls_invalid(ret, "key_parse");
		goto out;
	}
	type = mbedtls_pk_get_type(&key->pk);
	if (type != MBEDTLS_PK_RSA && type != MBEDTLS_PK_ECKEY) {
		rc = cmk_fail(CMK_ERR_INVALID, "key_parse: %s keys are not supported (rsa or ec only)",
			      mbedtls_pk_get_name(&key->pk));
		goto out;
	}
	*out = key;
	key = NULL;
out:
	cmk_key_free(key);
	cmk_freezero(buf, len + 1);
	return rc;
}

/* ---- PEM writing -------------------------------------------------------- */

/*
 * PEM text of `der` under `label`, 64 columns, ending with a newline.
 * The base64 copy is wiped because the DER may be a private key.
 */
static int pem_wrap(const char *label, const unsigned char *der, size_t der_len, char **out, size_t *out_len)
{
	unsigned char *b64 = NULL;
	size_t b64_cap = 0, b64_len = 0, cap, pos, i;
	char *pem = NULL;
	int ret, rc = 0;

	(void)mbedtls_base64_encode(NULL, 0, &b64_cap, der, der_len);
	if ((b64 = malloc(b64_cap + 1)) == NULL)
		return CMK_ERR_NOMEM;
	if ((ret = mbedtls_base64_encode(b64, b64_cap + 1, &b64_len, der, der_len)) != 0) {
		rc = cmk_mbedtls_fail(ret, "pem: base64");
		goto out;
	}
	/* The two armour lines (about 32 bytes around the labels), the body with a newline per line, the NUL. */
	cap = 2 * strlen(label) + 48 + b64_len + (b64_len + 63) / 64;
	if ((pem = malloc(cap)) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	pos = (size_t)snprintf(pem, cap, "-----BEGIN %s-----\n", label);
	for (i = 0; i < b64_len; i += 64) {
		size_t n = b64_len - i < 64 ? b64_len - i : 64;

		memcpy(pem + pos, b64 + i, n);
		pos += n;
		pem[pos++] = '\n';
	}
	pos += (size_t)snprintf(pem + pos, cap - pos, "-----END %s-----\n", label);
	*out = pem;
	if (out_len != NULL)
		*out_len = pos;
out:
	cmk_freezero(b64, b64_cap + 1);
	return rc;
}

int cmk_key_write_pem(const struct cmk_key *key, char **pem, size_t *len)
{
	unsigned char *der;
	int ret, rc = 0;

	*pem = NULL;
	if ((der = malloc(KEY_DER_MAX)) == NULL)
		return CMK_ERR_NOMEM;
	/* mbedTLS writes DER backwards from the end of the buffer and returns its length. */
	ret = mbedtls_pk_write_key_der(cmk_key_pk(key), der, KEY_DER_MAX);
	if (ret < 0) {
		rc = cmk_mbedtls_fail(ret, "key_write_pem");
		goto out;
	}
	rc = pem_wrap(cmk_key_type(key) == CMK_KEY_RSA ? "RSA PRIVATE KEY" : "EC PRIVATE KEY",
		      der + KEY_DER_MAX - ret, (size_t)ret, pem, len);
out:
	cmk_freezero(der, KEY_DER_MAX);
	return rc;
}

int cmk_key_public_sha256(const struct cmk_key *key, uint8_t out[32])
{
	unsigned char der[PUB_DER_MAX];
	int ret;

	ret = mbedtls_pk_write_pubkey_der(cmk_key_pk(key), der, sizeof(der));
	if (ret < 0)
		return cmk_mbedtls_fail(ret, "key_public_sha256");
	cmk_sha256(der + sizeof(der) - ret, (size_t)ret, out);
	return 0;
}

/* ---- certificate requests ----------------------------------------------- */

static bool is_label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/*
 * A name that goes into a dNSName SAN: labels of ASCII letters, digits,
 * '-' and '_' (up to 63 each, none empty), 253 characters in all, with an
 * optional leading "*." wildcard.  Anything else (',', '=', spaces,
 * control or non-ASCII bytes) is refused, so no subject or SAN text can
 * carry more than the one name it claims.
 */
static int check_dns_name(const char *field, const char *name)
{
	const char *start, *p, *dot;
	size_t len, label;

	if (name == NULL || *name == '\0')
		return cmk_fail(CMK_ERR_INVALID, "csr_create: %s is empty", field);
	len = strlen(name);
	if (len > DNS_NAME_MAX)
		return cmk_fail(CMK_ERR_INVALID, "csr_create: %s is %zu characters long, a DNS name has at most %d",
				field, len, DNS_NAME_MAX);
	start = strncmp(name, "*.", 2) == 0 ? name + 2 : name;
	for (p = start; *p != '\0'; p++)
		if (*p != '.' && !is_label_char(*p))
			/* Quote only the part before the bad byte: the rest may be control characters. */
			return cmk_fail(CMK_ERR_INVALID, "csr_create: %s is not a DNS name: character 0x%02x after "
					"\"%.*s\"", field, (unsigned char)*p, (int)(p - name), name);
	for (p = start; ; p = dot + 1) {
		dot = strchr(p, '.');
		label = dot != NULL ? (size_t)(dot - p) : strlen(p);
		if (label == 0 || label > DNS_LABEL_MAX)
			return cmk_fail(CMK_ERR_INVALID, "csr_create: %s \"%s\" has an empty label or one longer than "
					"%d characters", field, name, DNS_LABEL_MAX);
		if (dot == NULL)
			return 0;
	}
}

/*
 * Check every name and collect the SAN list: the CN first, then each of
 * `dns` not seen before (DNS names compare without case).  *names points
 * into the caller's strings; free() it.
 */
static int collect_names(const char *cn, const char *const *dns, size_t n_dns, const char ***names, size_t *n_names)
{
	const char **list;
	size_t i, j, n = 0;
	int rc;

	if ((rc = check_dns_name("common name", cn)) != 0)
		return rc;
	for (i = 0; i < n_dns; i++)
		if ((rc = check_dns_name("alt name", dns[i])) != 0)
			return rc;
	if ((list = calloc(n_dns + 1, sizeof(*list))) == NULL)
		return CMK_ERR_NOMEM;
	list[n++] = cn;
	for (i = 0; i < n_dns; i++) {
		for (j = 0; j < n && strcasecmp(list[j], dns[i]) != 0; j++)
			;
		if (j == n)
			list[n++] = dns[i];
	}
	*names = list;
	*n_names = n;
	return 0;
}

/*
 * The CN is stored as one UTF8String attribute directly, not through
 * mbedtls_x509write_csr_set_subject_name(): that parses "CN=a,O=b" text,
 * so a ',' inside the value would start another RDN.
 */
static int csr_set_subject(mbedtls_x509write_csr *csr, const char *cn)
{
	mbedtls_asn1_named_data *attr;

	attr = mbedtls_asn1_store_named_data(&csr->subject, MBEDTLS_OID_AT_CN, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN),
					     (const unsigned char *)cn, strlen(cn));
	if (attr == NULL)
		return CMK_ERR_NOMEM;
	attr->val.tag = MBEDTLS_ASN1_UTF8_STRING;
	return 0;
}

/* Add an asn1write result to a running length; false on error (ret < 0). */
static bool asn1_add(int ret, size_t *len)
{
	if (ret < 0)
		return false;
	*len += (size_t)ret;
	return true;
}

/* SubjectAltName ::= SEQUENCE OF GeneralName, each a dNSName [2] IA5String. mbedTLS 2.28 has no CSR setter. */
static int csr_set_san(mbedtls_x509write_csr *csr, const char *const *names, size_t n)
{
	unsigned char *buf, *p;
	size_t cap = 8, len = 0, i;
	int ret = 0;

	for (i = 0; i < n; i++)
		cap += strlen(names[i]) + 4;
	if ((buf = malloc(cap)) == NULL)
		return CMK_ERR_NOMEM;
	p = buf + cap;
	/* asn1write fills the buffer from the end, so the names go in reverse to come out in order. */
	for (i = n; i-- > 0;)
		if (!asn1_add(ret = mbedtls_asn1_write_tagged_string(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC |
								      MBEDTLS_X509_SAN_DNS_NAME,
								      names[i], strlen(names[i])), &len))
			goto out;
	if (!asn1_add(ret = mbedtls_asn1_write_len(&p, buf, len), &len) ||
	    !asn1_add(ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE), &len))
		goto out;
	ret = mbedtls_x509write_csr_set_extension(csr, MBEDTLS_OID_SUBJECT_ALT_NAME,
						  MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), p, len);
out:
	free(buf);
	return ret < 0 ? cmk_mbedtls_fail(ret, "csr_create: subject alt names") : 0;
}

/*
 * Ask for what a TLS client certificate needs: digitalSignature (and
 * keyEncipherment for RSA key exchange) and ExtendedKeyUsage clientAuth.
 */
static int csr_set_usage(mbedtls_x509write_csr *csr, enum cmk_key_type type)
{
	unsigned char buf[32], *p = buf + sizeof(buf);
	unsigned char ku = MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
	size_t len = 0;
	int ret;

	if (type == CMK_KEY_RSA)
		ku |= MBEDTLS_X509_KU_KEY_ENCIPHERMENT;
	if ((ret = mbedtls_x509write_csr_set_key_usage(csr, ku)) != 0)
		return cmk_mbedtls_fail(ret, "csr_create: key usage");
	if (!asn1_add(ret = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_CLIENT_AUTH,
						   MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)), &len) ||
	    !asn1_add(ret = mbedtls_asn1_write_len(&p, buf, len), &len) ||
	    !asn1_add(ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE), &len))
		return cmk_mbedtls_fail(ret, "csr_create: extended key usage");
	ret = mbedtls_x509write_csr_set_extension(csr, MBEDTLS_OID_EXTENDED_KEY_USAGE,
						  MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), p, len);
	return ret != 0 ? cmk_mbedtls_fail(ret, "csr_create: extended key usage") : 0;
}

int cmk_csr_create(const struct cmk_key *key, const char *cn, const char *const *dns, size_t n_dns, char **pem)
{
	mbedtls_x509write_csr csr;
	const char **names = NULL;
	unsigned char *der = NULL;
	size_t n_names = 0, cap, i;
	int ret, rc;

	*pem = NULL;
	mbedtls_x509write_csr_init(&csr);
	if ((rc = collect_names(cn, dns, n_dns, &names, &n_names)) != 0 || (rc = cmk_rng_ready()) != 0)
		goto out;
	mbedtls_x509write_csr_set_md_alg(&csr, MBEDTLS_MD_SHA256);
	mbedtls_x509write_csr_set_key(&csr, cmk_key_pk(key));
	if ((rc = csr_set_subject(&csr, cn)) != 0 || (rc = csr_set_san(&csr, names, n_names)) != 0 ||
	    (rc = csr_set_usage(&csr, cmk_key_type(key))) != 0)
		goto out;
	/* Key, signature and fixed fields fit in 4 KB even for RSA-4096; the names come on top. */
	cap = 4096;
	for (i = 0; i < n_names; i++)
		cap += 2 * (strlen(names[i]) + 4);
	if ((der = malloc(cap)) == NULL) {
		rc = CMK_ERR_NOMEM;
		goto out;
	}
	ret = mbedtls_x509write_csr_der(&csr, der, cap, cmk_rng, NULL);
	if (ret < 0) {
		rc = cmk_mbedtls_fail(ret, "csr_create: signing");
		goto out;
	}
	rc = pem_wrap("CERTIFICATE REQUEST", der + cap - ret, (size_t)ret, pem, NULL);
out:
	mbedtls_x509write_csr_free(&csr);
	free(der);
	free(names);
	return rc;
}

/* ---- certificate parsing and checks ------------------------------------- */

/*
 * Parse the next CERTIFICATE block at or after *pos into `chain` (appended)
 * and move *pos past it.  Other PEM blocks (a private key in a bundle) and
 * text between blocks are skipped.  1 when one was parsed, 0 when there
 * are no more, or CMK_ERR_INVALID naming `what` and the block's number.
 */
static int pem_next_cert(const char **pos, mbedtls_x509_crt *chain, const char *what, int index)
{
	mbedtls_pem_context ctx;
	const char *begin = strstr(*pos, PEM_CERT_BEGIN);
	char where[96];
	size_t used = 0;
	int ret;

	if (begin == NULL)
		return 0;
	snprintf(where, sizeof(where), "%s: certificate %d", what, index + 1);
	mbedtls_pem_init(&ctx);
	ret = mbedtls_pem_read_buffer(&ctx, PEM_CERT_BEGIN, PEM_CERT_END, (const unsigned char *)begin, NULL, 0, &used);
	if (ret == 0)
		ret = mbedtls_x509_crt_parse_der(chain, ctx.buf, ctx.buflen);
	mbedtls_pem_free(&ctx);
	if (ret != 0)
		return mbedtls_invalid(ret, where);
	*pos = begin + used;
	return 1;
}

/* The first certificate of a PEM text; CMK_ERR_INVALID when there is none. */
static int parse_first_cert(const char *pem, mbedtls_x509_crt *crt, const char *what)
{
	const char *pos = pem;
	int rc;

	if (pem == NULL)
		return cmk_fail(CMK_ERR_INVALID, "%s: no certificate given", what);
	rc = pem_next_cert(&pos, crt, what, 0);
	if (rc == 0)
		return cmk_fail(CMK_ERR_INVALID, "%s: no PEM certificate in the text", what);
	return rc < 0 ? rc : 0;
}

/* Every certificate of a PEM text, appended to `chain`; the number parsed or CMK_ERR_INVALID. */
static int parse_all_certs(const char *pem, mbedtls_x509_crt *chain, const char *what)
{
	const char *pos = pem;
	int n = 0, rc;

	if (pem == NULL)
		return cmk_fail(CMK_ERR_INVALID, "%s: no PEM text given", what);
	while ((rc = pem_next_cert(&pos, chain, what, n)) > 0)
		n++;
	return rc < 0 ? rc : n;
}

int cmk_pem_cert_count(const char *pem)
{
	mbedtls_x509_crt chain;
	int rc;

	mbedtls_x509_crt_init(&chain);
	rc = parse_all_certs(pem, &chain, "pem_cert_count");
	mbedtls_x509_crt_free(&chain);
	return rc;
}

/* mbedTLS dates are UTC calendar fields; timegm() reads them as UTC whatever TZ says. */
int64_t cmk_x509_time_unix(const mbedtls_x509_time *t)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = t->year - 1900;
	tm.tm_mon = t->mon - 1;
	tm.tm_mday = t->day;
	tm.tm_hour = t->hour;
	tm.tm_min = t->min;
	tm.tm_sec = t->sec;
	return (int64_t)timegm(&tm);
}

/* OpenBao's form: lowercase hex octets joined by ':', leading zero octets dropped (big.Int.Bytes()). */
static int format_serial(const mbedtls_x509_buf *serial, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = serial->p;
	size_t n = serial->len, pos = 0, i;

	while (n > 1 && *p == 0) {
		p++;
		n--;
	}
	if (n == 0 || 3 * n > cap)
		return cmk_fail(CMK_ERR_INVALID, "cert_parse: serial number of %zu octets is empty or too long", n);
	for (i = 0; i < n; i++) {
		if (i > 0)
			out[pos++] = ':';
		out[pos++] = hex[p[i] >> 4];
		out[pos++] = hex[p[i] & 0x0f];
	}
	out[pos] = '\0';
	return 0;
}

static void cert_fingerprint(const mbedtls_x509_crt *crt, char out[CMK_FPR_LEN + 1])
{
	uint8_t digest[32];

	cmk_sha256(crt->raw.p, crt->raw.len, digest);
	cmk_hex(digest, sizeof(digest), out);
}

static int cert_key_info(const mbedtls_x509_crt *crt, struct cmk_cert_info *info)
{
	switch (mbedtls_pk_get_type(&crt->pk)) {
	case MBEDTLS_PK_RSA:
		info->key_type = CMK_KEY_RSA;
		break;
	case MBEDTLS_PK_ECKEY:
	case MBEDTLS_PK_ECKEY_DH:
	case MBEDTLS_PK_ECDSA:
		info->key_type = CMK_KEY_EC;
		break;
	default:
		return cmk_fail(CMK_ERR_INVALID, "cert_parse: %s public keys are not supported (rsa or ec only)",
				mbedtls_pk_get_name(&crt->pk));
	}
	info->key_bits = (int)mbedtls_pk_get_bitlen(&crt->pk);
	return 0;
}

/* Copy the dNSName entries of the SAN extension (other name types are not ours to report). */
static int cert_dns_names(const mbedtls_x509_crt *crt, struct cmk_cert_info *info)
{
	const mbedtls_x509_sequence *san;
	size_t n = 0;

	for (san = &crt->subject_alt_names; san != NULL && san->buf.p != NULL; san = san->next)
		if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME))
			n++;
	if (n == 0)
		return 0;
	if ((info->dns_names = calloc(n, sizeof(*info->dns_names))) == NULL)
		return CMK_ERR_NOMEM;
	for (san = &crt->subject_alt_names; san != NULL && san->buf.p != NULL; san = san->next) {
		if (san->buf.tag != (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME))
			continue;
		/* "good.example\0.evil" must not read as "good.example". */
		if (memchr(san->buf.p, '\0', san->buf.len) != NULL)
			return cmk_fail(CMK_ERR_INVALID, "cert_parse: a DNS name in the certificate contains a NUL byte");
		if ((info->dns_names[info->n_dns_names] = strndup((const char *)san->buf.p, san->buf.len)) == NULL)
			return CMK_ERR_NOMEM;
		info->n_dns_names++;
	}
	return 0;
}

static int cert_info_fill(const mbedtls_x509_crt *crt, struct cmk_cert_info *info)
{
	int rc;

	if ((rc = format_serial(&crt->serial, info->serial, sizeof(info->serial))) != 0)
		return rc;
	cert_fingerprint(crt, info->fingerprint);
	if (mbedtls_x509_dn_gets(info->subject, sizeof(info->subject), &crt->subject) < 0)
		return cmk_fail(CMK_ERR_INVALID, "cert_parse: subject is longer than %zu characters",
				sizeof(info->subject) - 1);
	if (mbedtls_x509_dn_gets(info->issuer, sizeof(info->issuer), &crt->issuer) < 0)
		return cmk_fail(CMK_ERR_INVALID, "cert_parse: issuer is longer than %zu characters",
				sizeof(info->issuer) - 1);
	info->not_before = cmk_x509_time_unix(&crt->valid_from);
	info->not_after = cmk_x509_time_unix(&crt->valid_to);
	if ((rc = cert_key_info(crt, info)) != 0)
		return rc;
	/* 0 also when the certificate has no EKU extension at all: then every usage is allowed. */
	info->client_auth = mbedtls_x509_crt_check_extended_key_usage(crt, MBEDTLS_OID_CLIENT_AUTH,
								      MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) == 0;
	return cert_dns_names(crt, info);
}

int cmk_cert_parse(const char *pem, struct cmk_cert_info *out)
{
	mbedtls_x509_crt crt;
	int rc;

	memset(out, 0, sizeof(*out));
	mbedtls_x509_crt_init(&crt);
	if ((rc = parse_first_cert(pem, &crt, "cert_parse")) == 0)
		rc = cert_info_fill(&crt, out);
	if (rc != 0)
		cmk_cert_info_clear(out);
	mbedtls_x509_crt_free(&crt);
	return rc;
}

void cmk_cert_info_clear(struct cmk_cert_info *info)
{
	size_t i;

	if (info == NULL)
		return;
	for (i = 0; i < info->n_dns_names; i++)
		free(info->dns_names[i]);
	free(info->dns_names);
	memset(info, 0, sizeof(*info));
}

int cmk_cert_fingerprint(const char *pem, char out[CMK_FPR_LEN + 1])
{
	mbedtls_x509_crt crt;
	int rc;

	mbedtls_x509_crt_init(&crt);
	if ((rc = parse_first_cert(pem, &crt, "cert_fingerprint")) == 0)
		cert_fingerprint(&crt, out);
	mbedtls_x509_crt_free(&crt);
	return rc;
}

int cmk_cert_matches_key(const char *cert_pem, const struct cmk_key *key)
{
	mbedtls_x509_crt crt;
	int ret, rc;

	mbedtls_x509_crt_init(&crt);
	if ((rc = parse_first_cert(cert_pem, &crt, "cert_matches_key")) != 0)
		goto out;
	ret = mbedtls_pk_check_pair(&crt.pk, &key->pk);
	if (ret != 0 && is_alloc_failure(ret))
		rc = CMK_ERR_NOMEM;
	else if (ret != 0)
		rc = cmk_fail(CMK_ERR_VERIFY, "cert_matches_key: the certificate's public key (%s, %d bits) is not "
			      "the private key's (%s, %d bits)", mbedtls_pk_get_name(&crt.pk),
			      (int)mbedtls_pk_get_bitlen(&crt.pk), mbedtls_pk_get_name(&key->pk), cmk_key_bits(key));
out:
	mbedtls_x509_crt_free(&crt);
	return rc;
}

int cmk_cert_has_public_key(const char *cert_pem, const struct cmk_key *key)
{
	unsigned char a[PUB_DER_MAX], b[PUB_DER_MAX];
	mbedtls_x509_crt crt;
	int la, lb, rc;

	mbedtls_x509_crt_init(&crt);
	if ((rc = parse_first_cert(cert_pem, &crt, "cert_has_public_key")) != 0)
		goto out;
	la = mbedtls_pk_write_pubkey_der(&crt.pk, a, sizeof(a));
	lb = mbedtls_pk_write_pubkey_der(cmk_key_pk(key), b, sizeof(b));
	if (la < 0 || lb < 0)
		rc = cmk_mbedtls_fail(la < 0 ? la : lb, "cert_has_public_key");
	else if (la != lb || memcmp(a + sizeof(a) - la, b + sizeof(b) - lb, (size_t)la) != 0)
		rc = cmk_fail(CMK_ERR_VERIFY, "cert_matches_key: the certificate's public key (%s, %d bits) is not "
			      "the private key's (%s, %d bits)", mbedtls_pk_get_name(&crt.pk),
			      (int)mbedtls_pk_get_bitlen(&crt.pk), mbedtls_pk_get_name(cmk_key_pk(key)), cmk_key_bits(key));
out:
	mbedtls_x509_crt_free(&crt);
	return rc;
}

bool cmk_x509_is_self_signed(const mbedtls_x509_crt *crt)
{
	return crt->subject_raw.len == crt->issuer_raw.len &&
	       memcmp(crt->subject_raw.p, crt->issuer_raw.p, crt->subject_raw.len) == 0;
}

/* "leaf certificate" or `CA certificate "CN=..."`, for messages. */
static void cert_label(const mbedtls_x509_crt *crt, bool leaf, char *buf, size_t len)
{
	char dn[256];

	if (leaf) {
		snprintf(buf, len, "leaf certificate");
		return;
	}
	if (mbedtls_x509_dn_gets(dn, sizeof(dn), &crt->subject) < 0)
		snprintf(dn, sizeof(dn), "(long subject)");
	snprintf(buf, len, "CA certificate \"%s\"", dn);
}

/* Our own validity check, so the detail says which certificate and when. */
static int check_validity(const mbedtls_x509_crt *crt, bool leaf, int64_t now)
{
	int64_t from = cmk_x509_time_unix(&crt->valid_from), to = cmk_x509_time_unix(&crt->valid_to);
	char label[320], when[32];

	if (now >= from && now <= to)
		return 0;
	cert_label(crt, leaf, label, sizeof(label));
	if (now > to) {
		cmk_format_time(to, when, sizeof(when));
		return cmk_fail(CMK_ERR_VERIFY, "verify_chain: %s has expired (not after %s)", label, when);
	}
	cmk_format_time(from, when, sizeof(when));
	return cmk_fail(CMK_ERR_VERIFY, "verify_chain: %s is not yet valid (not before %s)", label, when);
}

/* Detail for mbedtls_x509_crt_verify() flags left once the dates are known to be good. */
static int verify_failure(uint32_t flags)
{
	char info[512], *nl;

	if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
		return cmk_fail(CMK_ERR_VERIFY, "verify_chain: the leaf certificate is not trusted: it does not chain "
				"to the self-signed root of the CA chain (wrong CA or a missing intermediate)");
	if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags) < 0)
		snprintf(info, sizeof(info), "flags 0x%08x", (unsigned)flags);
	while ((nl = strchr(info, '\n')) != NULL)
		*nl = nl[1] != '\0' ? ';' : '\0';
	return cmk_fail(CMK_ERR_VERIFY, "verify_chain: %s", info);
}

/*
 * Split the CA chain: self-signed certificates become trust anchors in
 * `roots`, the others are appended after the leaf in `presented`, which is
 * the order mbedtls_x509_crt_verify() walks.
 */
static int split_chain(const mbedtls_x509_crt *cas, mbedtls_x509_crt *presented, mbedtls_x509_crt *roots)
{
	const mbedtls_x509_crt *c;
	int ret;

	for (c = cas; c != NULL && c->raw.p != NULL; c = c->next) {
		ret = mbedtls_x509_crt_parse_der(cmk_x509_is_self_signed(c) ? roots : presented, c->raw.p, c->raw.len);
		if (ret != 0)
			return cmk_mbedtls_fail(ret, "verify_chain");
	}
	if (roots->raw.p == NULL)
		return cmk_fail(CMK_ERR_VERIFY, "verify_chain: the CA chain has no self-signed root to trust");
	return 0;
}

/*
 * Verify `leaf_pem` against `chain_pem` (issuing CA first).  `whole`: up to
 * a self-signed root of the chain; else only that the issuing CA signed the
 * leaf (it is taken as the trust anchor).  Every certificate's dates are
 * checked either way.
 */
static int verify_chain(const char *leaf_pem, const char *chain_pem, bool whole)
{
	mbedtls_x509_crt presented, cas, roots;
	const mbedtls_x509_crt *c;
	int64_t now = cmk_now();
	uint32_t flags = 0;
	int ret, rc;

	mbedtls_x509_crt_init(&presented);
	mbedtls_x509_crt_init(&cas);
	mbedtls_x509_crt_init(&roots);
	if ((rc = parse_first_cert(leaf_pem, &presented, "verify_chain: leaf")) != 0)
		goto out;
	if ((rc = parse_all_certs(chain_pem, &cas, "verify_chain: CA chain")) < 0)
		goto out;
	if (rc == 0) {
		rc = cmk_fail(CMK_ERR_VERIFY, "verify_chain: the CA chain holds no certificate");
		goto out;
	}
	if (whole) {
		if ((rc = split_chain(&cas, &presented, &roots)) != 0)
			goto out;
	} else {
		if ((ret = mbedtls_x509_crt_parse_der(&roots, cas.raw.p, cas.raw.len)) != 0) {
			rc = cmk_mbedtls_fail(ret, "verify_chain");
			goto out;
		}
		for (c = cas.next; c != NULL && c->raw.p != NULL; c = c->next)
			if ((rc = check_validity(c, false, now)) != 0)
				goto out;
	}
	for (c = &presented; c != NULL; c = c->next)
		if ((rc = check_validity(c, c == &presented, now)) != 0)
			goto out;
	for (c = &roots; c != NULL; c = c->next)
		if ((rc = check_validity(c, false, now)) != 0)
			goto out;
	ret = mbedtls_x509_crt_verify(&presented, &roots, NULL, NULL, &flags, NULL, NULL);
	if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)
		rc = verify_failure(flags);
	else if (ret != 0)
		rc = cmk_mbedtls_fail(ret, "verify_chain");
out:
	mbedtls_x509_crt_free(&presented);
	mbedtls_x509_crt_free(&cas);
	mbedtls_x509_crt_free(&roots);
	return rc;
}

int cmk_cert_verify_chain(const char *leaf_pem, const char *chain_pem)
{
	return verify_chain(leaf_pem, chain_pem, true);
}

int cmk_cert_verify_issued_by(const char *leaf_pem, const char *chain_pem)
{
	return verify_chain(leaf_pem, chain_pem, false);
}

/* ---- primitives --------------------------------------------------------- */

void cmk_sha256(const void *data, size_t len, uint8_t out[32])
{
	/* Only fails for NULL arguments, which the signature rules out. */
	(void)mbedtls_sha256_ret(data, len, out, 0);
}

bool cmk_memeq(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t diff = 0;

	for (size_t i = 0; i < n; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

void cmk_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len, uint8_t out[32])
{
	/* Fails only for a missing digest or bad arguments, neither possible here. */
	(void)mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, key_len, data, len, out);
}

void cmk_hex(const uint8_t *in, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

int cmk_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
		    const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
	int ret;

	if (out_len == 0 || out_len > 255 * 32)
		return cmk_fail(CMK_ERR_INVALID, "hkdf: output length %zu is outside 1..%d", out_len, 255 * 32);
	ret = mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), salt, salt_len, ikm, ikm_len, info, info_len,
			   out, out_len);
	if (ret != 0) {
		cmk_wipe(out, out_len);
		return cmk_mbedtls_fail(ret, "hkdf");
	}
	return 0;
}

int cmk_aead_seal(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
		  const uint8_t *pt, size_t pt_len, uint8_t *ct_and_tag)
{
	mbedtls_gcm_context gcm;
	int ret;

	mbedtls_gcm_init(&gcm);
	ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
	if (ret == 0)
		ret = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, pt_len, nonce, GCM_NONCE_LEN, aad, aad_len,
						pt, ct_and_tag, GCM_TAG_LEN, ct_and_tag + pt_len);
	mbedtls_gcm_free(&gcm);
	return ret != 0 ? cmk_mbedtls_fail(ret, "aead_seal") : 0;
}

int cmk_aead_open(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
		  const uint8_t *ct_and_tag, size_t ct_len_with_tag, uint8_t *pt)
{
	mbedtls_gcm_context gcm;
	size_t len;
	int ret;

	if (ct_len_with_tag < GCM_TAG_LEN)
		return cmk_fail(CMK_ERR_INVALID, "aead_open: %zu bytes is shorter than the %d-byte tag",
				ct_len_with_tag, GCM_TAG_LEN);
	len = ct_len_with_tag - GCM_TAG_LEN;
	mbedtls_gcm_init(&gcm);
	ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
	if (ret == 0)
		ret = mbedtls_gcm_auth_decrypt(&gcm, len, nonce, GCM_NONCE_LEN, aad, aad_len, ct_and_tag + len,
					       GCM_TAG_LEN, ct_and_tag, pt);
	mbedtls_gcm_free(&gcm);
	if (ret == 0)
		return 0;
	cmk_wipe(pt, len);
	if (ret == MBEDTLS_ERR_GCM_AUTH_FAILED)
		return cmk_fail(CMK_ERR_VERIFY, "aead_open: authentication failed (wrong key or associated data, "
				"or the ciphertext was altered)");
	return cmk_mbedtls_fail(ret, "aead_open");
}

int cmk_base64_encode(const uint8_t *in, size_t len, char **out)
{
	size_t need = 0, olen = 0;
	char *buf;
	int ret;

	*out = NULL;
	(void)mbedtls_base64_encode(NULL, 0, &need, in, len);
	if (need == (size_t)-1)
		return cmk_fail(CMK_ERR_INVALID, "base64_encode: %zu bytes is too large", len);
	if ((buf = malloc(need + 1)) == NULL)
		return CMK_ERR_NOMEM;
	if ((ret = mbedtls_base64_encode((unsigned char *)buf, need + 1, &olen, in, len)) != 0) {
		free(buf);
		return cmk_mbedtls_fail(ret, "base64_encode");
	}
	buf[olen] = '\0';
	*out = buf;
	return 0;
}

int cmk_base64_decode(const char *in, size_t len, uint8_t **out, size_t *outlen)
{
	size_t need = 0, olen = 0;
	uint8_t *buf;
	int ret;

	*out = NULL;
	*outlen = 0;
	ret = mbedtls_base64_decode(NULL, 0, &need, (const unsigned char *)in, len);
	if (ret == MBEDTLS_ERR_BASE64_INVALID_CHARACTER)
		return cmk_fail(CMK_ERR_INVALID, "base64_decode: not valid base64 (bad character or padding)");
	/* The decoded bytes may be a key: allocate one extra for a NUL and wipe on every failure. */
	if ((buf = malloc(need + 1)) == NULL)
		return CMK_ERR_NOMEM;
	ret = mbedtls_base64_decode(buf, need + 1, &olen, (const unsigned char *)in, len);
	if (ret != 0) {
		cmk_freezero(buf, need + 1);
		return ret == MBEDTLS_ERR_BASE64_INVALID_CHARACTER
			? cmk_fail(CMK_ERR_INVALID, "base64_decode: not valid base64 (bad character or padding)")
			: cmk_mbedtls_fail(ret, "base64_decode");
	}
	buf[olen] = '\0';
	*out = buf;
	*outlen = olen;
	return 0;
}
