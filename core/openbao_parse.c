/*
 * openbao_parse.c - OpenBao answers turned into our structures, without any
 * I/O, so every shape in reference/openbao-samples can be tested directly.
 *
 * The shapes follow the server's code, not its docs (reference §8): PEM
 * values are kept exactly as returned (no trailing newline), serials
 * verbatim, TTLs are integer seconds, warnings are null or a list and are
 * kept as outcomes.  Anything else is CMK_ERR_PROTOCOL naming the answer
 * and the field; json.c's CMK_ERR_INVALID is re-worded here because a
 * malformed answer is the server's fault, not the caller's input.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/util.h"
#include "openbao_int.h"

/* ---- clearing ---- */

void cmk_bao_warnings_clear(struct cmk_bao_warnings *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->count; i++)
		free(w->items[i]);
	free(w->items);
	w->items = NULL;
	w->count = 0;
}

void cmk_bao_auth_clear(struct cmk_bao_auth *a)
{
	if (a == NULL)
		return;
	cmk_strfreezero(a->client_token);
	cmk_bao_warnings_clear(&a->warnings);
	memset(a, 0, sizeof(*a));
}

void cmk_bao_cert_clear(struct cmk_bao_cert *c)
{
	if (c == NULL)
		return;
	free(c->certificate);
	free(c->issuing_ca);
	free(c->ca_chain);
	cmk_strfreezero(c->private_key);
	free(c->private_key_type);
	free(c->serial_number);
	cmk_bao_warnings_clear(&c->warnings);
	memset(c, 0, sizeof(*c));
}

void cmk_bao_revocation_clear(struct cmk_bao_revocation *r)
{
	if (r == NULL)
		return;
	cmk_bao_warnings_clear(&r->warnings);
	memset(r, 0, sizeof(*r));
}

void cmk_bao_role_clear(struct cmk_bao_role *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n_allowed_domains; i++)
		free(r->allowed_domains[i]);
	free(r->allowed_domains);
	memset(r, 0, sizeof(*r));
}

/* ---- error answers ---- */

int cmk_bao_status_code(long status)
{
	switch (status) {
	case 400: return CMK_ERR_REJECTED;
	case 403: return CMK_ERR_DENIED;
	case 404: return CMK_ERR_NOTFOUND;
	case 429: return CMK_ERR_RATELIMIT;
	case 503: return CMK_ERR_SEALED;
	}
	if (status >= 400 && status < 500)
		return CMK_ERR_REJECTED;
	if (status >= 500 && status < 600)
		return CMK_ERR_SERVER;
	return CMK_ERR_PROTOCOL;
}

bool cmk_bao_status_is_retryable(long status)
{
	return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

static const char *status_text(long status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 412: return "Precondition Failed";
	case 413: return "Request Entity Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "unexpected status";
	}
}

/* Append n bytes of s to the string in buf, truncating; control characters become spaces (logs stay one line). */
static void append_clean(char *buf, size_t size, const char *s, size_t n)
{
	size_t used = strlen(buf);

	for (size_t i = 0; i < n && used + 1 < size; i++)
		buf[used++] = iscntrl((unsigned char)s[i]) ? ' ' : s[i];
	buf[used] = '\0';
}

/* "<n> error occurred:" or "<n> errors occurred:" - the head line of Go's multierror text. */
static bool is_multierror_head(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && isdigit((unsigned char)s[i]))
		i++;
	if (i == 0)
		return false;
	return (n - i == 16 && strncmp(s + i, " error occurred:", 16) == 0) ||
	       (n - i == 17 && strncmp(s + i, " errors occurred:", 17) == 0);
}

/* Add one item, trimmed, bullet removed, separated from earlier ones by "; ". */
static void append_item(char *buf, size_t size, const char *s, size_t n)
{
	while (n > 0 && isspace((unsigned char)*s))
		s++, n--;
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n >= 2 && s[0] == '*' && s[1] == ' ')
		s += 2, n -= 2;
	if (n == 0 || is_multierror_head(s, n))
		return;
	if (buf[0] != '\0')
		append_clean(buf, size, "; ", 2);
	append_clean(buf, size, s, n);
}

