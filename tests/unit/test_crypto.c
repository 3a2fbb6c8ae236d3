/*
 * test_crypto.c - the crypto backend against an independent implementation:
 * keys, CSRs and certificates are checked with the openssl command line,
 * primitives against published test vectors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/util.h"

/* The serial given to openssl (a leading zero octet, as DER needs before 0xab) and how OpenBao prints it. */
#define LEAF_SERIAL_HEX "0x00ab0102030405060708090a0b0c0d0e0f101112"
#define LEAF_SERIAL "ab:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12"
#define LEAF_CN "tenant-acme-thales.keystore.internal"
#define LEAF_ALT "tenant-acme.internal"

static char dir[64];
static struct cmk_key *leaf_key;    /* EC P-256, the key of leaf.crt, expired.crt and future.crt */

/* ---- helpers ------------------------------------------------------------ */

static const char *at(const char *name)
{
	static char buf[4][256];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
	return p;
}

/* Run a shell command in the test directory; its output goes to cmd.log. Returns the exit status. */
static int __attribute__((format(printf, 1, 2))) run_status(const char *fmt, ...)
{
	char cmd[4096], full[4400];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && ( %s ) >cmd.log 2>&1", dir, cmd);
	st = system(full);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void __attribute__((format(printf, 1, 2))) run(const char *fmt, ...)
{
	char cmd[4096], log[4200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (run_status("%s", cmd) != 0) {
		snprintf(log, sizeof(log), "cat '%s/cmd.log' >&2", dir);
		print_error("command failed: %s\n", cmd);
		if (system(log) != 0)
			print_error("(no log)\n");
		fail();
	}
}

static char *slurp(const char *name)
{
	char *text = NULL;

	assert_ok(cmk_read_file(at(name), 1 << 20, &text, NULL));
	return text;
}

static void spit(const char *name, const char *text)
{
	assert_ok(cmk_write_file_atomic(at(name), text, strlen(text), 0600));
}

static void write_csr(const char *name, const struct cmk_key *key, const char *cn, const char *const *dns, size_t n)
{
	char *pem = NULL;

	assert_ok(cmk_csr_create(key, cn, dns, n, &pem));
	spit(name, pem);
	free(pem);
}

/* "notBefore=2025-01-02 03:04:05Z" as printed by openssl x509 -dateopt iso_8601. */
static int64_t openssl_date(const char *text, const char *field)
{
	const char *p = strstr(text, field);
	struct tm tm;

	assert_non_null(p);
	memset(&tm, 0, sizeof(tm));
	assert_int_equal(sscanf(p + strlen(field), "=%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
				&tm.tm_hour, &tm.tm_min, &tm.tm_sec), 6);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

static bool has(const char *text, const char *needle)
{
	if (strstr(text, needle) != NULL)
		return true;
	print_error("expected \"%s\" in:\n%s\n", needle, text);
	return false;
}

/* ---- fixtures: a root, an issuing CA, another root, leaf certificates ---- */

static const char req_cnf[] =
	"[req]\ndistinguished_name = dn\n[dn]\n"
	"[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
	"subjectKeyIdentifier = hash\n"
	"[server_only]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
	"subjectAltName = DNS:server.example\n";

static void make_ca_cnf(void)
{
	char cnf[1024];

	snprintf(cnf, sizeof(cnf),
		 "[ca]\ndefault_ca = test_ca\n"
		 "[test_ca]\ndatabase = %s/index.txt\nnew_certs_dir = %s/newcerts\nserial = %s/serial\n"
		 "default_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n"
		 "[any]\ncommonName = supplied\n", dir, dir, dir);
	spit("ca.cnf", cnf);
	spit("index.txt", "");
	spit("serial", "1000\n");
	assert_int_equal(mkdir(at("newcerts"), 0700), 0);
}

static int setup(void **state)
{
	const char *alts[] = { LEAF_ALT };

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_crypto.XXXXXX");
	assert_non_null(mkdtemp(dir));
	spit("req.cnf", req_cnf);
	make_ca_cnf();
	run("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key "
	    "-out root.crt -subj '/CN=cmkcert test root' -days 3650 -set_serial 1 -config req.cnf -extensions v3_ca");
	run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout int.key -out int.csr "
	    "-subj '/CN=cmkcert test issuing CA' -config req.cnf");
	run("openssl x509 -req -in int.csr -CA root.crt -CAkey root.key -set_serial 2 -days 3650 "
	    "-extfile req.cnf -extensions v3_ca -out int.crt");
	run("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key "
	    "-out other.crt -subj '/CN=cmkcert other root' -days 3650 -config req.cnf -extensions v3_ca");
	run("cat int.crt root.crt > chain.pem");

	/* The leaf: key and CSR from the code under test, signed by openssl. */
	assert_ok(cmk_key_generate(CMK_KEY_EC, 256, &leaf_key));
	write_csr("leaf.csr", leaf_key, LEAF_CN, alts, 1);
	run("openssl x509 -req -in leaf.csr -CA int.crt -CAkey int.key -set_serial " LEAF_SERIAL_HEX
	    " -days 30 -copy_extensions copy -out leaf.crt");
	/* Exact dates need openssl ca. */
	run("openssl ca -batch -notext -config ca.cnf -cert int.crt -keyfile int.key -in leaf.csr -out expired.crt "
	    "-startdate 20200101000000Z -enddate 20210101000000Z");
	run("openssl ca -batch -notext -config ca.cnf -cert int.crt -keyfile int.key -in leaf.csr -out future.crt "
	    "-startdate 20991231000000Z -enddate 21000101120000Z");
	run("openssl x509 -req -in leaf.csr -CA int.crt -CAkey int.key -set_serial 0x0100 -days 30 "
	    "-extfile req.cnf -extensions server_only -out server.crt");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	cmk_key_free(leaf_key);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- keys --------------------------------------------------------------- */

/* Generate, check with openssl, write, parse back and write again: the same PEM. */
static void check_generated(enum cmk_key_type type, int bits)
{
	struct cmk_key *key = NULL, *again = NULL;
	char *pem = NULL, *pem2 = NULL;
	size_t len = 0, len2 = 0;

	assert_ok(cmk_key_generate(type, bits, &key));
	assert_int_equal(cmk_key_type(key), type);
	assert_int_equal(cmk_key_bits(key), bits);
	assert_ok(cmk_key_write_pem(key, &pem, &len));
	assert_true(has(pem, type == CMK_KEY_RSA ? "-----BEGIN RSA PRIVATE KEY-----\n" : "-----BEGIN EC PRIVATE KEY-----\n"));
	spit("gen.key", pem);
	run("openssl pkey -in gen.key -check -noout");
	if (type == CMK_KEY_RSA)
		run("openssl rsa -in gen.key -noout -text | grep -q 'publicExponent: 65537'");
	else
		run("openssl ec -in gen.key -noout -text | grep -q 'NIST CURVE: P-%d'", bits);
	assert_ok(cmk_key_parse_pem(pem, len, &again));
	assert_ok(cmk_key_write_pem(again, &pem2, &len2));
	assert_string_equal(pem, pem2);
	cmk_freezero(pem, len + 1);
	cmk_freezero(pem2, len2 + 1);
	cmk_key_free(key);
	cmk_key_free(again);
}

static void test_key_generate_sizes(void **state)
{
	(void)state;
	check_generated(CMK_KEY_RSA, 2048);
	check_generated(CMK_KEY_RSA, 3072);
	check_generated(CMK_KEY_EC, 256);
	check_generated(CMK_KEY_EC, 384);
}

static void test_key_generate_rsa4096(void **state)
{
	(void)state;
	check_generated(CMK_KEY_RSA, 4096);
}

static void test_key_generate_refuses_other_sizes(void **state)
{
	struct { enum cmk_key_type type; int bits; const char *text; } bad[] = {
		{ CMK_KEY_RSA, 1024, "1024" }, { CMK_KEY_RSA, 2047, "2047" }, { CMK_KEY_RSA, 8192, "8192" },
		{ CMK_KEY_EC, 521, "521" }, { CMK_KEY_EC, 2048, "2048" }, { (enum cmk_key_type)7, 256, "type" },
	};
	struct cmk_key *key = (struct cmk_key *)1;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cmk_key_generate(bad[i].type, bad[i].bits, &key), CMK_ERR_INVALID);
		assert_null(key);
		assert_true(has(cmk_errdetail(), bad[i].text));
	}
}

/* openssl's PKCS#1/SEC1 text and its PKCS#8 form of the same key parse to the same key, written as openssl would. */
static void check_parse_pair(const char *traditional, const char *pkcs8)
{
	struct cmk_key *a = NULL, *b = NULL;
	char *ta = slurp(traditional), *tb = slurp(pkcs8), *pa = NULL, *pb = NULL;
	size_t la = 0, lb = 0;

	assert_true(has(tb, "-----BEGIN PRIVATE KEY-----"));
	assert_ok(cmk_key_parse_pem(ta, strlen(ta), &a));
	assert_ok(cmk_key_parse_pem(tb, strlen(tb), &b));
	assert_ok(cmk_key_write_pem(a, &pa, &la));
	assert_ok(cmk_key_write_pem(b, &pb, &lb));
	assert_string_equal(pa, pb);
	assert_string_equal(pa, ta);
	cmk_freezero(ta, strlen(ta));
	cmk_freezero(tb, strlen(tb));
	cmk_freezero(pa, la + 1);
	cmk_freezero(pb, lb + 1);
	cmk_key_free(a);
	cmk_key_free(b);
}

static void test_key_parse_formats(void **state)
{
	struct cmk_key *key = NULL;
	char *text;

	(void)state;
	run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa8.key");
	run("openssl rsa -in rsa8.key -traditional -out rsa1.key");
	check_parse_pair("rsa1.key", "rsa8.key");
	run("openssl ecparam -name secp384r1 -genkey -noout -out ec1.key");
	run("openssl pkcs8 -topk8 -nocrypt -in ec1.key -out ec8.key");
	check_parse_pair("ec1.key", "ec8.key");

	/* The text need not be NUL-terminated at `len`. */
	text = slurp("ec1.key");
	text[strlen(text) - 1] = 'X';
	assert_ok(cmk_key_parse_pem(text, strlen(text) - 1, &key));
	assert_int_equal(cmk_key_type(key), CMK_KEY_EC);
	assert_int_equal(cmk_key_bits(key), 384);
	cmk_key_free(key);
	cmk_strfreezero(text);
}

static void test_key_parse_refuses_encrypted(void **state)
{
	const char *files[] = { "enc8.key", "enc1.key" };
	struct cmk_key *key = NULL;
	size_t i;

	(void)state;
	run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:secret -out enc8.key");
	run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out plain.key && "
	    "openssl rsa -in plain.key -traditional -aes256 -passout pass:secret -out enc1.key");
	for (i = 0; i < 2; i++) {
		char *text = slurp(files[i]);

		assert_int_equal(cmk_key_parse_pem(text, strlen(text), &key), CMK_ERR_INVALID);
		assert_null(key);
		assert_true(has(cmk_errdetail(), "encrypted"));
		free(text);
	}
}

