/*
 * names.c - the gate every externally supplied name passes before it
 * becomes part of a file path, a database key or an OpenBao request path
 * (DESIGN §3).  A name that fails here must not change any state, so each
 * check says which field is wrong and exactly why, and shows the bad value
 * only through cmk_quote(): a tenant id can arrive from a JSON request or a
 * command line and may hold newlines or terminal escapes.
 *
 * Character classes are spelled out in ASCII rather than taken from
 * <ctype.h>, whose answers depend on the locale.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/names.h"
#include "cmkcert/util.h"

#define HOST_LABEL_MAX 63
#define IPV6_TEXT_MAX 45        /* INET6_ADDRSTRLEN without the NUL */

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_lower(unsigned char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_alnum(unsigned char c)
{
	return is_digit(c) || is_lower(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_tenant_char(unsigned char c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '~' || c == '-';
}

static bool is_type_char(unsigned char c)
{
	return is_lower(c) || is_digit(c) || c == '_';
}

/* Letters, digits and . _ - : what OpenBao role names and mount path segments may hold here. */
static bool is_bao_char(unsigned char c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '-';
}

static bool all_chars(const char *s, size_t len, bool (*ok)(unsigned char))
{
	for (size_t i = 0; i < len; i++)
		if (!ok((unsigned char)s[i]))
			return false;
	return true;
}

static bool is_dot_or_dotdot(const char *s, size_t len)
{
	return (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');
}

void cmk_quote(const char *s, char out[CMK_QUOTE_SIZE])
{
	size_t len;

	if (s == NULL)
		s = "";
	len = strnlen(s, CMK_QUOTE_SHOWN + 1);
	/* Names are ASCII by rule: any other byte is shown as \xNN so the message says exactly what was given. */
	cmk_escape(out, CMK_QUOTE_SIZE, s, len > CMK_QUOTE_SHOWN ? CMK_QUOTE_SHOWN : len,
		   CMK_ESCAPE_QUOTES | CMK_ESCAPE_ASCII);
	if (len > CMK_QUOTE_SHOWN)
		strcat(out, "...");
}

/*
 * The tenant and type checks share one shape: the bool predicate and the
 * check with a message must never disagree, so both call the same function.
 */
enum name_problem { NAME_OK, NAME_EMPTY, NAME_TOO_LONG, NAME_BAD_CHAR, NAME_RESERVED };

static enum name_problem tenant_problem(const char *t, size_t *len)
{
	*len = t == NULL ? 0 : strlen(t);
	if (*len == 0)
		return NAME_EMPTY;
	if (*len > CMK_TENANT_MAX)
		return NAME_TOO_LONG;
	if (!all_chars(t, *len, is_tenant_char))
		return NAME_BAD_CHAR;
	/* "." and ".." would name a directory, not a tenant, in every path built from the id. */
	if (is_dot_or_dotdot(t, *len))
		return NAME_RESERVED;
	return NAME_OK;
}

static enum name_problem type_problem(const char *t, size_t *len)
{
	*len = t == NULL ? 0 : strlen(t);
	if (*len == 0)
		return NAME_EMPTY;
	if (*len > CMK_TYPE_MAX)
		return NAME_TOO_LONG;
	if (!all_chars(t, *len, is_type_char))
		return NAME_BAD_CHAR;
	return NAME_OK;
}

bool cmk_is_valid_tenant(const char *tenant)
{
	size_t len;

	return tenant_problem(tenant, &len) == NAME_OK;
}

bool cmk_is_valid_type(const char *type)
{
	size_t len;

	return type_problem(type, &len) == NAME_OK;
}

int cmk_check_tenant(const char *field, const char *tenant)
{
	char q[CMK_QUOTE_SIZE];
	size_t len;

	switch (tenant_problem(tenant, &len)) {
	case NAME_OK:
		return 0;
	case NAME_EMPTY:
		return cmk_fail(CMK_ERR_INVALID, "%s: must not be empty", field);
	case NAME_TOO_LONG:
		return cmk_fail(CMK_ERR_INVALID, "%s: %zu characters, at most %d", field, len, CMK_TENANT_MAX);
	case NAME_BAD_CHAR:
		cmk_quote(tenant, q);
		return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": may only contain letters, digits and . _ ~ -", field, q);
	case NAME_RESERVED:
		cmk_quote(tenant, q);
		return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": not allowed", field, q);
	}
	return cmk_fail(CMK_ERR_INTERNAL, "%s: unexpected validation result", field);
}

int cmk_check_type(const char *field, const char *type)
{
	char q[CMK_QUOTE_SIZE];
	size_t len;

	switch (type_problem(type, &len)) {
	case NAME_OK:
		return 0;
	case NAME_EMPTY:
		return cmk_fail(CMK_ERR_INVALID, "%s: must not be empty", field);
	case NAME_TOO_LONG:
		return cmk_fail(CMK_ERR_INVALID, "%s: %zu characters, at most %d", field, len, CMK_TYPE_MAX);
	case NAME_BAD_CHAR:
		cmk_quote(type, q);
		return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": may only contain a-z, 0-9 and _", field, q);
	case NAME_RESERVED:
		break;
	}
	return cmk_fail(CMK_ERR_INTERNAL, "%s: unexpected validation result", field);
}

int cmk_check_role_name(const char *field, const char *role)
{
	char q[CMK_QUOTE_SIZE];
	size_t len = role == NULL ? 0 : strlen(role);

	if (len == 0)
		return cmk_fail(CMK_ERR_INVALID, "%s: must not be empty", field);
	if (len > CMK_BAO_NAME_MAX)
		return cmk_fail(CMK_ERR_INVALID, "%s: %zu characters, at most %d", field, len, CMK_BAO_NAME_MAX);
	cmk_quote(role, q);
	if (!all_chars(role, len, is_bao_char))
		return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": may only contain letters, digits and . _ -", field, q);
	/* The role becomes a URL path segment, where ".." would climb out of the mount. */
	if (is_dot_or_dotdot(role, len))
		return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": not allowed", field, q);
	return 0;
}