/* Split a message into lines: a multierror's items become separate entries, a plain message stays one. */
static void append_message(char *buf, size_t size, const char *msg)
{
	const char *nl = strchr(msg, '\n');

	if (nl == NULL || !is_multierror_head(msg, (size_t)(nl - msg))) {
		append_item(buf, size, msg, strlen(msg));
		return;
	}
	for (const char *line = nl + 1; *line != '\0'; line = nl + 1) {
		if ((nl = strchr(line, '\n')) == NULL) {
			append_item(buf, size, line, strlen(line));
			break;
		}
		append_item(buf, size, line, (size_t)(nl - line));
	}
}

void cmk_bao_error_text(long status, const char *body, size_t len, char *buf, size_t size)
{
	json_t *root = NULL, *errors, *e;
	size_t i;

	buf[0] = '\0';
	/* A proxy's HTML page or an empty body is not the server's error text; the status says enough. */
	if (len > 0 && body != NULL && body[0] == '{' && cmk_json_parse("error answer", body, len, &root) == 0) {
		errors = json_object_get(root, "errors");
		json_array_foreach(errors, i, e) {
			if (json_is_string(e))
				append_message(buf, size, json_string_value(e));
		}
		json_decref(root);
	}
	if (buf[0] == '\0')
		snprintf(buf, size, "%s", status_text(status));
}

int cmk_bao_fail_answer(const char *path, long status, const char *body, size_t len)
{
	char text[768];

	cmk_bao_error_text(status, body, len, text, sizeof(text));
	return cmk_fail(cmk_bao_status_code(status), "%s: %ld: %s", path, status, text);
}

/* ---- field access ---- */

/* Re-word a json.c failure as the server's: keep its detail, name the answer. */
static int bad_answer(const char *what, int rc)
{
	char why[512];

	if (rc == CMK_ERR_NOMEM)
		return rc;
	snprintf(why, sizeof(why), "%s", cmk_errdetail());
	return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: %s", what, why);
}

/*
 * Parse a body that must be a JSON object.  *data (optional) is the "data"
 * object, borrowed from *root, NULL when it is null or absent.
 */
static int parse_root(const char *what, const char *body, size_t len, json_t **root, json_t **data)
{
	json_t *d;
	int rc;

	*root = NULL;
	if (len == 0 || body == NULL)
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: empty body", what);
	if ((rc = cmk_json_parse(what, body, len, root)) != 0)
		return bad_answer(what, rc);
	if (!json_is_object(*root)) {
		json_decref(*root);
		*root = NULL;
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: not a JSON object", what);
	}
	if (data == NULL)
		return 0;
	d = json_object_get(*root, "data");
	if (d != NULL && !json_is_null(d) && !json_is_object(d)) {
		json_decref(*root);
		*root = NULL;
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: field \"data\" must be an object", what);
	}
	*data = json_is_object(d) ? d : NULL;
	return 0;
}

/* Same, but the answer is useless without data. */
static int parse_data(const char *what, const char *body, size_t len, json_t **root, json_t **data)
{
	int rc;

	if ((rc = parse_root(what, body, len, root, data)) != 0)
		return rc;
	if (*data == NULL) {
		json_decref(*root);
		*root = NULL;
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: no data", what);
	}
	return 0;
}

/* Copy a string field.  Optional and absent: 0 with *out untouched. */
static int get_str(const char *what, const json_t *obj, const char *key, bool required, char **out)
{
	const char *s;
	int rc = cmk_json_str_opt(obj, key, &s);

	if (rc == CMK_ERR_NOTFOUND && !required)
		return 0;
	if (rc != 0)
		return bad_answer(what, rc);
	if ((*out = strdup(s)) == NULL)
		return CMK_ERR_NOMEM;
	return 0;
}

/* Copy a string field into a fixed buffer; a value that does not fit is not one the server sends. */
static int get_str_buf(const char *what, const json_t *obj, const char *key, char *buf, size_t size)
{
	const char *s;
	int rc = cmk_json_str_opt(obj, key, &s);

	if (rc == CMK_ERR_NOTFOUND)
		return 0;
	if (rc != 0)
		return bad_answer(what, rc);
	if (strlen(s) >= size)
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: field \"%s\" is too long", what, key);
	memcpy(buf, s, strlen(s) + 1);
	return 0;
}

/* Integer field.  Optional and absent: 0 with *out untouched (the caller's default). */
static int get_int(const char *what, const json_t *obj, const char *key, bool required, int64_t *out)
{
	int rc = cmk_json_int_opt(obj, key, out);

	if (rc == CMK_ERR_NOTFOUND && !required)
		return 0;
	return rc == 0 ? 0 : bad_answer(what, rc);
}

