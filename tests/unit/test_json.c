/*
 * test_json.c - strict parsing, error messages that name the place or the
 * field, the typed getters and the three output forms.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/util.h"


static void check_lacks(const char *hay, const char *needle, const char *file, int line)
{
	if (strstr(hay, needle) != NULL) {
		print_error("\"%s\" should not contain \"%s\"\n", hay, needle);
		_fail(file, line);
	}
}
#define assert_lacks(h, n) check_lacks((h), (n), __FILE__, __LINE__)

/* Parse a NUL-terminated text; the test fails when it does not parse. */
static json_t *parse_ok(const char *text)
{
	json_t *v = NULL;

	assert_int_equal(cmk_json_parse("test", text, strlen(text), &v), 0);
	assert_non_null(v);
	return v;
}

/* Parse a text that must be refused; returns the detail. */
static const char *parse_bad(const char *what, const char *text, size_t len)
{
	json_t *v = (json_t *)1;

	assert_int_equal(cmk_json_parse(what, text, len, &v), CMK_ERR_INVALID);
	assert_null(v);
	return cmk_errdetail();
}

static void test_parse_object(void **state)
{
	const char *text = "{\"tenant_id\":\"acme\",\"n\":3}";
	json_t *v;

	(void)state;
	/* Only `len` bytes count: trailing bytes after them are not read. */
	v = NULL;
	assert_int_equal(cmk_json_parse("test", "[1] garbage", 3, &v), 0);
	assert_true(json_is_array(v));
	json_decref(v);

	v = parse_ok(text);
	assert_true(json_is_object(v));
	assert_string_equal(json_string_value(json_object_get(v, "tenant_id")), "acme");
	json_decref(v);
}

static void test_parse_error_line_column(void **state)
{
	const char *text = "{\n \"a\": tru}";

	(void)state;
	assert_string_equal(parse_bad("keystore request", text, strlen(text)),
			    "keystore request: line 2 column 9: invalid token");
	text = "{\"a\":1} x";
	assert_string_equal(parse_bad("OpenBao answer", text, strlen(text)),
			    "OpenBao answer: line 1 column 9: end of file expected");
}

static void test_parse_error_hides_input(void **state)
{
	const char *cut = "{\"auth\":{\"client_token\":\"s.SECRETTOKEN";
	const char *nl = "{\"private_key\":\"-----BEGIN\nMIIEvQ\"}";
	const char *d;

	(void)state;
	/* A broken answer must not put any part of a token or key into the error text. */
	d = parse_bad("OpenBao answer", cut, strlen(cut));
	assert_contains(d, "OpenBao answer: line 1 column");
	assert_lacks(d, "SECRET");
	d = parse_bad("OpenBao answer", nl, strlen(nl));
	assert_contains(d, "unexpected newline");
	assert_lacks(d, "BEGIN");
}

static void test_duplicate_keys_rejected(void **state)
{
	const char *text = "{\"tenant_id\":\"a\",\"tenant_id\":\"b\"}";
	const char *d;

	(void)state;
	d = parse_bad("keystore request", text, strlen(text));
	assert_contains(d, "keystore request: line 1 column");
	assert_contains(d, "duplicate object key");
	assert_contains(d, "tenant_id");
}