static void test_key_parse_refuses_garbage(void **state)
{
	static const char bad_b64[] = "-----BEGIN EC PRIVATE KEY-----\n!!!!\n-----END EC PRIVATE KEY-----\n";
	struct cmk_key *key = NULL;
	char *cert = slurp("root.crt");

	(void)state;
	assert_int_equal(cmk_key_parse_pem("hello", 5, &key), CMK_ERR_INVALID);
	assert_int_equal(cmk_key_parse_pem(bad_b64, strlen(bad_b64), &key), CMK_ERR_INVALID);
	assert_int_equal(cmk_key_parse_pem(cert, strlen(cert), &key), CMK_ERR_INVALID);
	assert_int_equal(cmk_key_parse_pem("", 0, &key), CMK_ERR_INVALID);
	assert_null(key);
	free(cert);
}

/* ---- certificate requests ----------------------------------------------- */

static void test_csr_verified_by_openssl(void **state)
{
	/* Duplicates of the CN (any case) and of each other are dropped; the CN comes first. */
	const char *alts[] = { "tenant-acme.internal", "TENANT-ACME-THALES.keystore.internal", "*.acme.example",
			       "tenant-acme.internal" };
	struct cmk_key *rsa = NULL;
	char *text;

	(void)state;
	write_csr("ec.csr", leaf_key, LEAF_CN, alts, 4);
	run("openssl req -in ec.csr -verify -noout -text > ec.txt");
	text = slurp("ec.txt");
	assert_true(has(text, "Subject: CN = " LEAF_CN "\n"));
	assert_true(has(text, "DNS:" LEAF_CN ", DNS:tenant-acme.internal, DNS:*.acme.example\n"));
	assert_true(has(text, "TLS Web Client Authentication"));
	assert_true(has(text, "Digital Signature\n"));
	assert_true(has(text, "ecdsa-with-SHA256"));
	assert_null(strstr(text, "Key Encipherment"));
	free(text);

	assert_ok(cmk_key_generate(CMK_KEY_RSA, 2048, &rsa));
	write_csr("rsa.csr", rsa, "solo.example", NULL, 0);
	run("openssl req -in rsa.csr -verify -noout -text > rsa.txt");
	text = slurp("rsa.txt");
	assert_true(has(text, "Subject: CN = solo.example\n"));
	assert_true(has(text, "DNS:solo.example\n"));
	assert_true(has(text, "Digital Signature, Key Encipherment"));
	assert_true(has(text, "sha256WithRSAEncryption"));
	free(text);
	cmk_key_free(rsa);
}