/* Boolean field, optional: absent keeps the caller's default. */
static int get_bool(const char *what, const json_t *obj, const char *key, bool *out)
{
	int rc = cmk_json_bool_opt(obj, key, out);

	return rc == 0 || rc == CMK_ERR_NOTFOUND ? 0 : bad_answer(what, rc);
}

/*
 * jansson frees its strings without wiping them.  A string value's bytes
 * belong to its json_t and are not hashed, so they can be overwritten in
 * place before the tree is released.
 */
static void wipe_field(const json_t *obj, const char *key)
{
	json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

	if (json_is_string(v))
		cmk_wipe((char *)json_string_value(v), json_string_length(v));
}

/* Every element of an array must be a string; returns the count or -1. */
static long string_array_len(const json_t *arr)
{
	size_t i;
	json_t *e;

	json_array_foreach(arr, i, e) {
		if (!json_is_string(e))
			return -1;
	}
	return (long)json_array_size(arr);
}

/* A PEM chain: a list of PEM strings joined with "\n", or one string as cert/ca_chain gives it. */
static int get_chain(const char *what, const json_t *obj, const char *key, char **out)
{
	json_t *v = json_object_get(obj, key), *e;
	size_t total = 0, i, off = 0;
	char *s;

	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_string(v))
		return (*out = strdup(json_string_value(v))) == NULL ? CMK_ERR_NOMEM : 0;
	if (!json_is_array(v) || string_array_len(v) < 0)
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: field \"%s\" must be a list of PEM strings", what, key);
	json_array_foreach(v, i, e)
		total += json_string_length(e) + 1;
	if ((s = malloc(total + 1)) == NULL)
		return CMK_ERR_NOMEM;
	json_array_foreach(v, i, e) {
		if (i > 0)
			s[off++] = '\n';
		memcpy(s + off, json_string_value(e), json_string_length(e));
		off += json_string_length(e);
	}
	s[off] = '\0';
	*out = s;
	return 0;
}

/* A list of strings (null or absent = none) into a malloc'd array. */
static int get_strings(const char *what, const json_t *obj, const char *key, char ***items, size_t *count)
{
	json_t *v = json_object_get(obj, key), *e;
	long n;
	size_t i;

	*items = NULL;
	*count = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v) || (n = string_array_len(v)) < 0)
		return cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: field \"%s\" must be a list of strings", what, key);
	if (n == 0)
		return 0;
	if ((*items = calloc((size_t)n, sizeof(char *))) == NULL)
		return CMK_ERR_NOMEM;
	json_array_foreach(v, i, e) {
		if (((*items)[i] = strdup(json_string_value(e))) == NULL)
			return CMK_ERR_NOMEM;
		(*count)++;
	}
	return 0;
}

/*
 * Warnings are null or a list of strings; the docs' samples show "" (stale),
 * read as none, and a lone string as one warning.
 */
static int get_warnings(const char *what, const json_t *root, struct cmk_bao_warnings *w)
{
	json_t *v = json_object_get(root, "warnings");

	if (json_is_string(v)) {
		if (json_string_length(v) == 0)
			return 0;
		if ((w->items = calloc(1, sizeof(char *))) == NULL ||
		    (w->items[0] = strdup(json_string_value(v))) == NULL)
			return CMK_ERR_NOMEM;
		w->count = 1;
		return 0;
	}
	return get_strings(what, root, "warnings", &w->items, &w->count);
}

/* ---- success answers ---- */

int cmk_bao_parse_health(const char *body, size_t len, struct cmk_bao_health *out)
{
	const char *what = "sys/health answer";
	json_t *root = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = parse_root(what, body, len, &root, NULL)) != 0)
		return rc;
	if ((rc = cmk_json_bool(root, "initialized", &out->initialized)) != 0 ||
	    (rc = cmk_json_bool(root, "sealed", &out->sealed)) != 0) {
		rc = bad_answer(what, rc);
		goto out;
	}
	if ((rc = get_bool(what, root, "standby", &out->standby)) == 0)
		rc = get_str_buf(what, root, "version", out->version, sizeof(out->version));
out:
	json_decref(root);
	if (rc != 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

/* A token goes into a request header: only visible ASCII keeps that header intact. */
static bool is_header_safe(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s <= ' ' || *s > '~')
			return false;
	}
	return true;
}