static void test_invalid_utf8_rejected(void **state)
{
	static const char *const bad[] = {
		"{\"a\":\"\xff\"}",          /* never valid */
		"{\"a\":\"\xc0\xaf\"}",      /* overlong "/" */
		"{\"a\":\"\xed\xa0\x80\"}",  /* UTF-16 surrogate */
		"{\"a\":\"\xe2\x82\"}",      /* cut sequence */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_contains(parse_bad("t", bad[i], strlen(bad[i])), "t: line 1 column");
	/* Valid multi-byte UTF-8 is fine. */
	json_decref(parse_ok("{\"a\":\"gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x94\x91\"}"));
}

static void test_other_refusals(void **state)
{
	static const char nul[] = "{\"a\":\"x\\u0000y\"}";
	static const char raw_nul[] = "{\"a\":1}\0";

	(void)state;
	assert_contains(parse_bad("t", "", 0), "t: ");
	assert_contains(parse_bad("t", "42", 2), "expected");
	assert_contains(parse_bad("t", "\"s\"", 3), "expected");
	assert_contains(parse_bad("t", nul, strlen(nul)), "\\u0000 is not allowed");
	parse_bad("t", raw_nul, sizeof(raw_nul) - 1);
	assert_int_equal(cmk_json_parse("t", NULL, 0, &(json_t *){ NULL }), CMK_ERR_INVALID);
}

static void test_str_getters(void **state)
{
	json_t *v = parse_ok("{\"tenant_id\":\"acme\",\"n\":5,\"z\":null,\"kc\":{}}");
	const char *s = NULL;

	(void)state;
	assert_int_equal(cmk_json_str(v, "tenant_id", &s), 0);
	assert_string_equal(s, "acme");

	assert_int_equal(cmk_json_str(v, "n", &s), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "field \"n\" must be a string");
	assert_int_equal(cmk_json_str(v, "keystore_config", &s), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "missing field \"keystore_config\"");
	assert_int_equal(cmk_json_str(v, "z", &s), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "\"z\"");

	assert_int_equal(cmk_json_str_opt(v, "tenant_id", &s), 0);
	assert_string_equal(s, "acme");
	assert_int_equal(cmk_json_str_opt(v, "absent", &s), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_json_str_opt(v, "z", &s), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_json_str_opt(v, "kc", &s), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "field \"kc\" must be a string");
	json_decref(v);
}

static void test_int_getters(void **state)
{
	json_t *v = parse_ok("{\"ttl\":31536000,\"neg\":-5,\"big\":9007199254740993,\"real\":1.0,"
			     "\"str\":\"1\",\"yes\":true,\"nil\":null}");
	int64_t n = 0;

	(void)state;
	assert_int_equal(cmk_json_int(v, "ttl", &n), 0);
	assert_int_equal(n, 31536000);
	assert_int_equal(cmk_json_int(v, "neg", &n), 0);
	assert_int_equal(n, -5);
	/* Beyond a double's precision: must come through exactly. */
	assert_int_equal(cmk_json_int(v, "big", &n), 0);
	assert_true(n == INT64_C(9007199254740993));

	assert_int_equal(cmk_json_int(v, "real", &n), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "field \"real\" must be an integer");
	assert_int_equal(cmk_json_int(v, "str", &n), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "field \"str\" must be an integer");
	assert_int_equal(cmk_json_int(v, "yes", &n), CMK_ERR_INVALID);
	assert_int_equal(cmk_json_int(v, "ttl_missing", &n), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "missing field \"ttl_missing\"");

	assert_int_equal(cmk_json_int_opt(v, "nil", &n), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_json_int_opt(v, "absent", &n), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_json_int_opt(v, "str", &n), CMK_ERR_INVALID);
	assert_int_equal(cmk_json_int_opt(v, "neg", &n), 0);
	assert_int_equal(n, -5);
	json_decref(v);
}

static void test_bool_getters(void **state)
{
	json_t *v = parse_ok("{\"t\":true,\"f\":false,\"s\":\"true\",\"one\":1,\"nil\":null}");
	bool b = false;

	(void)state;
	assert_int_equal(cmk_json_bool(v, "t", &b), 0);
	assert_true(b);
	assert_int_equal(cmk_json_bool(v, "f", &b), 0);
	assert_false(b);
	assert_int_equal(cmk_json_bool(v, "s", &b), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "field \"s\" must be true or false");
	assert_int_equal(cmk_json_bool(v, "one", &b), CMK_ERR_INVALID);
	assert_int_equal(cmk_json_bool(v, "certificate_required", &b), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "missing field \"certificate_required\"");

	assert_int_equal(cmk_json_bool_opt(v, "nil", &b), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_json_bool_opt(v, "absent", &b), CMK_ERR_NOTFOUND);
	assert_int_equal(cmk_json_bool_opt(v, "one", &b), CMK_ERR_INVALID);
	b = false;
	assert_int_equal(cmk_json_bool_opt(v, "t", &b), 0);
	assert_true(b);
	json_decref(v);
}

static void test_getters_need_object(void **state)
{
	json_t *v = parse_ok("[\"a\"]");
	const char *s;
	int64_t n;
	bool b;

	(void)state;
	assert_int_equal(cmk_json_str(v, "a", &s), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "not a JSON object");
	assert_int_equal(cmk_json_int_opt(v, "a", &n), CMK_ERR_INVALID);
	assert_int_equal(cmk_json_bool_opt(NULL, "a", &b), CMK_ERR_INVALID);
	json_decref(v);
}

static void test_dump_forms(void **state)
{
	json_t *v = json_object();
	char *s;

	(void)state;
	assert_non_null(v);
	json_object_set_new(v, "b", json_integer(1));
	json_object_set_new(v, "a", json_pack("[ii]", 1, 2));
	json_object_set_new(v, "c", json_string("x\n\"y\"\x01"));

	s = cmk_json_dump(v);
	assert_string_equal(s, "{\"b\":1,\"a\":[1,2],\"c\":\"x\\n\\\"y\\\"\\u0001\"}");
	free(s);
	s = cmk_json_dump_sorted(v);
	assert_string_equal(s, "{\"a\":[1,2],\"b\":1,\"c\":\"x\\n\\\"y\\\"\\u0001\"}");
	free(s);
	s = cmk_json_dump_pretty(v);
	assert_string_equal(s, "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    2\n  ],\n  \"c\": \"x\\n\\\"y\\\"\\u0001\"\n}\n");
	free(s);
	json_decref(v);

	/* Not only objects: a bare string is valid output too. */
	v = json_string("acme");
	s = cmk_json_dump(v);
	assert_string_equal(s, "\"acme\"");
	free(s);
	s = cmk_json_dump_pretty(v);
	assert_string_equal(s, "\"acme\"\n");
	free(s);
	json_decref(v);
}

/* Printed element by element, an array reads exactly as printed whole. */
static void test_pretty_array_streamed(void **state)
{
	const char *docs[] = {
		"[]",
		"[1]",
		"[{\"id\": 1, \"a\": null, \"s\": \"x\\ny\\t\\\"q\\\"\"}]",
		"[{\"id\": 1, \"nested\": {\"list\": [1, [2, {}], []], \"o\": {\"k\": true}}}, {\"id\": 2}, \"str\", 3]",
	};

	(void)state;
	for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
		json_t *arr, *el;
		char *whole, *part, *streamed = calloc(1, 1);
		size_t i, len = 0;

		assert_int_equal(cmk_json_parse("doc", docs[d], strlen(docs[d]), &arr), 0);
		json_array_foreach(arr, i, el) {
			part = cmk_json_pretty_array_item(el, i == 0);
			assert_non_null(part);
			streamed = realloc(streamed, len + strlen(part) + 1);
			memcpy(streamed + len, part, strlen(part) + 1);
			len += strlen(part);
			free(part);
		}
		streamed = realloc(streamed, len + 8);
		strcpy(streamed + len, cmk_json_pretty_array_end(json_array_size(arr)));
		whole = cmk_json_dump_pretty(arr);
		assert_string_equal(streamed, whole);
		free(whole);
		free(streamed);
		json_decref(arr);
	}
}

