/*
 * json.h - the jansson boundary: strict parsing with errors that name the
 * field, typed getters and canonical output.  Modules that need JSON use
 * these helpers and the json_t type; jansson's own error struct and
 * reference-counting rules are handled here.
 */
#ifndef CMKCERT_JSON_H
#define CMKCERT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/*
 * Parse `len` bytes of strict UTF-8 JSON (rejecting duplicate keys).  `what`
 * names the input in error detail ("keystore request", "OpenBao answer").
 * On success *out holds a new reference (json_decref it).  Errors are
 * CMK_ERR_INVALID with "<what>: line L column C: <reason>"; the detail never
 * quotes the input (it may be an answer carrying a key or token), only a
 * duplicate key's name.  The top level must be an object or an array.
 */
int cmk_json_parse(const char *what, const char *text, size_t len, json_t **out);

/* Parse a file (at most 1 MiB); `what` in errors is the path. */
int cmk_json_load_file(const char *path, json_t **out);

/*
 * Typed field access.  `obj` must be an object.  Each returns 0, or
 * CMK_ERR_NOTFOUND when the key is absent or null (only for the _opt forms:
 * the plain forms return CMK_ERR_INVALID naming the field), or
 * CMK_ERR_INVALID naming the field when the type is wrong.
 * Strings returned are borrowed from `obj`.
 */
int cmk_json_str(const json_t *obj, const char *key, const char **out);
int cmk_json_str_opt(const json_t *obj, const char *key, const char **out);
int cmk_json_int(const json_t *obj, const char *key, int64_t *out);
int cmk_json_int_opt(const json_t *obj, const char *key, int64_t *out);
int cmk_json_bool(const json_t *obj, const char *key, bool *out);
int cmk_json_bool_opt(const json_t *obj, const char *key, bool *out);

/*
 * Compact JSON with keys in insertion order, malloc'd (free() it), no
 * trailing newline; NULL on OOM.  Any value dumps, not only objects/arrays.
 */
char *cmk_json_dump(const json_t *v);

/* Same with sorted keys (for hashing). */
char *cmk_json_dump_sorted(const json_t *v);

/* Pretty (indent 2) for people, malloc'd, ending in "\n". */
char *cmk_json_dump_pretty(const json_t *v);

/*
 * An array printed element by element as its elements arrive, byte for byte
 * what cmk_json_dump_pretty() prints for the whole array: each element's
 * text (malloc'd, free() it; NULL on OOM) starts with "[" or "," and the
 * line break and indent before the element, and holds the element indented
 * one level; after the last, print cmk_json_pretty_array_end(n), n being how
 * many were printed.
 */
char *cmk_json_pretty_array_item(const json_t *v, bool first);
const char *cmk_json_pretty_array_end(size_t n);

#endif