int cmk_bao_parse_auth(const char *body, size_t len, struct cmk_bao_auth *out)
{
	const char *what = "login answer";
	json_t *root = NULL, *auth;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = parse_root(what, body, len, &root, NULL)) != 0)
		return rc;
	auth = json_object_get(root, "auth");
	if (!json_is_object(auth)) {
		rc = cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: no auth block", what);
		goto out;
	}
	if ((rc = get_str(what, auth, "client_token", true, &out->client_token)) != 0 ||
	    (rc = get_int(what, auth, "lease_duration", true, &out->lease_duration)) != 0 ||
	    (rc = get_bool(what, auth, "renewable", &out->renewable)) != 0 ||
	    (rc = get_warnings(what, root, &out->warnings)) != 0)
		goto out;
	if (out->client_token[0] == '\0' || !is_header_safe(out->client_token)) {
		rc = cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: client_token is empty or not printable", what);
		goto out;
	}
	if (out->lease_duration < 0)
		rc = cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: negative lease_duration", what);
out:
	wipe_field(auth, "client_token");
	json_decref(root);
	if (rc != 0)
		cmk_bao_auth_clear(out);
	return rc;
}

/* Policies joined with ","; a list too long for the buffer ends in "...". */
static void join_policies(const json_t *data, char *buf, size_t size)
{
	json_t *v = json_object_get(data, "policies"), *e;
	size_t i, used = 0, n;

	buf[0] = '\0';
	json_array_foreach(v, i, e) {
		if (!json_is_string(e))
			continue;
		n = json_string_length(e) + (used ? 1 : 0);
		if (used + n + 4 >= size) {
			snprintf(buf + used, size - used, "%s...", used ? "," : "");
			return;
		}
		used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "," : "", json_string_value(e));
	}
}

int cmk_bao_parse_lookup(const char *body, size_t len, struct cmk_bao_token_info *out, int64_t *creation_ttl)
{
	const char *what = "token lookup answer";
	json_t *root = NULL, *data = NULL;
	int64_t created = -1;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = parse_data(what, body, len, &root, &data)) != 0)
		return rc;
	if ((rc = get_int(what, data, "ttl", true, &out->ttl)) != 0 ||
	    (rc = get_bool(what, data, "renewable", &out->renewable)) != 0 ||
	    (rc = get_str_buf(what, data, "accessor", out->accessor, sizeof(out->accessor))) != 0 ||
	    (rc = get_int(what, data, "creation_ttl", false, &created)) != 0)
		goto out;
	if (out->ttl < 0) {
		rc = cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: negative ttl", what);
		goto out;
	}
	join_policies(data, out->policies, sizeof(out->policies));
	if (creation_ttl != NULL)
		*creation_ttl = created >= 0 ? created : out->ttl;
out:
	/* lookup-self echoes the token itself as "id". */
	wipe_field(data, "id");
	json_decref(root);
	if (rc != 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

int cmk_bao_parse_cert(const char *body, size_t len, bool with_key, struct cmk_bao_cert *out)
{
	const char *what = with_key ? "issue answer" : "sign answer";
	json_t *root = NULL, *data = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = parse_data(what, body, len, &root, &data)) != 0)
		return rc;
	if ((rc = get_str(what, data, "certificate", true, &out->certificate)) != 0 ||
	    (rc = get_str(what, data, "serial_number", true, &out->serial_number)) != 0 ||
	    (rc = get_str(what, data, "issuing_ca", false, &out->issuing_ca)) != 0 ||
	    (rc = get_chain(what, data, "ca_chain", &out->ca_chain)) != 0 ||
	    (rc = get_int(what, data, "not_before", false, &out->not_before)) != 0 ||
	    (rc = get_int(what, data, "expiration", false, &out->expiration)) != 0 ||
	    (rc = get_warnings(what, root, &out->warnings)) != 0)
		goto out;
	if (with_key && ((rc = get_str(what, data, "private_key", true, &out->private_key)) != 0 ||
			 (rc = get_str(what, data, "private_key_type", false, &out->private_key_type)) != 0))
		goto out;
	/* ca_chain is omitted when the chain would be empty; the issuing CA is then the whole chain. */
	if (out->ca_chain == NULL && out->issuing_ca != NULL && (out->ca_chain = strdup(out->issuing_ca)) == NULL)
		rc = CMK_ERR_NOMEM;
out:
	wipe_field(data, "private_key");
	json_decref(root);
	if (rc != 0)
		cmk_bao_cert_clear(out);
	return rc;
}