static void test_dump_round_trip(void **state)
{
	const char *text = "{\"z\":\"gr\xc3\xbc\xc3\x9f\",\"a\":[true,null,-1]}";
	json_t *v = parse_ok(text);
	char *s = cmk_json_dump(v);

	(void)state;
	assert_string_equal(s, text);
	free(s);
	json_decref(v);
}

/* ---- files ------------------------------------------------------------ */

struct dir {
	char path[64];
};

static int dir_setup(void **state)
{
	struct dir *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return -1;
	if (tu_mkdtemp(d->path, sizeof(d->path), "json") != 0) {
		free(d);
		return -1;
	}
	*state = d;
	return 0;
}

static int dir_teardown(void **state)
{
	struct dir *d = *state;
	int rc = tu_rmtree(d->path);

	free(d);
	return rc;
}

static char *write_temp(const struct dir *d, const char *name, const char *data, size_t len)
{
	char *path = cmk_asprintf("%s/%s", d->path, name);
	FILE *f;

	assert_non_null(path);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

static void test_load_file(void **state)
{
	struct dir *d = *state;
	char *good = write_temp(d, "good.json", "{\"a\":1}\n", 8);
	char *bad = write_temp(d, "bad.json", "{\n\"a\":1,\n\"a\":2}", 15);
	char *missing = cmk_asprintf("%s/missing.json", d->path);
	char *big_text = malloc(1024 * 1024 + 16);
	char *big, *expect;
	json_t *v = NULL;
	int64_t n = 0;

	assert_non_null(big_text);
	assert_int_equal(cmk_json_load_file(good, &v), 0);
	assert_int_equal(cmk_json_int(v, "a", &n), 0);
	assert_int_equal(n, 1);
	json_decref(v);

	assert_int_equal(cmk_json_load_file(bad, &v), CMK_ERR_INVALID);
	assert_null(v);
	expect = cmk_asprintf("%s: line 3 column", bad);
	assert_contains(cmk_errdetail(), expect);
	free(expect);

	assert_int_equal(cmk_json_load_file(missing, &v), CMK_ERR_NOTFOUND);

	/* A valid document just over 1 MiB is refused for its size. */
	memset(big_text, ' ', 1024 * 1024 + 16);
	memcpy(big_text, "{\"a\":1}", 7);
	big = write_temp(d, "big.json", big_text, 1024 * 1024 + 16);
	assert_int_equal(cmk_json_load_file(big, &v), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "larger than");

	free(big_text);
	free(big);
	free(missing);
	free(bad);
	free(good);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_object),
		cmocka_unit_test(test_parse_error_line_column),
		cmocka_unit_test(test_parse_error_hides_input),
		cmocka_unit_test(test_duplicate_keys_rejected),
		cmocka_unit_test(test_invalid_utf8_rejected),
		cmocka_unit_test(test_other_refusals),
		cmocka_unit_test(test_str_getters),
		cmocka_unit_test(test_int_getters),
		cmocka_unit_test(test_bool_getters),
		cmocka_unit_test(test_getters_need_object),
		cmocka_unit_test(test_dump_forms),
		cmocka_unit_test(test_dump_round_trip),
		cmocka_unit_test(test_pretty_array_streamed),
		cmocka_unit_test_setup_teardown(test_load_file, dir_setup, dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