static void test_csr_refuses_names_that_are_not_dns_names(void **state)
{
	const char *bad_cn[] = { "a,O=evil", "CN=x", "x=y", "", "a b", "bad\nname", "a..b", ".a", "a.", "é.example",
				 "a@b.example" };
	const char *ok[] = { "fine.example" };
	char longname[300], longlabel[80];
	const char *bad_alt[2] = { "fine.example", "x,DNS:evil.example" };
	char *pem = NULL;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_cn) / sizeof(bad_cn[0]); i++) {
		assert_int_equal(cmk_csr_create(leaf_key, bad_cn[i], ok, 1, &pem), CMK_ERR_INVALID);
		assert_null(pem);
		assert_true(has(cmk_errdetail(), "common name"));
	}
	assert_int_equal(cmk_csr_create(leaf_key, NULL, NULL, 0, &pem), CMK_ERR_INVALID);
	memset(longname, 'a', sizeof(longname));
	for (i = 60; i < 254; i += 61)
		longname[i] = '.';
	longname[254] = '\0';
	assert_int_equal(cmk_csr_create(leaf_key, longname, NULL, 0, &pem), CMK_ERR_INVALID);
	assert_true(has(cmk_errdetail(), "254"));
	longname[253] = '\0';
	assert_ok(cmk_csr_create(leaf_key, longname, NULL, 0, &pem));
	free(pem);
	pem = NULL;
	memset(longlabel, 'b', 64);
	strcpy(longlabel + 64, ".example");
	assert_int_equal(cmk_csr_create(leaf_key, longlabel, NULL, 0, &pem), CMK_ERR_INVALID);
	assert_int_equal(cmk_csr_create(leaf_key, "fine.example", bad_alt, 2, &pem), CMK_ERR_INVALID);
	assert_true(has(cmk_errdetail(), "alt name"));
	assert_null(pem);
}

