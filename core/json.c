/*
 * json.c - the jansson boundary.  Every JSON text cmkcert reads (OpenBao
 * answers, keystore requests, audit lines) is parsed here with the same
 * strict rules: UTF-8 only, no NUL escapes, no duplicate keys, an object or
 * array at the top.  jansson reports failures in a json_error_t; they are
 * turned into CMK_ERR_INVALID with "<what>: line L column C: <reason>".
 *
 * The typed getters exist so that every module words a wrong or missing
 * field the same way, naming the field, because those messages reach the
 * people who wrote the request.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/util.h"

/*
 * OpenBao answers carry tokens and (in issue mode) private keys; jansson
 * keeps copies of every string it parses or dumps in its own buffers.  All
 * of them are wiped when jansson frees them.  Installed before main() so
 * no jansson allocation predates it.
 */
static void json_free_wiped(void *p)
{
	if (p != NULL)
		cmk_freezero(p, malloc_usable_size(p));
}

__attribute__((constructor)) static void json_install_allocator(void)
{
	json_set_alloc_funcs(malloc, json_free_wiped);
}

#define JSON_FILE_MAX (1024 * 1024)

/*
 * jansson appends " near '<up to 20 bytes of input>'" to its messages.  The
 * input may be an OpenBao answer carrying a private key or a client token, so
 * that excerpt is dropped: line and column locate the problem without
 * copying secrets into error detail and from there into logs.  A duplicate
 * key excerpt is only the key's name, which is kept because it is the most
 * useful part of that message.
 */
static void strip_excerpt(const json_error_t *err, char *text, size_t len)
{
	char *near;

	snprintf(text, len, "%s", err->text);
	if (json_error_code(err) == json_error_duplicate_key)
		return;
	if ((near = strstr(text, " near '")) != NULL)
		*near = '\0';
}

int cmk_json_parse(const char *what, const char *text, size_t len, json_t **out)
{
	json_error_t err;
	char reason[JSON_ERROR_TEXT_LENGTH];
	json_t *v;

	*out = NULL;
	if (text == NULL)
		return cmk_fail(CMK_ERR_INVALID, "%s: no JSON text", what);
	v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
	if (v == NULL) {
		if (json_error_code(&err) == json_error_out_of_memory)
			return CMK_ERR_NOMEM;
		strip_excerpt(&err, reason, sizeof(reason));
		if (err.line < 0)
			return cmk_fail(CMK_ERR_INVALID, "%s: %s", what, reason);
		return cmk_fail(CMK_ERR_INVALID, "%s: line %d column %d: %s", what, err.line, err.column, reason);
	}
	*out = v;
	return 0;
}

int cmk_json_load_file(const char *path, json_t **out)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if ((rc = cmk_read_file(path, JSON_FILE_MAX, &text, &len)) != 0)
		return rc;
	rc = cmk_json_parse(path, text, len, out);
	/* A JSON file may hold credentials (an AppRole answer saved by an operator). */
	cmk_freezero(text, len + 1);
	return rc;
}

/*
 * Look up `key` for a getter.  Returns 0 with *v set, CMK_ERR_NOTFOUND when
 * the key is absent or null (with detail for the plain getters to reuse),
 * or CMK_ERR_INVALID when `obj` is not an object.
 */
static int field(const json_t *obj, const char *key, json_t **v)
{
	*v = NULL;
	if (!json_is_object(obj))
		return cmk_fail(CMK_ERR_INVALID, "looking up field \"%s\": not a JSON object", key);
	*v = json_object_get(obj, key);
	if (*v == NULL || json_is_null(*v))
		return cmk_fail(CMK_ERR_NOTFOUND, "missing field \"%s\"", key);
	return 0;
}

/* The plain getters treat absence as bad input; the detail set by field() already says so. */
static int required(int rc)
{
	return rc == CMK_ERR_NOTFOUND ? CMK_ERR_INVALID : rc;
}

int cmk_json_str_opt(const json_t *obj, const char *key, const char **out)
{
	json_t *v;
	int rc;

	if ((rc = field(obj, key, &v)) != 0)
		return rc;
	if (!json_is_string(v))
		return cmk_fail(CMK_ERR_INVALID, "field \"%s\" must be a string", key);
	*out = json_string_value(v);
	return 0;
}

int cmk_json_str(const json_t *obj, const char *key, const char **out)
{
	return required(cmk_json_str_opt(obj, key, out));
}

int cmk_json_int_opt(const json_t *obj, const char *key, int64_t *out)
{
	json_t *v;
	int rc;

	if ((rc = field(obj, key, &v)) != 0)
		return rc;
	/* Only JSON integers: 1.0 or "1" would hide a producer bug behind a silent conversion. */
	if (!json_is_integer(v))
		return cmk_fail(CMK_ERR_INVALID, "field \"%s\" must be an integer", key);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

int cmk_json_int(const json_t *obj, const char *key, int64_t *out)
{
	return required(cmk_json_int_opt(obj, key, out));
}

int cmk_json_bool_opt(const json_t *obj, const char *key, bool *out)
{
	json_t *v;
	int rc;

	if ((rc = field(obj, key, &v)) != 0)
		return rc;
	if (!json_is_boolean(v))
		return cmk_fail(CMK_ERR_INVALID, "field \"%s\" must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

int cmk_json_bool(const json_t *obj, const char *key, bool *out)
{
	return required(cmk_json_bool_opt(obj, key, out));
}

/* JSON_ENCODE_ANY: a bare string or number dumps too, so NULL only ever means out of memory. */
char *cmk_json_dump(const json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

char *cmk_json_dump_sorted(const json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

char *cmk_json_dump_pretty(const json_t *v)
{
	char *s, *grown;
	size_t len;

	if ((s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY)) == NULL)
		return NULL;
	len = strlen(s);
	if ((grown = realloc(s, len + 2)) == NULL) {
		free(s);
		return NULL;
	}
	grown[len] = '\n';
	grown[len + 1] = '\0';
	return grown;
}

char *cmk_json_pretty_array_item(const json_t *v, bool first)
{
	char *s, *out, *o;
	size_t lines = 0;

	if ((s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY)) == NULL)
		return NULL;
	for (const char *p = s; *p != '\0'; p++)
		lines += *p == '\n';
	/* "[\n  " or ",\n  ", the text, two more spaces after each of its line breaks. */
	if ((out = malloc(4 + strlen(s) + 2 * lines + 1)) != NULL) {
		o = out;
		*o++ = first ? '[' : ',';
		memcpy(o, "\n  ", 3);
		o += 3;
		for (const char *p = s; *p != '\0'; p++) {
			*o++ = *p;
			if (*p == '\n') {
				memcpy(o, "  ", 2);
				o += 2;
			}
		}
		*o = '\0';
	}
	free(s);
	return out;
}

const char *cmk_json_pretty_array_end(size_t n)
{
	return n == 0 ? "[]\n" : "\n]\n";
}
