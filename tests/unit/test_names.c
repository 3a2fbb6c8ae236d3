/*
 * test_names.c - tenant ids, keystore types, endpoints and the
 * "<tenant>-<type>" file names: what is refused, what is accepted, and that
 * every refusal names the field and shows the bad value safely.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/names.h"

static void assert_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle) == NULL)
		fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_not_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle) != NULL)
		fail_msg("did not expect \"%s\" in \"%s\"", needle, haystack);
}

static void test_bad_tenants_are_refused_naming_the_field(void **state)
{
	static const char *const bad[] = {
		"", ".", "..", "a/b", "../etc", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "a\nb",
		"ten\xc3\xa4nt", "a b", "a\\b",
	};

	(void)state;
	assert_int_equal(strlen(bad[5]), 41);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cmk_errclear();
		assert_false(cmk_is_valid_tenant(bad[i]));
		assert_int_equal(cmk_check_tenant("tenant_id", bad[i]), CMK_ERR_INVALID);
		assert_true(strncmp(cmk_errdetail(), "tenant_id", 9) == 0);
	}
	assert_false(cmk_is_valid_tenant(NULL));
	assert_int_equal(cmk_check_tenant("tenant_id", NULL), CMK_ERR_INVALID);
}

static void test_tenant_messages_say_what_is_wrong(void **state)
{
	(void)state;
	cmk_check_tenant("tenant_id", "a/b");
	assert_string_equal(cmk_errdetail(), "tenant_id \"a/b\": may only contain letters, digits and . _ ~ -");
	cmk_check_tenant("tenant_id", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	assert_string_equal(cmk_errdetail(), "tenant_id: 41 characters, at most 40");
	cmk_check_tenant("tenant_id", "..");
	assert_string_equal(cmk_errdetail(), "tenant_id \"..\": not allowed");
	cmk_check_tenant("tenant_id", ".");
	assert_string_equal(cmk_errdetail(), "tenant_id \".\": not allowed");
	cmk_check_tenant("tenant_id", "");
	assert_string_equal(cmk_errdetail(), "tenant_id: must not be empty");
	cmk_check_tenant("--tenant", "a b");
	assert_contains(cmk_errdetail(), "--tenant \"a b\"");
}

static void test_tenant_messages_escape_control_and_non_ascii_bytes(void **state)
{
	(void)state;
	cmk_check_tenant("tenant_id", "a\nb");
	assert_string_equal(cmk_errdetail(), "tenant_id \"a\\x0ab\": may only contain letters, digits and . _ ~ -");
	assert_null(strchr(cmk_errdetail(), '\n'));

	cmk_check_tenant("tenant_id", "ten\xc3\xa4nt");
	assert_contains(cmk_errdetail(), "\"ten\\xc3\\xa4nt\"");

	/* A terminal escape must not reach the operator's terminal. */
	cmk_check_tenant("tenant_id", "\x1b[2J");
	assert_null(strchr(cmk_errdetail(), '\x1b'));
	assert_contains(cmk_errdetail(), "\\x1b[2J");
}

static void test_good_tenants_are_accepted(void **state)
{
	static const char *const good[] = {
		"acme-corp-12345", "a.b_c~d", "x", "...", "a..b", "A-Z", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	};

	(void)state;
	assert_int_equal(strlen(good[6]), 40);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_true(cmk_is_valid_tenant(good[i]));
		assert_int_equal(cmk_check_tenant("tenant_id", good[i]), 0);
	}
}