/* ---- certificates ------------------------------------------------------- */

static void test_cert_parse_fields(void **state)
{
	struct cmk_cert_info info;
	char *pem = slurp("leaf.crt"), *text, *p, expect[CMK_FPR_LEN + 1];
	size_t n = 0;

	(void)state;
	assert_ok(cmk_cert_parse(pem, &info));
	assert_string_equal(info.serial, LEAF_SERIAL);
	assert_string_equal(info.subject, "CN=" LEAF_CN);
	assert_string_equal(info.issuer, "CN=cmkcert test issuing CA");
	assert_int_equal(info.key_type, CMK_KEY_EC);
	assert_int_equal(info.key_bits, 256);
	assert_true(info.client_auth);
	assert_int_equal(info.n_dns_names, 2);
	assert_string_equal(info.dns_names[0], LEAF_CN);
	assert_string_equal(info.dns_names[1], LEAF_ALT);

	run("openssl x509 -in leaf.crt -noout -fingerprint -sha256 > fpr.txt");
	text = slurp("fpr.txt");
	for (p = strchr(text, '=') + 1; *p != '\0' && *p != '\n'; p++)
		if (*p != ':')
			expect[n++] = (char)tolower((unsigned char)*p);
	expect[n] = '\0';
	assert_string_equal(info.fingerprint, expect);
	free(text);

	run("openssl x509 -in leaf.crt -noout -startdate -enddate -dateopt iso_8601 > dates.txt");
	text = slurp("dates.txt");
	assert_int_equal(info.not_before, openssl_date(text, "notBefore"));
	assert_int_equal(info.not_after, openssl_date(text, "notAfter"));
	assert_int_equal(info.not_after - info.not_before, 30 * 86400);
	assert_true(info.not_before <= cmk_now() && info.not_before > cmk_now() - 3600);
	free(text);

	memset(expect, 0, sizeof(expect));
	assert_ok(cmk_cert_fingerprint(pem, expect));
	assert_string_equal(expect, info.fingerprint);
	cmk_cert_info_clear(&info);
	assert_null(info.dns_names);
	assert_int_equal(info.n_dns_names, 0);
	free(pem);
}