int cmk_check_mount_path(const char *field, const char *path)
{
	char q[CMK_QUOTE_SIZE];
	size_t len = path == NULL ? 0 : strlen(path);
	const char *seg;

	if (len == 0)
		return cmk_fail(CMK_ERR_INVALID, "%s: must not be empty", field);
	if (len > CMK_BAO_NAME_MAX)
		return cmk_fail(CMK_ERR_INVALID, "%s: %zu characters, at most %d", field, len, CMK_BAO_NAME_MAX);
	cmk_quote(path, q);
	if (path[0] == '/' || path[len - 1] == '/')
		return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": must not start or end with '/'", field, q);
	for (seg = path; *seg != '\0';) {
		size_t n = strcspn(seg, "/");

		if (n == 0)
			return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": empty path segment (\"//\")", field, q);
		if (!all_chars(seg, n, is_bao_char))
			return cmk_fail(CMK_ERR_INVALID,
					"%s \"%s\": may only contain letters, digits, . _ - and '/' between segments",
					field, q);
		if (is_dot_or_dotdot(seg, n))
			return cmk_fail(CMK_ERR_INVALID, "%s \"%s\": \".\" and \"..\" segments are not allowed",
					field, q);
		seg += n;
		if (*seg == '/')
			seg++;
	}
	return 0;
}

/*
 * What is wrong with a DNS name or IPv4 literal (labels of letters, digits
 * and '-', a trailing dot allowed), or NULL when nothing is.
 */
static const char *hostname_problem(const char *h, size_t len)
{
	size_t start = 0;

	if (len == 0)
		return "empty host";
	if (len > CMK_HOST_MAX)
		return "the host is longer than 253 characters (at most 253)";
	if (memchr(h, ':', len) != NULL)
		return "an IPv6 address must be in brackets, as in [::1]:5696";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];

		if (!is_alnum(c) && c != '-' && c != '.')
			return "the host may only contain letters, digits, '-' and '.'";
	}
	while (start < len) {
		const char *dot = memchr(h + start, '.', len - start);
		size_t n = dot == NULL ? len - start : (size_t)(dot - (h + start));

		if (n == 0)
			return "empty label in the host name";
		if (n > HOST_LABEL_MAX)
			return "a host name label longer than 63 characters";
		if (h[start] == '-' || h[start + n - 1] == '-')
			return "a host name label starts or ends with '-'";
		start += n + 1;
	}
	return NULL;
}