static void test_types(void **state)
{
	(void)state;
	assert_true(cmk_is_valid_type("thales_luna"));
	assert_int_equal(cmk_check_type("type", "thales_luna"), 0);
	assert_true(cmk_is_valid_type("aws_kms"));
	assert_true(cmk_is_valid_type("hsm9000"));
	assert_true(cmk_is_valid_type("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));     /* 32 */

	assert_false(cmk_is_valid_type("Thales-Luna"));
	assert_int_equal(cmk_check_type("type", "Thales-Luna"), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "type \"Thales-Luna\": may only contain a-z, 0-9 and _");

	assert_false(cmk_is_valid_type(""));
	assert_int_equal(cmk_check_type("type", ""), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "type: must not be empty");

	assert_false(cmk_is_valid_type("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));    /* 33 */
	assert_int_equal(cmk_check_type("type", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "type: 33 characters, at most 32");

	/* '-' separates tenant and type in file names, so a type never has one. */
	assert_false(cmk_is_valid_type("aws-kms"));
	assert_false(cmk_is_valid_type(NULL));
}

static void test_good_endpoints(void **state)
{
	char host[CMK_HOST_MAX + 1];
	uint16_t port = 0;

	(void)state;
	assert_int_equal(cmk_parse_endpoint("192.168.1.100:1792", host, &port), 0);
	assert_string_equal(host, "192.168.1.100");
	assert_int_equal(port, 1792);

	assert_int_equal(cmk_parse_endpoint("kms.example.com:443", host, &port), 0);
	assert_string_equal(host, "kms.example.com");
	assert_int_equal(port, 443);

	assert_int_equal(cmk_parse_endpoint("[::1]:5696", host, &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 5696);

	assert_int_equal(cmk_parse_endpoint("[2001:db8::10]:65535", host, &port), 0);
	assert_string_equal(host, "2001:db8::10");
	assert_int_equal(port, 65535);

	assert_int_equal(cmk_parse_endpoint("localhost:1", host, &port), 0);
	assert_int_equal(port, 1);
}

static void test_bad_endpoints_are_refused_naming_the_endpoint(void **state)
{
	static const struct {
		const char *endpoint, *why;
	} bad[] = {
		{ "host", "missing port" },
		{ "host:", "missing port" },
		{ "host:0", "1 to 65535" },
		{ "host:70000", "1 to 65535" },
		{ "host:99999999999999999999", "1 to 65535" },
		{ "host:12a", "not a number" },
		{ "host:-1", "not a number" },
		{ ":443", "empty host" },
		{ "ho st:443", "letters, digits" },
		{ "host_1:443", "letters, digits" },
		{ "a..b:443", "empty label" },
		{ "-a.b:443", "'-'" },
		{ "::1:443", "brackets" },
		{ "[::1]", "missing port" },
		{ "[::1:443", "missing ']'" },
		{ "[]:443", "empty host" },
		{ "[fe80::1%eth0]:443", "hex digits" },
		{ "[abc]:443", "not an IPv6 address" },
		{ "[::1]x:443", "missing port" },
	};
	char host[CMK_HOST_MAX + 1], expect[128];
	uint16_t port;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cmk_errclear();
		assert_int_equal(cmk_parse_endpoint(bad[i].endpoint, host, &port), CMK_ERR_INVALID);
		snprintf(expect, sizeof(expect), "endpoint \"%.60s", bad[i].endpoint);
		assert_contains(cmk_errdetail(), expect);
		assert_contains(cmk_errdetail(), bad[i].why);
	}
	assert_int_equal(cmk_parse_endpoint("", host, &port), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "endpoint");
	assert_int_equal(cmk_parse_endpoint(NULL, host, &port), CMK_ERR_INVALID);
}

static void test_endpoint_host_length_limit(void **state)
{
	char ep[300], host[CMK_HOST_MAX + 1];
	uint16_t port;
	size_t n = 0;

	(void)state;
	/* 4 labels of 63 characters and dots: 255 characters, two more than a DNS name may have. */
	for (int l = 0; l < 4; l++) {
		if (l > 0)
			ep[n++] = '.';
		memset(ep + n, 'a', 63);
		n += 63;
	}
	strcpy(ep + n, ":443");
	assert_int_equal(cmk_parse_endpoint(ep, host, &port), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "at most 253");

	/* 253 characters fit, and the host comes back whole. */
	strcpy(ep + 253, ":443");
	assert_int_equal(cmk_parse_endpoint(ep, host, &port), 0);
	assert_int_equal(strlen(host), 253);
}

static void test_split_at_the_last_dash(void **state)
{
	char tenant[CMK_TENANT_MAX + 1], type[CMK_TYPE_MAX + 1];
	const char *name = "acme-corp-12345-thales_luna";

	(void)state;
	assert_true(cmk_split_tenant_type(name, strlen(name), tenant, type));
	assert_string_equal(tenant, "acme-corp-12345");
	assert_string_equal(type, "thales_luna");

	/* Only the first len bytes count: "t-aws_kms.crt" with the extension cut off. */
	assert_true(cmk_split_tenant_type("t-aws_kms.crt", 9, tenant, type));
	assert_string_equal(tenant, "t");
	assert_string_equal(type, "aws_kms");

	assert_false(cmk_split_tenant_type("nodash", 6, tenant, type));
	assert_false(cmk_split_tenant_type("-aws_kms", 8, tenant, type));
	assert_false(cmk_split_tenant_type("acme-", 5, tenant, type));
	assert_false(cmk_split_tenant_type("acme-Bad_Type", 13, tenant, type));
	assert_string_equal(tenant, "");
	assert_string_equal(type, "");
	assert_false(cmk_split_tenant_type("..-aws_kms", 10, tenant, type));
	assert_false(cmk_split_tenant_type("a/b-aws_kms", 11, tenant, type));
	/* A NUL inside the span must not let "a" stand for "a\0/x". */
	assert_false(cmk_split_tenant_type("a\0/x-aws_kms", 12, tenant, type));
	assert_false(cmk_split_tenant_type("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-t", 43, tenant, type));
}

static void test_role_names_and_mount_paths(void **state)
{
	(void)state;
	assert_int_equal(cmk_check_role_name("role", "openkcm-client-cert-role"), 0);
	assert_int_equal(cmk_check_role_name("role", "a.b_c"), 0);
	assert_int_equal(cmk_check_role_name("role", ""), CMK_ERR_INVALID);
	assert_int_equal(cmk_check_role_name("role", ".."), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "role \"..\": not allowed");
	assert_int_equal(cmk_check_role_name("role", "a/b"), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "role \"a/b\"");
	assert_int_equal(cmk_check_role_name("role", "a?b"), CMK_ERR_INVALID);

	assert_int_equal(cmk_check_mount_path("pki_mount", "pki_client_certs"), 0);
	assert_int_equal(cmk_check_mount_path("namespace", "team/sub-team"), 0);
	assert_int_equal(cmk_check_mount_path("pki_mount", "/pki"), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "pki_mount \"/pki\": must not start or end with '/'");
	assert_int_equal(cmk_check_mount_path("pki_mount", "pki/"), CMK_ERR_INVALID);
	assert_int_equal(cmk_check_mount_path("pki_mount", "a//b"), CMK_ERR_INVALID);
	assert_int_equal(cmk_check_mount_path("pki_mount", "a/../b"), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "\"..\"");
	assert_int_equal(cmk_check_mount_path("pki_mount", "a b"), CMK_ERR_INVALID);
	assert_int_equal(cmk_check_mount_path("pki_mount", ""), CMK_ERR_INVALID);
}

static void test_quote_escapes_and_truncates(void **state)
{
	char out[CMK_QUOTE_SIZE], in[200], expect[CMK_QUOTE_SIZE];

	(void)state;
	cmk_quote("plain text", out);
	assert_string_equal(out, "plain text");
	cmk_quote("q\"b\\\t\x7f\xff", out);
	assert_string_equal(out, "q\\\"b\\\\\\x09\\x7f\\xff");
	cmk_quote(NULL, out);
	assert_string_equal(out, "");

	memset(in, 'z', sizeof(in) - 1);
	in[sizeof(in) - 1] = '\0';
	cmk_quote(in, out);
	memset(expect, 'z', CMK_QUOTE_SHOWN);
	strcpy(expect + CMK_QUOTE_SHOWN, "...");
	assert_string_equal(out, expect);

	/* The worst case fills the buffer exactly and stays terminated. */
	memset(in, '\x01', sizeof(in) - 1);
	cmk_quote(in, out);
	assert_int_equal(strlen(out), CMK_QUOTE_SIZE - 1);
	assert_not_contains(out, "\x01");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_tenants_are_refused_naming_the_field),
		cmocka_unit_test(test_tenant_messages_say_what_is_wrong),
		cmocka_unit_test(test_tenant_messages_escape_control_and_non_ascii_bytes),
		cmocka_unit_test(test_good_tenants_are_accepted),
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_good_endpoints),
		cmocka_unit_test(test_bad_endpoints_are_refused_naming_the_endpoint),
		cmocka_unit_test(test_endpoint_host_length_limit),
		cmocka_unit_test(test_split_at_the_last_dash),
		cmocka_unit_test(test_role_names_and_mount_paths),
		cmocka_unit_test(test_quote_escapes_and_truncates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