/* Dates are UTC in the certificate and must not move with the local time zone. */
static void test_cert_parse_known_dates_in_any_time_zone(void **state)
{
	const char *zones[] = { "CMK-5", "CMK+9", "UTC0" };
	char *old = cmk_strdup(getenv("TZ"));
	char *pem = slurp("expired.crt");
	struct cmk_cert_info info;
	size_t i;

	(void)state;
	for (i = 0; i < 3; i++) {
		setenv("TZ", zones[i], 1);
		tzset();
		assert_ok(cmk_cert_parse(pem, &info));
		assert_int_equal(info.not_before, 1577836800);   /* 2020-01-01T00:00:00Z */
		assert_int_equal(info.not_after, 1609459200);    /* 2021-01-01T00:00:00Z */
		assert_string_equal(info.serial, "10:00");
		cmk_cert_info_clear(&info);
	}
	if (old != NULL)
		setenv("TZ", old, 1);
	else
		unsetenv("TZ");
	tzset();
	free(old);
	free(pem);
}

static void test_cert_parse_server_only_eku(void **state)
{
	char *pem = slurp("server.crt");
	struct cmk_cert_info info;

	(void)state;
	assert_ok(cmk_cert_parse(pem, &info));
	assert_false(info.client_auth);
	assert_string_equal(info.serial, "01:00");
	assert_int_equal(info.n_dns_names, 1);
	assert_string_equal(info.dns_names[0], "server.example");
	cmk_cert_info_clear(&info);
	free(pem);

	/* A CA certificate without EKU allows every usage. */
	pem = slurp("root.crt");
	assert_ok(cmk_cert_parse(pem, &info));
	assert_true(info.client_auth);
	assert_string_equal(info.serial, "01");
	assert_string_equal(info.subject, info.issuer);
	assert_int_equal(info.n_dns_names, 0);
	cmk_cert_info_clear(&info);
	free(pem);
}

static void test_cert_parse_refuses_garbage(void **state)
{
	static const char broken[] = "-----BEGIN CERTIFICATE-----\nMIIBroken\n-----END CERTIFICATE-----\n";
	struct cmk_cert_info info;
	char *key = slurp("root.key");

	(void)state;
	assert_int_equal(cmk_cert_parse("no certificate here", &info), CMK_ERR_INVALID);
	assert_int_equal(cmk_cert_parse(broken, &info), CMK_ERR_INVALID);
	assert_int_equal(cmk_cert_parse(key, &info), CMK_ERR_INVALID);
	assert_int_equal(cmk_cert_parse(NULL, &info), CMK_ERR_INVALID);
	assert_null(info.dns_names);
	free(key);
}