static int check_hostname(const char *q, const char *h, size_t len)
{
	const char *why = hostname_problem(h, len);

	return why == NULL ? 0 : cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": %s", q, why);
}

bool cmk_is_valid_hostname(const char *name)
{
	return name != NULL && hostname_problem(name, strlen(name)) == NULL;
}

static int check_ipv6(const char *q, const char *h, size_t len)
{
	char text[IPV6_TEXT_MAX + 1];
	struct in6_addr addr;

	if (len == 0)
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": empty host", q);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];

		if (!is_hex(c) && c != ':' && c != '.')
			return cmk_fail(CMK_ERR_INVALID,
					"endpoint \"%s\": an address in brackets may only contain hex digits, ':' and '.'",
					q);
	}
	if (len > IPV6_TEXT_MAX)
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": not an IPv6 address", q);
	memcpy(text, h, len);
	text[len] = '\0';
	if (inet_pton(AF_INET6, text, &addr) != 1)
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": not an IPv6 address", q);
	return 0;
}

static int parse_port(const char *q, const char *p, uint16_t *port)
{
	size_t len = strlen(p);
	unsigned long v = 0;

	if (len == 0)
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": missing port (expected HOST:PORT)", q);
	if (!all_chars(p, len, is_digit))
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": the port is not a number", q);
	/* Six digits or more cannot be a port; stop before the value could overflow. */
	for (size_t i = 0; i < len && v <= 65535; i++)
		v = v * 10 + (unsigned long)(p[i] - '0');
	if (v == 0 || v > 65535)
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": the port must be 1 to 65535", q);
	*port = (uint16_t)v;
	return 0;
}

int cmk_parse_endpoint(const char *endpoint, char host[CMK_HOST_MAX + 1], uint16_t *port)
{
	char q[CMK_QUOTE_SIZE];
	const char *h, *colon;
	size_t hlen;
	int rc;

	cmk_quote(endpoint, q);
	if (endpoint == NULL || *endpoint == '\0')
		return cmk_fail(CMK_ERR_INVALID, "endpoint \"\": empty (expected HOST:PORT)");
	if (endpoint[0] == '[') {
		const char *close = strchr(endpoint, ']');

		if (close == NULL)
			return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": missing ']' after the IPv6 address", q);
		h = endpoint + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
		if (*colon != ':')
			return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": missing port (expected [ADDRESS]:PORT)", q);
		rc = check_ipv6(q, h, hlen);
	} else {
		colon = strrchr(endpoint, ':');
		if (colon == NULL)
			return cmk_fail(CMK_ERR_INVALID, "endpoint \"%s\": missing port (expected HOST:PORT)", q);
		h = endpoint;
		hlen = (size_t)(colon - h);
		rc = check_hostname(q, h, hlen);
	}
	if (rc == 0)
		rc = parse_port(q, colon + 1, port);
	if (rc != 0)
		return rc;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	return 0;
}

bool cmk_split_tenant_type(const char *name, size_t len, char tenant[CMK_TENANT_MAX + 1],
			   char type[CMK_TYPE_MAX + 1])
{
	const char *dash;
	size_t tlen, ylen;

	tenant[0] = '\0';
	type[0] = '\0';
	/* A NUL inside the span would let a longer, invalid name pass as its valid prefix. */
	if (name == NULL || memchr(name, '\0', len) != NULL)
		return false;
	/* Types never contain '-', so the last one is the separator even when the tenant has several. */
	dash = memrchr(name, '-', len);
	if (dash == NULL)
		return false;
	tlen = (size_t)(dash - name);
	ylen = len - tlen - 1;
	if (tlen == 0 || tlen > CMK_TENANT_MAX || ylen == 0 || ylen > CMK_TYPE_MAX)
		return false;
	memcpy(tenant, name, tlen);
	tenant[tlen] = '\0';
	memcpy(type, dash + 1, ylen);
	type[ylen] = '\0';
	if (!cmk_is_valid_tenant(tenant) || !cmk_is_valid_type(type)) {
		tenant[0] = '\0';
		type[0] = '\0';
		return false;
	}
	return true;
}