int cmk_bao_parse_revocation(long status, const char *body, size_t len, struct cmk_bao_revocation *out)
{
	const char *what = "revoke answer";
	json_t *root = NULL, *data = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (status == 204)
		return 0;
	if ((rc = parse_root(what, body, len, &root, &data)) != 0)
		return rc;
	if ((rc = get_warnings(what, root, &out->warnings)) != 0)
		goto out;
	/* data null with a warning: the server refused (an expired certificate); nothing was revoked. */
	if (data == NULL)
		goto out;
	snprintf(out->state, sizeof(out->state), "revoked");
	if ((rc = get_int(what, data, "revocation_time", true, &out->revocation_time)) != 0 ||
	    (rc = get_str_buf(what, data, "state", out->state, sizeof(out->state))) != 0)
		goto out;
	out->revoked = true;
out:
	json_decref(root);
	if (rc != 0)
		cmk_bao_revocation_clear(out);
	return rc;
}

int cmk_bao_parse_role(const char *body, size_t len, struct cmk_bao_role *out)
{
	const char *what = "role answer";
	json_t *root = NULL, *data = NULL;
	int64_t bits = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = parse_data(what, body, len, &root, &data)) != 0)
		return rc;
	/* Defaults of a role created without these fields (reference §4.6). */
	out->client_flag = true;
	out->use_csr_common_name = true;
	out->use_csr_sans = true;
	if ((rc = get_str_buf(what, data, "key_type", out->key_type, sizeof(out->key_type))) != 0 ||
	    (rc = get_int(what, data, "key_bits", false, &bits)) != 0 ||
	    (rc = get_int(what, data, "ttl", false, &out->ttl)) != 0 ||
	    (rc = get_int(what, data, "max_ttl", false, &out->max_ttl)) != 0 ||
	    (rc = get_bool(what, data, "client_flag", &out->client_flag)) != 0 ||
	    (rc = get_bool(what, data, "no_store", &out->no_store)) != 0 ||
	    (rc = get_bool(what, data, "use_csr_common_name", &out->use_csr_common_name)) != 0 ||
	    (rc = get_bool(what, data, "use_csr_sans", &out->use_csr_sans)) != 0 ||
	    (rc = get_bool(what, data, "allow_any_name", &out->allow_any_name)) != 0 ||
	    (rc = get_bool(what, data, "allow_glob_domains", &out->allow_glob_domains)) != 0 ||
	    (rc = get_bool(what, data, "allow_subdomains", &out->allow_subdomains)) != 0 ||
	    (rc = get_bool(what, data, "allow_bare_domains", &out->allow_bare_domains)) != 0 ||
	    (rc = get_strings(what, data, "allowed_domains", &out->allowed_domains, &out->n_allowed_domains)) != 0)
		goto out;
	if (out->key_type[0] == '\0') {
		rc = cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: missing field \"key_type\"", what);
		goto out;
	}
	if (bits < 0 || bits > 65536 || out->ttl < 0 || out->max_ttl < 0) {
		rc = cmk_fail(CMK_ERR_PROTOCOL, "OpenBao %s: key_bits, ttl or max_ttl out of range", what);
		goto out;
	}
	out->key_bits = (int)bits;
out:
	json_decref(root);
	if (rc != 0)
		cmk_bao_role_clear(out);
	return rc;
}

int cmk_bao_parse_ca_chain(const char *body, size_t len, char **chain)
{
	const char *what = "ca_chain answer";
	json_t *root = NULL, *data = NULL;
	int rc;

	*chain = NULL;
	if ((rc = parse_data(what, body, len, &root, &data)) != 0)
		return rc;
	if ((rc = get_chain(what, data, "ca_chain", chain)) == 0 && *chain == NULL && (*chain = strdup("")) == NULL)
		rc = CMK_ERR_NOMEM;
	json_decref(root);
	return rc;
}

int cmk_bao_parse_cert_read(const char *body, size_t len, char **pem, int64_t *revocation_time)
{
	const char *what = "certificate answer";
	json_t *root = NULL, *data = NULL;
	int64_t when = 0;
	int rc;

	*pem = NULL;
	if ((rc = parse_data(what, body, len, &root, &data)) != 0)
		return rc;
	if ((rc = get_str(what, data, "certificate", true, pem)) != 0 ||
	    (rc = get_int(what, data, "revocation_time", false, &when)) != 0) {
		free(*pem);
		*pem = NULL;
	} else if (revocation_time != NULL) {
		*revocation_time = when;
	}
	json_decref(root);
	return rc;
}