static void test_pem_cert_count(void **state)
{
	char *chain = slurp("chain.pem"), *bundle, *broken;
	char *key = slurp("root.key");

	(void)state;
	assert_int_equal(cmk_pem_cert_count(chain), 2);
	assert_int_equal(cmk_pem_cert_count(""), 0);
	assert_int_equal(cmk_pem_cert_count(key), 0);
	/* An OpenBao pem_bundle: key, leaf, chain. */
	run("cat root.key leaf.crt chain.pem > bundle.pem");
	bundle = slurp("bundle.pem");
	assert_int_equal(cmk_pem_cert_count(bundle), 3);
	/* A character of the second certificate's base64 made invalid. */
	broken = cmk_strdup(chain);
	strstr(strstr(broken, "-----END CERTIFICATE-----"), "-----BEGIN CERTIFICATE-----\n")[40] = '!';
	assert_int_equal(cmk_pem_cert_count(broken), CMK_ERR_INVALID);
	assert_true(has(cmk_errdetail(), "certificate 2"));
	free(chain);
	free(bundle);
	free(broken);
	free(key);
}

static void test_cert_matches_key(void **state)
{
	struct cmk_key *other_ec = NULL, *rsa = NULL;
	char *pem = slurp("leaf.crt");

	(void)state;
	assert_ok(cmk_cert_matches_key(pem, leaf_key));
	assert_ok(cmk_key_generate(CMK_KEY_EC, 256, &other_ec));
	assert_int_equal(cmk_cert_matches_key(pem, other_ec), CMK_ERR_VERIFY);
	assert_ok(cmk_key_generate(CMK_KEY_RSA, 2048, &rsa));
	assert_int_equal(cmk_cert_matches_key(pem, rsa), CMK_ERR_VERIFY);
	assert_int_equal(cmk_cert_matches_key("junk", leaf_key), CMK_ERR_INVALID);
	cmk_key_free(other_ec);
	cmk_key_free(rsa);
	free(pem);
}

static void test_verify_chain(void **state)
{
	char *leaf = slurp("leaf.crt"), *chain = slurp("chain.pem"), *other = slurp("other.crt");
	char *expired = slurp("expired.crt"), *future = slurp("future.crt"), *issuing = slurp("int.crt");
	char *root = slurp("root.crt"), *wrong_chain = cmk_asprintf("%s%s", issuing, other);

	(void)state;
	assert_ok(cmk_cert_verify_chain(leaf, chain));

	assert_int_equal(cmk_cert_verify_chain(leaf, other), CMK_ERR_VERIFY);
	assert_true(has(cmk_errdetail(), "not trusted"));
	assert_int_equal(cmk_cert_verify_chain(leaf, wrong_chain), CMK_ERR_VERIFY);
	assert_true(has(cmk_errdetail(), "not trusted"));
	/* Without the issuing CA the leaf does not reach the root. */
	assert_int_equal(cmk_cert_verify_chain(leaf, root), CMK_ERR_VERIFY);
	assert_true(has(cmk_errdetail(), "not trusted"));

	assert_int_equal(cmk_cert_verify_chain(expired, chain), CMK_ERR_VERIFY);
	assert_true(has(cmk_errdetail(), "leaf certificate has expired (not after 2021-01-01T00:00:00Z)"));
	assert_int_equal(cmk_cert_verify_chain(future, chain), CMK_ERR_VERIFY);
	assert_true(has(cmk_errdetail(), "not yet valid (not before 2099-12-31T00:00:00Z)"));

	assert_int_equal(cmk_cert_verify_chain(leaf, issuing), CMK_ERR_VERIFY);
	assert_true(has(cmk_errdetail(), "no self-signed root"));
	assert_int_equal(cmk_cert_verify_chain(leaf, ""), CMK_ERR_VERIFY);
	assert_int_equal(cmk_cert_verify_chain("junk", chain), CMK_ERR_INVALID);
	free(leaf);
	free(chain);
	free(other);
	free(expired);
	free(future);
	free(issuing);
	free(root);
	free(wrong_chain);
}

/* ---- primitives --------------------------------------------------------- */

static void unhex(const char *hex, uint8_t *out, size_t *len)
{
	size_t n = strlen(hex) / 2, i;

	for (i = 0; i < n; i++) {
		unsigned v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	*len = n;
}

static void test_hkdf_rfc5869_case1(void **state)
{
	uint8_t ikm[22], salt[13], info[10], okm[42], big[255 * 32 + 1];
	char hex[2 * sizeof(okm) + 1];
	size_t i;

	(void)state;
	memset(ikm, 0x0b, sizeof(ikm));
	for (i = 0; i < sizeof(salt); i++)
		salt[i] = (uint8_t)i;
	for (i = 0; i < sizeof(info); i++)
		info[i] = (uint8_t)(0xf0 + i);
	assert_ok(cmk_hkdf_sha256(salt, sizeof(salt), ikm, sizeof(ikm), info, sizeof(info), okm, sizeof(okm)));
	cmk_hex(okm, sizeof(okm), hex);
	assert_string_equal(hex, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
				 "34007208d5b887185865");
	assert_int_equal(cmk_hkdf_sha256(salt, sizeof(salt), ikm, sizeof(ikm), info, sizeof(info), big, sizeof(big)),
			 CMK_ERR_INVALID);
	assert_int_equal(cmk_hkdf_sha256(salt, sizeof(salt), ikm, sizeof(ikm), info, sizeof(info), okm, 0),
			 CMK_ERR_INVALID);
}

/* The GCM specification's test case 16 (AES-256, 96-bit IV, AAD), tag appended. */
static void test_aead_test_vector(void **state)
{
	uint8_t key[32], iv[12], aad[20], pt[60], out[76], back[60];
	char hex[2 * sizeof(out) + 1];
	size_t len;

	(void)state;
	unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, &len);
	unhex("cafebabefacedbaddecaf888", iv, &len);
	unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, &len);
	unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39", pt, &len);
	assert_ok(cmk_aead_seal(key, iv, aad, sizeof(aad), pt, sizeof(pt), out));
	cmk_hex(out, sizeof(out), hex);
	assert_string_equal(hex, "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
				 "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
				 "76fc6ece0f4e1768cddf8853bb2d551b");
	assert_ok(cmk_aead_open(key, iv, aad, sizeof(aad), out, sizeof(out), back));
	assert_memory_equal(back, pt, sizeof(pt));
}

static void assert_open_fails_and_wipes(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
					const uint8_t *ct, size_t ct_len)
{
	uint8_t pt[64], zero[64];

	memset(pt, 0x5a, sizeof(pt));
	memset(zero, 0, sizeof(zero));
	assert_int_equal(cmk_aead_open(key, nonce, aad, aad_len, ct, ct_len, pt), CMK_ERR_VERIFY);
	assert_memory_equal(pt, zero, ct_len - 16);
}

static void test_aead_round_trip_and_tamper(void **state)
{
	static const uint8_t msg[] = "-----BEGIN EC PRIVATE KEY----- not really";
	uint8_t key[32], nonce[12], aad[] = "tenant/type", ct[sizeof(msg) + 16], pt[sizeof(msg)];
	size_t i;

	(void)state;
	assert_ok(cmk_random(key, sizeof(key)));
	assert_ok(cmk_random(nonce, sizeof(nonce)));
	assert_ok(cmk_aead_seal(key, nonce, aad, sizeof(aad), msg, sizeof(msg), ct));
	assert_memory_not_equal(ct, msg, sizeof(msg));
	assert_ok(cmk_aead_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), pt));
	assert_memory_equal(pt, msg, sizeof(msg));

	for (i = 0; i < sizeof(ct); i++) {      /* ciphertext and tag */
		ct[i] ^= 0x01;
		assert_open_fails_and_wipes(key, nonce, aad, sizeof(aad), ct, sizeof(ct));
		ct[i] ^= 0x01;
	}
	aad[0] ^= 0x80;
	assert_open_fails_and_wipes(key, nonce, aad, sizeof(aad), ct, sizeof(ct));
	aad[0] ^= 0x80;
	nonce[11] ^= 0x01;
	assert_open_fails_and_wipes(key, nonce, aad, sizeof(aad), ct, sizeof(ct));
	nonce[11] ^= 0x01;
	key[31] ^= 0x01;
	assert_open_fails_and_wipes(key, nonce, aad, sizeof(aad), ct, sizeof(ct));
	key[31] ^= 0x01;
	assert_open_fails_and_wipes(key, nonce, aad, sizeof(aad) - 1, ct, sizeof(ct));
	assert_int_equal(cmk_aead_open(key, nonce, aad, sizeof(aad), ct, 15, pt), CMK_ERR_INVALID);
	assert_ok(cmk_aead_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), pt));
}

static void test_base64(void **state)
{
	/* RFC 4648 section 10. */
	const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	uint8_t *bin = NULL;
	char *text = NULL;
	size_t i, len = 0;

	(void)state;
	for (i = 0; i < 7; i++) {
		assert_ok(cmk_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), &text));
		assert_string_equal(text, coded[i]);
		free(text);
		assert_ok(cmk_base64_decode(coded[i], strlen(coded[i]), &bin, &len));
		assert_int_equal(len, strlen(plain[i]));
		assert_memory_equal(bin, plain[i], len);
		assert_int_equal(bin[len], 0);
		free(bin);
	}
	assert_ok(cmk_base64_decode("Zm9v\nYmFy", 9, &bin, &len));
	assert_int_equal(len, 6);
	assert_memory_equal(bin, "foobar", 6);
	free(bin);
	bin = (uint8_t *)1;
	assert_int_equal(cmk_base64_decode("Zm9v!", 5, &bin, &len), CMK_ERR_INVALID);
	assert_null(bin);
	assert_int_equal(cmk_base64_decode("Zm=v", 4, &bin, &len), CMK_ERR_INVALID);
}

static void test_sha256_and_hex(void **state)
{
	uint8_t digest[32];
	char hex[65];

	(void)state;
	cmk_sha256("abc", 3, digest);
	cmk_hex(digest, sizeof(digest), hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	cmk_hex(digest, 0, hex);
	assert_string_equal(hex, "");
}

/* A forked child must not replay the parent's random stream. */
static void test_random_differs_after_fork(void **state)
{
	uint8_t a[32], b[32], mine[32], theirs[32], big[5000], zero[32];
	int fds[2], status;
	pid_t pid;

	(void)state;
	memset(zero, 0, sizeof(zero));
	assert_ok(cmk_random(a, sizeof(a)));
	assert_ok(cmk_random(b, sizeof(b)));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, zero, sizeof(a));
	memset(big, 0, sizeof(big));
	assert_ok(cmk_random(big, sizeof(big)));
	assert_memory_not_equal(big + sizeof(big) - 32, zero, 32);

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t child[32];

		close(fds[0]);
		_exit(cmk_random(child, sizeof(child)) == 0 && write(fds[1], child, sizeof(child)) == 32 ? 0 : 1);
	}
	close(fds[1]);
	assert_ok(cmk_random(mine, sizeof(mine)));
	assert_int_equal(read(fds[0], theirs, sizeof(theirs)), 32);
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_memory_not_equal(mine, theirs, sizeof(mine));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_generate_sizes),
		cmocka_unit_test(test_key_generate_rsa4096),
		cmocka_unit_test(test_key_generate_refuses_other_sizes),
		cmocka_unit_test(test_key_parse_formats),
		cmocka_unit_test(test_key_parse_refuses_encrypted),
		cmocka_unit_test(test_key_parse_refuses_garbage),
		cmocka_unit_test(test_csr_verified_by_openssl),
		cmocka_unit_test(test_csr_refuses_names_that_are_not_dns_names),
		cmocka_unit_test(test_cert_parse_fields),
		cmocka_unit_test(test_cert_parse_known_dates_in_any_time_zone),
		cmocka_unit_test(test_cert_parse_server_only_eku),
		cmocka_unit_test(test_cert_parse_refuses_garbage),
		cmocka_unit_test(test_pem_cert_count),
		cmocka_unit_test(test_cert_matches_key),
		cmocka_unit_test(test_verify_chain),
		cmocka_unit_test(test_hkdf_rfc5869_case1),
		cmocka_unit_test(test_aead_test_vector),
		cmocka_unit_test(test_aead_round_trip_and_tamper),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_sha256_and_hex),
		cmocka_unit_test(test_random_differs_after_fork),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
