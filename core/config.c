/*
 * config.c - loading cmkcert.conf (DESIGN §4, cmkcert.conf(5)); the only
 * file that includes <ini.h>.
 *
 * inih splits lines into sections, keys and values; everything else is
 * ours.  We hand inih the file through our own line reader, which gives us
 * what inih cannot:
 *   - the line number of every key (inih's handler is built without one);
 *   - every section header, also of sections without keys, so a duplicate
 *     or unknown section is caught and a missing key can be reported at the
 *     line of its section;
 *   - refusal of lines longer than inih's buffer, which inih would
 *     otherwise silently cut in two and parse the rest as a new line;
 *   - no continuation lines: indentation is removed before inih sees a
 *     line, so an indented "key = value" is never glued onto the key above.
 *
 * Each section's keys are described by a table (name, parser, where the
 * value goes, limits).  Loading stops at the first error, and the caller
 * gets either a complete configuration or nothing.
 */
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "cmkcert/config.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/util.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define MAX_KEYS 16                  /* keys a section may have */
#define SECTION_NAME_MAX 48          /* "template:" + 32 or "tenant:" + 40; inih keeps 49 */
#define MASTER_KEY_LEN 32
#define ID_LOOKUP_BUF_MAX (1 << 20)  /* getpwnam_r/getgrnam_r buffer limit */
#define PLACEHOLDER "{tenant_id}"
#define DEFAULT_JWT_PATH "/var/run/secrets/kubernetes.io/serviceaccount/token"

#define MINUTE INT64_C(60)
#define HOUR INT64_C(3600)
#define DAY INT64_C(86400)
#define DURATION_MAX (36500 * DAY)   /* a hundred years: longer is a typo */

/* Accepted words, indexed by the enum value they stand for. */
static const char *const mode_words[] = {
	[CMK_MODE_SIGN] = "sign", [CMK_MODE_ISSUE] = "issue", [CMK_MODE_ISSUE + 1] = NULL,
};
static const char *const method_words[] = {
	[CMK_AUTH_KUBERNETES] = "kubernetes", [CMK_AUTH_APPROLE] = "approle", [CMK_AUTH_TOKEN] = "token",
	[CMK_AUTH_TOKEN + 1] = NULL,
};
static const char *const verify_words[] = {
	[CMK_VERIFY_TLS] = "tls", [CMK_VERIFY_KMIP] = "kmip", [CMK_VERIFY_NONE] = "none",
	[CMK_VERIFY_NONE + 1] = NULL,
};
static const char *const key_type_words[] = {
	[CMK_KEY_RSA] = "rsa", [CMK_KEY_EC] = "ec", [CMK_KEY_EC + 1] = NULL,
};

struct loader;
struct key_spec;

/*
 * A value parser: checks `value` and stores it in `field` (whose type each
 * parser names).  Errors go through bad() and friends, which record the
 * first failure in the loader.
 */
typedef int (*parse_fn)(struct loader *ld, const struct key_spec *k, const char *value, void *field);

#define KEY_REQUIRED 0x1u
#define KEY_MAY_BE_EMPTY 0x2u

struct key_spec {
	const char *name;
	parse_fn parse;
	size_t offset;       /* of the field in the section's struct */
	unsigned flags;      /* KEY_* */
	int64_t min, max;    /* for numbers and durations */
};

enum section_kind { SEC_FIXED, SEC_TENANT, SEC_TEMPLATE };

struct section_spec {
	const char *name;    /* "openbao"; for the repeated kinds the prefix "tenant:" or "template:" */
	enum section_kind kind;
	const struct key_spec *keys;
	size_t n_keys;
	bool required;
	int (*finish)(struct loader *ld);   /* checks across keys, once the section is read; or NULL */
};

struct loader {
	const char *file;                   /* as given: every message starts with it */
	char *dir;                          /* absolute directory of the file, for relative paths */
	FILE *fp;
	char *buf;                          /* getline() buffer */
	size_t cap;
	int line;                           /* the line inih is working on */
	int rc;                             /* first error, 0 while there is none */
	int err_line;
	struct cmk_config *cfg;
	/* The section being read. */
	const struct section_spec *sec;
	char sec_raw[SECTION_NAME_MAX + 1]; /* as inih reports it */
	char sec_name[CMK_QUOTE_SIZE];      /* as messages show it */
	int sec_line;
	int key_line[MAX_KEYS];             /* line of each of sec's keys, 0 when absent */
	const char *key;                    /* key being parsed */
	int fixed_line[16];                 /* header line of each fixed section seen, 0 when absent */
	bool control_off;                   /* [control] socket = none */
};

/* ---- messages ---------------------------------------------------------- */

static int vfail_at(struct loader *ld, int line, const char *section, const char *key, const char *fmt,
		    va_list ap) __attribute__((format(printf, 5, 0)));
static int fail_at(struct loader *ld, int line, const char *section, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int bad(struct loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Record the first error as "FILE:LINE: [section] key: message".  Line 0
 * means the whole file ("FILE: ..."); section and key may be NULL.
 */
static int vfail_at(struct loader *ld, int line, const char *section, const char *key, const char *fmt,
		    va_list ap)
{
	char msg[768], subject[CMK_QUOTE_SIZE + 80] = "";

	if (ld->rc != 0)
		return ld->rc;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (section != NULL && key != NULL)
		snprintf(subject, sizeof(subject), "[%s] %s: ", section, key);
	else if (section != NULL)
		snprintf(subject, sizeof(subject), "[%s]: ", section);
	else if (key != NULL)
		snprintf(subject, sizeof(subject), "%s: ", key);
	if (line > 0)
		ld->rc = cmk_fail(CMK_ERR_CONFIG, "%s:%d: %s%s", ld->file, line, subject, msg);
	else
		ld->rc = cmk_fail(CMK_ERR_CONFIG, "%s: %s%s", ld->file, subject, msg);
	ld->err_line = line;
	return ld->rc;
}

static int fail_at(struct loader *ld, int line, const char *section, const char *key, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_at(ld, line, section, key, fmt, ap);
	va_end(ap);
	return rc;
}

/* The value of the key being parsed is wrong. */
static int bad(struct loader *ld, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_at(ld, ld->line, ld->sec_name, ld->key, fmt, ap);
	va_end(ap);
	return rc;
}

/* Wrap the detail a helper (duration parser, file check) left behind. */
static int bad_detail(struct loader *ld)
{
	char detail[512];

	/* Copy first: cmk_fail() is about to overwrite the buffer cmk_errdetail() points into. */
	snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
	return bad(ld, "%s", detail);
}

/* The same for a detail that already starts with the key name (the cmk_check_* family). */
static int bad_named(struct loader *ld, int line)
{
	char detail[512];

	snprintf(detail, sizeof(detail), "%s", cmk_errdetail());
	return fail_at(ld, line, NULL, NULL, "[%s] %s", ld->sec_name, detail);
}

static int nomem(struct loader *ld)
{
	if (ld->rc == 0) {
		ld->rc = cmk_fail(CMK_ERR_NOMEM, "%s: out of memory", ld->file);
		ld->err_line = ld->line;
	}
	return ld->rc;
}

/* ---- value parsers ----------------------------------------------------- */

static void free_list(char **items, size_t n);
static int split_list(struct loader *ld, const char *value, char ***items, size_t *n_items);
static int lookup_user(const char *name, char *buf, size_t size, unsigned *id, bool *found);
static int lookup_group(const char *name, char *buf, size_t size, unsigned *id, bool *found);
static int parse_id(struct loader *ld, const char *value, const char *what,
		    int (*lookup)(const char *, char *, size_t, unsigned *, bool *), unsigned *id);

static bool is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static int store_string(struct loader *ld, const char *value, void *field)
{
	char *copy = strdup(value);

	if (copy == NULL)
		return nomem(ld);
	*(char **)field = copy;
	return 0;
}

/* field: char *.  A path; a relative one is taken from the configuration file's directory. */
static int parse_path(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char *path;

	(void)k;
	path = value[0] == '/' ? strdup(value) : cmk_asprintf("%s/%s", ld->dir, value);
	if (path == NULL)
		return nomem(ld);
	*(char **)field = path;
	return 0;
}

/* field: char *.  A path to a 32-byte file that only its owner (root or us) may read. */
static int parse_master_key(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	struct stat sb;
	const char *path;
	int rc = parse_path(ld, k, value, field);

	if (rc != 0)
		return rc;
	path = *(char **)field;
	/* Size, owner and mode all come from one stat of the file the path leads to, links followed. */
	if (cmk_stat_secret_file(path, &sb) != 0)
		return bad_detail(ld);
	if (sb.st_size != MASTER_KEY_LEN)
		return bad(ld, "%s: %lld bytes, must be exactly %d", path, (long long)sb.st_size, MASTER_KEY_LEN);
	return 0;
}

/* Does "HOST:PORT" or "[ADDRESS]:PORT" (of `len` bytes) name a port?  The colons of an IPv6 address do not count. */
static bool authority_has_port(const char *a, size_t len)
{
	const char *close = memchr(a, ']', len);
	const char *from = close != NULL ? close : a;

	return memchr(from, ':', len - (size_t)(from - a)) != NULL;
}

/*
 * field: char *.  "https://HOST[:PORT]", stored without trailing slashes.
 * Messages show at most the host and port, and only once a user name or
 * password ("user:pass@host") has been ruled out.
 */
static int parse_address(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	static const char scheme[] = "https://";
	char host[CMK_HOST_MAX + 1], *endpoint, *address;
	const char *authority = value + sizeof(scheme) - 1;
	size_t alen;
	uint16_t port;
	int rc;

	(void)k;
	/* TLS to OpenBao is always verified against ca_cert; there is no plain-HTTP mode. */
	if (strncmp(value, scheme, sizeof(scheme) - 1) != 0)
		return bad(ld, "must start with https://");
	alen = strcspn(authority, "/");
	if (authority[alen + strspn(authority + alen, "/")] != '\0')
		return bad(ld, "must be https://HOST[:PORT] without a path");
	if (memchr(authority, '@', alen) != NULL)
		return bad(ld, "must not contain a user name or password");
	if (memchr(authority, '?', alen) != NULL || memchr(authority, '#', alen) != NULL)
		return bad(ld, "must be https://HOST[:PORT] without a query or fragment");
	/* The host and port follow the keystore endpoint rules; a URL may leave out the port (443). */
	if (authority_has_port(authority, alen))
		endpoint = cmk_asprintf("%.*s", (int)alen, authority);
	else
		endpoint = cmk_asprintf("%.*s:443", (int)alen, authority);
	if (endpoint == NULL)
		return nomem(ld);
	rc = cmk_parse_endpoint(endpoint, host, &port);
	free(endpoint);
	if (rc != 0)
		return bad_detail(ld);
	if ((address = cmk_asprintf("https://%.*s", (int)alen, authority)) == NULL)
		return nomem(ld);
	*(char **)field = address;
	return 0;
}

/* field: char *.  An OpenBao mount or namespace path. */
static int parse_mount(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	if (cmk_check_mount_path(k->name, value) != 0)
		return bad_named(ld, ld->line);
	return store_string(ld, value, field);
}

/* field: char *.  An OpenBao role name. */
static int parse_role(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	if (cmk_check_role_name(k->name, value) != 0)
		return bad_named(ld, ld->line);
	return store_string(ld, value, field);
}

/* field: char *.  The sealing provider; "local" is the only one so far. */
static int parse_provider(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char q[CMK_QUOTE_SIZE];

	(void)k;
	if (strcmp(value, "local") != 0) {
		cmk_quote(value, q);
		return bad(ld, "\"%s\": unknown provider, the only one is local", q);
	}
	return store_string(ld, value, field);
}

/* field: int64_t, seconds.  A duration such as 30s, 10m, 8760h or 30d, within [min, max]. */
static int parse_duration(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char shown[32], limit[32];
	int64_t seconds;

	if (cmk_parse_duration(value, &seconds) != 0)
		return bad_detail(ld);
	cmk_format_duration(seconds, shown, sizeof(shown));
	if (seconds < k->min) {
		cmk_format_duration(k->min, limit, sizeof(limit));
		return bad(ld, "%s is too short, at least %s", shown, limit);
	}
	if (seconds > k->max) {
		cmk_format_duration(k->max, limit, sizeof(limit));
		return bad(ld, "%s is too long, at most %s", shown, limit);
	}
	*(int64_t *)field = seconds;
	return 0;
}

/* field: int.  A decimal number within [min, max]. */
static int parse_int(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char q[CMK_QUOTE_SIZE];
	long long v = LLONG_MAX;

	cmk_quote(value, q);
	if (!is_all_digits(value))
		return bad(ld, "\"%s\" is not a whole number", q);
	/* Longer digit strings are out of range anyway; skip them so strtoll cannot overflow. */
	if (strlen(value) <= 18)
		v = strtoll(value, NULL, 10);
	if (v < k->min || v > k->max)
		return bad(ld, "%s is out of range, must be %lld to %lld", q, (long long)k->min, (long long)k->max);
	*(int *)field = (int)v;
	return 0;
}

/* Index of `value` in a NULL-terminated word list, or -1 after reporting the choices. */
static int find_word(struct loader *ld, const char *const *words, const char *value)
{
	char q[CMK_QUOTE_SIZE], choices[128] = "";
	size_t n, used = 0;

	for (n = 0; words[n] != NULL; n++)
		if (strcmp(words[n], value) == 0)
			return (int)n;
	for (size_t i = 0; i < n; i++)
		used += (size_t)snprintf(choices + used, sizeof(choices) - used, "%s%s",
					 i == 0 ? "" : i + 1 == n ? " or " : ", ", words[i]);
	cmk_quote(value, q);
	bad(ld, "\"%s\": must be %s", q, choices);
	return -1;
}

/* field: enum cmk_mode. */
static int parse_bao_mode(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	int i = find_word(ld, mode_words, value);

	(void)k;
	if (i < 0)
		return ld->rc;
	*(enum cmk_mode *)field = (enum cmk_mode)i;
	return 0;
}

/* field: enum cmk_auth_method. */
static int parse_method(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	int i = find_word(ld, method_words, value);

	(void)k;
	if (i < 0)
		return ld->rc;
	*(enum cmk_auth_method *)field = (enum cmk_auth_method)i;
	return 0;
}

/* field: enum cmk_verify. */
static int parse_verify(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	int i = find_word(ld, verify_words, value);

	(void)k;
	if (i < 0)
		return ld->rc;
	*(enum cmk_verify *)field = (enum cmk_verify)i;
	return 0;
}

/* field: enum cmk_key_type. */
static int parse_key_type(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	int i = find_word(ld, key_type_words, value);

	(void)k;
	if (i < 0)
		return ld->rc;
	*(enum cmk_key_type *)field = (enum cmk_key_type)i;
	return 0;
}

/* getpwnam_r/getgrnam_r behind one shape: 0 or an errno, *found when the name exists. */
static int lookup_user(const char *name, char *buf, size_t size, unsigned *id, bool *found)
{
	struct passwd pw, *res = NULL;
	int err = getpwnam_r(name, &pw, buf, size, &res);

	*found = res != NULL;
	if (res != NULL)
		*id = (unsigned)pw.pw_uid;
	return err;
}

static int lookup_group(const char *name, char *buf, size_t size, unsigned *id, bool *found)
{
	struct group gr, *res = NULL;
	int err = getgrnam_r(name, &gr, buf, size, &res);

	*found = res != NULL;
	if (res != NULL)
		*id = (unsigned)gr.gr_gid;
	return err;
}

/*
 * A user or group (`what`) given by name or number.  (uid_t)-1 means "no
 * change" to chown() and is refused as a number.
 */
static int parse_id(struct loader *ld, const char *value, const char *what,
		    int (*lookup)(const char *, char *, size_t, unsigned *, bool *), unsigned *id)
{
	char q[CMK_QUOTE_SIZE], *buf = NULL;
	size_t size = 1024;
	bool found = false;
	int err;

	if (is_all_digits(value)) {
		unsigned long long v = strlen(value) > 10 ? UINT32_MAX : strtoull(value, NULL, 10);

		if (v >= UINT32_MAX)
			return bad(ld, "%s is out of range for a %s id", value, what);
		*id = (unsigned)v;
		return 0;
	}
	/* The entry must fit the caller's buffer; ERANGE asks for a bigger one. */
	for (;;) {
		char *grown = realloc(buf, size);

		if (grown == NULL) {
			free(buf);
			return nomem(ld);
		}
		buf = grown;
		err = lookup(value, buf, size, id, &found);
		if (err != ERANGE || size >= ID_LOOKUP_BUF_MAX)
			break;
		size *= 2;
	}
	free(buf);
	if (found)
		return 0;
	cmk_quote(value, q);
	if (err != 0)
		return bad(ld, "looking up %s \"%s\": %s", what, q, strerror(err));
	return bad(ld, "no %s \"%s\" on this system", what, q);
}

/* field: uid_t. */
static int parse_owner(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	unsigned id = 0;

	(void)k;
	if (parse_id(ld, value, "user", lookup_user, &id) != 0)
		return ld->rc;
	*(uid_t *)field = (uid_t)id;
	return 0;
}

/* field: gid_t. */
static int parse_group(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	unsigned id = 0;

	(void)k;
	if (parse_id(ld, value, "group", lookup_group, &id) != 0)
		return ld->rc;
	*(gid_t *)field = (gid_t)id;
	return 0;
}

/*
 * field: mode_t.  An octal file mode with read bits only (0400, 0440, 0444):
 * the tree is read-only, so write and execute bits could only mislead.
 */
static int parse_mode(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char q[CMK_QUOTE_SIZE];
	unsigned long mode;

	(void)k;
	cmk_quote(value, q);
	if (strlen(value) > 4 || strspn(value, "01234567") != strlen(value))
		return bad(ld, "\"%s\": must be an octal mode such as 0444", q);
	mode = strtoul(value, NULL, 8);
	if (mode > 0777)
		return bad(ld, "%s: setuid, setgid and sticky bits are not allowed", q);
	if ((mode & 0333) != 0)
		return bad(ld, "%s: only read bits (0444) are allowed, the file tree is read-only", q);
	if ((mode & 0400) == 0)
		return bad(ld, "%s: the owner must be able to read (0400)", q);
	*(mode_t *)field = (mode_t)mode;
	return 0;
}

/* field: char *.  The control socket's path, or "none" (no socket: the field stays NULL). */
static int parse_socket(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char q[CMK_QUOTE_SIZE];

	if (strcmp(value, "none") == 0) {
		ld->control_off = true;
		return 0;
	}
	if (parse_path(ld, k, value, field) != 0)
		return ld->rc;
	if (strlen(*(char **)field) > CMK_CONTROL_SOCKET_MAX) {
		cmk_quote(*(char **)field, q);
		free(*(char **)field);
		*(char **)field = NULL;
		return bad(ld, "\"%s\": a unix socket path has at most %d bytes", q, CMK_CONTROL_SOCKET_MAX);
	}
	return 0;
}

/*
 * field: mode_t.  The control socket file's mode: the owner reads and
 * writes (connecting needs write permission), group and others at most
 * the same, nothing executable.
 */
static int parse_socket_mode(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	char q[CMK_QUOTE_SIZE];
	unsigned long mode;

	(void)k;
	cmk_quote(value, q);
	if (strlen(value) > 4 || strspn(value, "01234567") != strlen(value))
		return bad(ld, "\"%s\": must be an octal mode such as 0660", q);
	mode = strtoul(value, NULL, 8);
	if (mode > 0777 || (mode & 0111) != 0)
		return bad(ld, "%s: only read and write bits (0666) are allowed", q);
	if ((mode & 0600) != 0600)
		return bad(ld, "%s: the owner must be able to read and write (0600)", q);
	*(mode_t *)field = (mode_t)mode;
	return 0;
}

/* field: unused ([control] allow).  Users by name or uid, groups as @name or @gid; may be empty. */
static int parse_allow(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	struct cmk_config *c = ld->cfg;
	char **items;
	size_t n;

	(void)k;
	(void)field;
	if (split_list(ld, value, &items, &n) != 0)
		return ld->rc;
	if (n > 0 && (c->control.allow = calloc(n, sizeof(*c->control.allow))) == NULL) {
		free_list(items, n);
		return nomem(ld);
	}
	for (size_t i = 0; i < n; i++) {
		struct cmk_control_peer *p = &c->control.allow[i];

		p->is_group = items[i][0] == '@';
		if (p->is_group ? parse_id(ld, items[i] + 1, "group", lookup_group, &p->id)
				: parse_id(ld, items[i], "user", lookup_user, &p->id))
			break;
		c->control.n_allow++;
	}
	free_list(items, n);
	return ld->rc;
}

/*
 * A name pattern for common_name and alt_names: letters, digits, . _ -
 * and the placeholder {tenant_id}.  The result is used as a DNS name in the
 * CSR, so nothing else may appear (a ',' or '=' would even change the
 * subject's structure).
 */
static int check_pattern(struct loader *ld, const char *pattern, bool need_tenant)
{
	char q[CMK_QUOTE_SIZE], ph[CMK_QUOTE_SIZE];
	bool has_tenant = false;

	cmk_quote(pattern, q);
	for (const char *p = pattern; *p != '\0';) {
		unsigned char c = (unsigned char)*p;

		if (strncmp(p, PLACEHOLDER, sizeof(PLACEHOLDER) - 1) == 0) {
			has_tenant = true;
			p += sizeof(PLACEHOLDER) - 1;
			continue;
		}
		if (c == '{' || c == '}') {
			char brace[40];
			int len = c == '{' ? (int)strcspn(p, "}") + 1 : 1;

			snprintf(brace, sizeof(brace), "%.*s", len, p);
			cmk_quote(brace, ph);
			return bad(ld, "\"%s\": unknown placeholder \"%s\", the only one is " PLACEHOLDER, q, ph);
		}
		if (!is_alnum(c) && c != '.' && c != '_' && c != '-')
			return bad(ld, "\"%s\": may only contain letters, digits, . _ - and " PLACEHOLDER, q);
		p++;
	}
	if (need_tenant && !has_tenant)
		return bad(ld, "\"%s\": must contain " PLACEHOLDER " so that each tenant gets its own name", q);
	return 0;
}

/* field: char *. */
static int parse_common_name(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	(void)k;
	if (check_pattern(ld, value, true) != 0)
		return ld->rc;
	return store_string(ld, value, field);
}

static void free_list(char **items, size_t n)
{
	for (size_t i = 0; i < n && items != NULL; i++)
		free(items[i]);
	free(items);
}

/* Split "a, b,c" into trimmed items; "" gives none, an empty item ("a,,b") is an error. */
static int split_list(struct loader *ld, const char *value, char ***items, size_t *n_items)
{
	size_t n = 1, i = 0;
	char **list;
	const char *p = value;

	*items = NULL;
	*n_items = 0;
	if (*value == '\0')
		return 0;
	for (const char *c = value; *c != '\0'; c++)
		n += *c == ',';
	if ((list = calloc(n, sizeof(*list))) == NULL)
		return nomem(ld);
	for (i = 0; i < n; i++) {
		size_t len = strcspn(p, ",");
		const char *start = p, *end = p + len;

		while (start < end && (*start == ' ' || *start == '\t'))
			start++;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (start == end) {
			free_list(list, n);
			return bad(ld, "entry %zu of the comma-separated list is empty", i + 1);
		}
		if ((list[i] = strndup(start, (size_t)(end - start))) == NULL) {
			free_list(list, n);
			return nomem(ld);
		}
		p += len + 1;
	}
	*items = list;
	*n_items = n;
	return 0;
}

static struct cmk_template *current_template(struct loader *ld)
{
	return &ld->cfg->templates[ld->cfg->n_templates - 1];
}

/* field: unused (the current template's alt_names).  May be empty. */
static int parse_alt_names(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	struct cmk_template *tpl = current_template(ld);
	char **names;
	size_t n;

	(void)k;
	(void)field;
	if (split_list(ld, value, &names, &n) != 0)
		return ld->rc;
	for (size_t i = 0; i < n; i++) {
		if (check_pattern(ld, names[i], false) != 0) {
			free_list(names, n);
			return ld->rc;
		}
	}
	tpl->alt_names = names;
	tpl->n_alt_names = n;
	return 0;
}

/* The template whose type or alias is `name`, or NULL; *as_alias says which matched. */
static const struct cmk_template *template_named(const struct cmk_config *cfg, const char *name, bool *as_alias)
{
	for (size_t i = 0; i < cfg->n_templates; i++) {
		const struct cmk_template *t = &cfg->templates[i];

		*as_alias = false;
		if (strcmp(t->type, name) == 0)
			return t;
		*as_alias = true;
		for (size_t j = 0; j < t->n_aliases; j++)
			if (strcmp(t->aliases[j], name) == 0)
				return t;
	}
	*as_alias = false;
	return NULL;
}

/*
 * Alias i of the list: a type name that no template uses as its type or
 * alias, so that a request for that name finds exactly one template.
 */
static int check_alias(struct loader *ld, char **aliases, size_t i)
{
	const struct cmk_template *tpl = current_template(ld), *other;
	const char *a = aliases[i];
	bool as_alias;

	if (cmk_check_type("aliases", a) != 0)
		return bad_named(ld, ld->line);
	for (size_t j = 0; j < i; j++)
		if (strcmp(aliases[j], a) == 0)
			return bad(ld, "\"%s\" is listed twice", a);
	other = template_named(ld->cfg, a, &as_alias);
	if (other == tpl)
		return bad(ld, "\"%s\" is this template's own type", a);
	if (other != NULL)
		return bad(ld, "\"%s\" is already %s [template:%s] (line %d)", a,
			   as_alias ? "an alias of" : "the type of", other->type, other->line);
	return 0;
}

/* field: unused (the current template's aliases). */
static int parse_aliases(struct loader *ld, const struct key_spec *k, const char *value, void *field)
{
	struct cmk_template *tpl = current_template(ld);
	char **aliases;
	size_t n;

	(void)k;
	(void)field;
	if (split_list(ld, value, &aliases, &n) != 0)
		return ld->rc;
	for (size_t i = 0; i < n; i++) {
		if (check_alias(ld, aliases, i) != 0) {
			free_list(aliases, n);
			return ld->rc;
		}
	}
	tpl->aliases = aliases;
	tpl->n_aliases = n;
	return 0;
}

/* ---- sections and their keys ------------------------------------------- */

#define CFG(member) offsetof(struct cmk_config, member)
#define TPL(member) offsetof(struct cmk_template, member)
#define OWN(member) offsetof(struct cmk_tenant_owner, member)

/* Columns: key, parser, field, flags, min, max.  Defaults are set in set_defaults() and the finish functions. */
static const struct key_spec openbao_keys[] = {
	{ "address", parse_address, CFG(openbao.address), KEY_REQUIRED, 0, 0 },
	{ "ca_cert", parse_path, CFG(openbao.ca_cert), KEY_REQUIRED, 0, 0 },
	{ "namespace", parse_mount, CFG(openbao.namespace_), 0, 0, 0 },
	{ "timeout", parse_duration, CFG(openbao.timeout), 0, 1, HOUR },
	{ "pki_mount", parse_mount, CFG(openbao.pki_mount), KEY_REQUIRED, 0, 0 },
	{ "role", parse_role, CFG(openbao.role), KEY_REQUIRED, 0, 0 },
	{ "mode", parse_bao_mode, CFG(openbao.mode), 0, 0, 0 },
	{ "max_retries", parse_int, CFG(openbao.max_retries), 0, 0, 20 },
};

static const struct key_spec auth_keys[] = {
	{ "method", parse_method, CFG(auth.method), KEY_REQUIRED, 0, 0 },
	{ "mount", parse_mount, CFG(auth.mount), 0, 0, 0 },
	{ "role", parse_role, CFG(auth.role), 0, 0, 0 },
	{ "jwt_path", parse_path, CFG(auth.jwt_path), 0, 0, 0 },
	{ "role_id_path", parse_path, CFG(auth.role_id_path), 0, 0, 0 },
	{ "secret_id_path", parse_path, CFG(auth.secret_id_path), 0, 0, 0 },
	{ "token_path", parse_path, CFG(auth.token_path), 0, 0, 0 },
};

static const struct key_spec store_keys[] = {
	{ "path", parse_path, CFG(store.path), KEY_REQUIRED, 0, 0 },
};

static const struct key_spec keys_keys[] = {
	{ "provider", parse_provider, CFG(keys.provider), 0, 0, 0 },
	{ "master_key", parse_master_key, CFG(keys.master_key), KEY_REQUIRED, 0, 0 },
	{ "pool_size", parse_int, CFG(keys.pool_size), 0, 0, CMK_POOL_SIZE_MAX },
};

static const struct key_spec renewal_keys[] = {
	{ "renew_before", parse_duration, CFG(renewal.renew_before), 0, 1, DURATION_MAX },
	{ "grace_period", parse_duration, CFG(renewal.grace_period), 0, 0, DURATION_MAX },
	{ "check_interval", parse_duration, CFG(renewal.check_interval), 0, 1, DAY },
	{ "max_parallel", parse_int, CFG(renewal.max_parallel), 0, 1, 64 },
	{ "max_ops_per_minute", parse_int, CFG(renewal.max_ops_per_minute), 0, 1, 100000 },
	{ "jitter", parse_duration, CFG(renewal.jitter), 0, 0, DURATION_MAX },
};

static const struct key_spec audit_keys[] = {
	{ "path", parse_path, CFG(audit.path), KEY_REQUIRED, 0, 0 },
};

static const struct key_spec fuse_keys[] = {
	{ "owner", parse_owner, CFG(fuse.uid), 0, 0, 0 },
	{ "group", parse_group, CFG(fuse.gid), 0, 0, 0 },
	{ "cert_mode", parse_mode, CFG(fuse.cert_mode), 0, 0, 0 },
	{ "key_mode", parse_mode, CFG(fuse.key_mode), 0, 0, 0 },
	{ "ca_mode", parse_mode, CFG(fuse.ca_mode), 0, 0, 0 },
};

static const struct key_spec control_keys[] = {
	{ "socket", parse_socket, CFG(control.socket), 0, 0, 0 },
	{ "allow", parse_allow, CFG(control.allow), KEY_MAY_BE_EMPTY, 0, 0 },
	{ "mode", parse_socket_mode, CFG(control.mode), 0, 0, 0 },
	{ "group", parse_group, CFG(control.gid), 0, 0, 0 },
};

static const struct key_spec tenant_keys[] = {
	{ "owner", parse_owner, OWN(uid), 0, 0, 0 },
	{ "group", parse_group, OWN(gid), 0, 0, 0 },
};

static const struct key_spec template_keys[] = {
	{ "common_name", parse_common_name, TPL(common_name), KEY_REQUIRED, 0, 0 },
	{ "alt_names", parse_alt_names, TPL(alt_names), KEY_MAY_BE_EMPTY, 0, 0 },
	{ "key_type", parse_key_type, TPL(key_type), 0, 0, 0 },
	/* Any size passes here; finish_template() checks it against key_type, which may come later. */
	{ "key_bits", parse_int, TPL(key_bits), 0, 1, 65536 },
	{ "ttl", parse_duration, TPL(ttl), KEY_REQUIRED, 1, DURATION_MAX },
	{ "aliases", parse_aliases, TPL(aliases), 0, 0, 0 },
	{ "role", parse_role, TPL(role), 0, 0, 0 },
	{ "verify", parse_verify, TPL(verify), 0, 0, 0 },
	{ "pool_size", parse_int, TPL(pool_size), 0, 0, CMK_POOL_SIZE_MAX },
};

static int key_line_of(const struct loader *ld, const char *key)
{
	for (size_t i = 0; i < ld->sec->n_keys; i++)
		if (strcmp(ld->sec->keys[i].name, key) == 0)
			return ld->key_line[i];
	return 0;
}

#define METHOD(m) (1u << (m))

/*
 * Which [auth] keys each method reads and which it cannot do without.  Keys
 * of other methods are allowed, so one file can hold the settings of every
 * method and switching is a one-line change; they are only noted at debug
 * level.
 */
static const struct auth_rule {
	const char *key;
	unsigned used_by, needed_by;
} auth_rules[] = {
	{ "mount", METHOD(CMK_AUTH_KUBERNETES) | METHOD(CMK_AUTH_APPROLE), 0 },
	{ "role", METHOD(CMK_AUTH_KUBERNETES), METHOD(CMK_AUTH_KUBERNETES) },
	{ "jwt_path", METHOD(CMK_AUTH_KUBERNETES), 0 },
	{ "role_id_path", METHOD(CMK_AUTH_APPROLE), METHOD(CMK_AUTH_APPROLE) },
	{ "secret_id_path", METHOD(CMK_AUTH_APPROLE), METHOD(CMK_AUTH_APPROLE) },
	{ "token_path", METHOD(CMK_AUTH_TOKEN), METHOD(CMK_AUTH_TOKEN) },
};

static int finish_auth(struct loader *ld)
{
	struct cmk_config *c = ld->cfg;
	const char *method = method_words[c->auth.method];

	for (size_t i = 0; i < N_ELEMS(auth_rules); i++) {
		const struct auth_rule *r = &auth_rules[i];
		int line = key_line_of(ld, r->key);

		if (line != 0 && (r->used_by & METHOD(c->auth.method)) == 0)
			cmk_log(CMK_LOG_DEBUG, "config: %s:%d: [auth] %s is not used with method = %s", ld->file,
				line, r->key, method);
		if (line == 0 && (r->needed_by & METHOD(c->auth.method)) != 0)
			return fail_at(ld, ld->sec_line, ld->sec_name, r->key, "missing (required with method = %s)",
				       method);
	}
	/* A token needs no login, so it has no mount; the others default to the method's usual mount. */
	if (c->auth.method != CMK_AUTH_TOKEN && c->auth.mount == NULL && (c->auth.mount = strdup(method)) == NULL)
		return nomem(ld);
	if (c->auth.method == CMK_AUTH_KUBERNETES && c->auth.jwt_path == NULL &&
	    (c->auth.jwt_path = strdup(DEFAULT_JWT_PATH)) == NULL)
		return nomem(ld);
	return 0;
}

static int finish_fuse(struct loader *ld)
{
	int line = key_line_of(ld, "key_mode");

	/* Allowed, since an operator may mean it, but worth saying out loud. */
	if (line != 0 && (ld->cfg->fuse.key_mode & 0004) != 0)
		cmk_log(CMK_LOG_WARN, "config: %s:%d: [fuse] key_mode %04o lets every local user read private keys",
			ld->file, line, (unsigned)ld->cfg->fuse.key_mode);
	return 0;
}

static int finish_tenant(struct loader *ld)
{
	if (key_line_of(ld, "owner") == 0 && key_line_of(ld, "group") == 0)
		return fail_at(ld, ld->sec_line, ld->sec_name, NULL, "sets neither owner nor group");
	return 0;
}

static int finish_template(struct loader *ld)
{
	struct cmk_template *tpl = current_template(ld);
	bool ec = tpl->key_type == CMK_KEY_EC;
	int line = key_line_of(ld, "key_bits");

	if (line == 0) {
		tpl->key_bits = ec ? 256 : 2048;
		return 0;
	}
	if (ec ? tpl->key_bits == 256 || tpl->key_bits == 384
	       : tpl->key_bits == 2048 || tpl->key_bits == 3072 || tpl->key_bits == 4096)
		return 0;
	return fail_at(ld, line, ld->sec_name, "key_bits", "%d does not fit key_type = %s (%s)", tpl->key_bits,
		       key_type_words[tpl->key_type], ec ? "256 or 384" : "2048, 3072 or 4096");
}

#define KEYS(a) a, N_ELEMS(a)

static const struct section_spec sections[] = {
	{ "openbao", SEC_FIXED, KEYS(openbao_keys), true, NULL },
	{ "auth", SEC_FIXED, KEYS(auth_keys), true, finish_auth },
	{ "store", SEC_FIXED, KEYS(store_keys), true, NULL },
	{ "keys", SEC_FIXED, KEYS(keys_keys), true, NULL },
	{ "renewal", SEC_FIXED, KEYS(renewal_keys), false, NULL },
	{ "audit", SEC_FIXED, KEYS(audit_keys), true, NULL },
	{ "fuse", SEC_FIXED, KEYS(fuse_keys), false, finish_fuse },
	{ "control", SEC_FIXED, KEYS(control_keys), false, NULL },
	{ "tenant:", SEC_TENANT, KEYS(tenant_keys), false, finish_tenant },
	{ "template:", SEC_TEMPLATE, KEYS(template_keys), false, finish_template },
};

_Static_assert(N_ELEMS(openbao_keys) <= MAX_KEYS && N_ELEMS(auth_keys) <= MAX_KEYS &&
	       N_ELEMS(renewal_keys) <= MAX_KEYS && N_ELEMS(fuse_keys) <= MAX_KEYS &&
	       N_ELEMS(template_keys) <= MAX_KEYS, "raise MAX_KEYS");
_Static_assert(N_ELEMS(sections) <= N_ELEMS(((struct loader *)0)->fixed_line), "raise fixed_line");

/* Required keys the section did not set, reported at its header line. */
static int check_required(struct loader *ld)
{
	for (size_t i = 0; i < ld->sec->n_keys; i++)
		if ((ld->sec->keys[i].flags & KEY_REQUIRED) != 0 && ld->key_line[i] == 0)
			return fail_at(ld, ld->sec_line, ld->sec_name, ld->sec->keys[i].name, "missing (required)");
	return 0;
}

static int end_section(struct loader *ld)
{
	int rc = 0;

	if (ld->sec == NULL)
		return 0;
	rc = check_required(ld);
	if (rc == 0 && ld->sec->finish != NULL)
		rc = ld->sec->finish(ld);
	ld->sec = NULL;
	return rc;
}

static int begin_template(struct loader *ld, const char *type)
{
	struct cmk_config *c = ld->cfg;
	const struct cmk_template *other;
	struct cmk_template *grown, *tpl;
	bool as_alias;

	if (cmk_check_type("type", type) != 0)
		return bad_named(ld, ld->sec_line);
	other = template_named(c, type, &as_alias);
	if (other != NULL && !as_alias)
		return fail_at(ld, ld->sec_line, ld->sec_name, NULL, "duplicate section (first on line %d)", other->line);
	if (other != NULL)
		return fail_at(ld, ld->sec_line, ld->sec_name, NULL, "\"%s\" is already an alias of [template:%s] (line %d)",
			       type, other->type, other->line);
	if ((grown = realloc(c->templates, (c->n_templates + 1) * sizeof(*grown))) == NULL)
		return nomem(ld);
	c->templates = grown;
	tpl = &c->templates[c->n_templates];
	memset(tpl, 0, sizeof(*tpl));
	if ((tpl->type = strdup(type)) == NULL)
		return nomem(ld);
	c->n_templates++;
	tpl->key_type = CMK_KEY_RSA;
	tpl->verify = CMK_VERIFY_TLS;
	tpl->pool_size = -1;
	tpl->line = ld->sec_line;
	return 0;
}

static int begin_tenant(struct loader *ld, const char *tenant)
{
	struct cmk_config *c = ld->cfg;
	struct cmk_tenant_owner *grown, *o;

	if (cmk_check_tenant("tenant_id", tenant) != 0)
		return bad_named(ld, ld->sec_line);
	for (size_t i = 0; i < c->n_owners; i++)
		if (strcmp(c->owners[i].tenant, tenant) == 0)
			return fail_at(ld, ld->sec_line, ld->sec_name, NULL, "duplicate section");
	if ((grown = realloc(c->owners, (c->n_owners + 1) * sizeof(*grown))) == NULL)
		return nomem(ld);
	c->owners = grown;
	o = &c->owners[c->n_owners];
	if ((o->tenant = strdup(tenant)) == NULL)
		return nomem(ld);
	c->n_owners++;
	/* Not a valid id (chown's "no change"): marks "take [fuse]'s", filled in at the end of the file. */
	o->uid = (uid_t)-1;
	o->gid = (gid_t)-1;
	return 0;
}

static const struct section_spec *find_section(const char *name)
{
	for (size_t i = 0; i < N_ELEMS(sections); i++) {
		const struct section_spec *s = &sections[i];

		if (s->kind == SEC_FIXED ? strcmp(name, s->name) == 0
					 : strncmp(name, s->name, strlen(s->name)) == 0)
			return s;
	}
	return NULL;
}

static int begin_section(struct loader *ld, const char *name)
{
	const struct section_spec *s;
	int rc = end_section(ld);

	if (rc != 0)
		return rc;
	memset(ld->key_line, 0, sizeof(ld->key_line));
	cmk_quote(name, ld->sec_name);
	ld->sec_line = ld->line;
	s = find_section(name);
	if (s == NULL)
		return fail_at(ld, ld->line, ld->sec_name, NULL,
			       "unknown section (expected openbao, auth, store, keys, renewal, audit, fuse, control, "
			       "tenant:<tenant_id> or template:<type>)");
	if (s->kind == SEC_TENANT)
		rc = begin_tenant(ld, name + strlen(s->name));
	else if (s->kind == SEC_TEMPLATE)
		rc = begin_template(ld, name + strlen(s->name));
	else if (ld->fixed_line[s - sections] != 0)
		rc = fail_at(ld, ld->line, ld->sec_name, NULL, "duplicate section (first on line %d)",
			     ld->fixed_line[s - sections]);
	else
		ld->fixed_line[s - sections] = ld->line;
	if (rc != 0)
		return rc;
	snprintf(ld->sec_raw, sizeof(ld->sec_raw), "%s", name);
	ld->sec = s;
	return 0;
}

static void *section_field(struct loader *ld, const struct key_spec *k)
{
	char *base = (char *)ld->cfg;

	if (ld->sec->kind == SEC_TENANT)
		base = (char *)&ld->cfg->owners[ld->cfg->n_owners - 1];
	else if (ld->sec->kind == SEC_TEMPLATE)
		base = (char *)current_template(ld);
	return base + k->offset;
}

static int set_key(struct loader *ld, const char *section, const char *name, const char *value)
{
	const struct key_spec *k = NULL;
	char qname[CMK_QUOTE_SIZE], known[256] = "";
	size_t i, used = 0;

	cmk_quote(name, qname);
	if (ld->sec == NULL)
		return fail_at(ld, ld->line, NULL, qname, "outside any section (keys follow a [section] line)");
	/* Our reader announced the section; inih must agree, or keys would land in the wrong place. */
	if (strcmp(section, ld->sec_raw) != 0) {
		ld->rc = cmk_fail(CMK_ERR_INTERNAL, "%s:%d: section tracking out of step", ld->file, ld->line);
		ld->err_line = ld->line;
		return ld->rc;
	}
	if (*name == '\0')
		return fail_at(ld, ld->line, ld->sec_name, NULL, "missing key name before '='");
	for (i = 0; i < ld->sec->n_keys && k == NULL; i++)
		if (strcmp(ld->sec->keys[i].name, name) == 0)
			k = &ld->sec->keys[i];
	if (k == NULL) {
		/* Only the key is shown: the value of a key we do not know could be anything, even a secret. */
		for (i = 0; i < ld->sec->n_keys; i++)
			used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
						 ld->sec->keys[i].name);
		return fail_at(ld, ld->line, ld->sec_name, qname, "unknown key (known keys: %s)", known);
	}
	i = (size_t)(k - ld->sec->keys);
	if (ld->key_line[i] != 0)
		return fail_at(ld, ld->line, ld->sec_name, k->name, "set twice (first on line %d)", ld->key_line[i]);
	ld->key_line[i] = ld->line;
	ld->key = k->name;
	if (*value == '\0' && (k->flags & KEY_MAY_BE_EMPTY) == 0)
		return bad(ld, "empty value");
	if (value[0] == '"' || value[0] == '\'')
		return bad(ld, "values are taken literally; remove the quotes");
	return k->parse(ld, k, value, section_field(ld, k));
}

/* ---- the inih boundary ------------------------------------------------- */

/* inih calls this for each "key = value" and wants nonzero for success, zero for an error. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
	struct loader *ld = user;

	if (ld->rc == 0)
		set_key(ld, section, name, value);
	return ld->rc == 0;
}

/* "[name]", optionally followed by a comment. */
static int section_header(struct loader *ld, const char *line)
{
	const char *close = strchr(line, ']'), *rest;
	char name[SECTION_NAME_MAX + 1], q[CMK_QUOTE_SIZE];
	size_t len;

	if (close == NULL)
		return fail_at(ld, ld->line, NULL, NULL, "section header without ']'");
	rest = close + 1 + strspn(close + 1, " \t");
	if (*rest != '\0' && *rest != '#' && *rest != ';')
		return fail_at(ld, ld->line, NULL, NULL, "unexpected text after ']'");
	len = (size_t)(close - (line + 1));
	if (len > SECTION_NAME_MAX) {
		cmk_quote(line + 1, q);
		return fail_at(ld, ld->line, NULL, NULL, "unknown section \"[%s\" (name too long)", q);
	}
	memcpy(name, line + 1, len);
	name[len] = '\0';
	return begin_section(ld, name);
}

/* What inih would do with a line, decided here first so the message can be precise. */
static int classify(struct loader *ld, const char *line)
{
	if (*line == '\0' || *line == '#' || *line == ';')
		return 0;
	if (*line == '[')
		return section_header(ld, line);
	if (strpbrk(line, "=:") == NULL)
		return fail_at(ld, ld->line, NULL, NULL, "expected \"key = value\", \"[section]\" or a comment");
	return 0;
}

/*
 * inih's line reader (fgets-like).  Hands over one trimmed line per call, so
 * our line count is inih's, and stops inih at the first error by ending the
 * input.
 */
static char *read_line(char *str, int num, void *stream)
{
	struct loader *ld = stream;
	ssize_t n;
	char *p, *end;
	size_t len;

	if (ld->rc != 0)
		return NULL;
	n = getline(&ld->buf, &ld->cap, ld->fp);
	if (n < 0) {
		if (ferror(ld->fp))
			ld->rc = cmk_fail(CMK_ERR_IO, "%s: %s", ld->file, strerror(errno));
		return NULL;
	}
	ld->line++;
	p = ld->buf;
	if (strlen(p) != (size_t)n) {
		fail_at(ld, ld->line, NULL, NULL, "NUL byte in the line");
		return NULL;
	}
	if (ld->line == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	p += strspn(p, " \t");
	end = p + strlen(p);
	while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	for (const char *c = p; c < end; c++) {
		if ((unsigned char)*c < 0x20 && *c != '\t') {
			fail_at(ld, ld->line, NULL, NULL, "control character 0x%02x in the line", (unsigned char)*c);
			return NULL;
		}
		if (*c == 0x7f) {
			fail_at(ld, ld->line, NULL, NULL, "control character 0x7f in the line");
			return NULL;
		}
	}
	len = (size_t)(end - p);
	/* inih's buffer is `num` bytes; a longer line would be split and its tail read as a new line. */
	if (len >= (size_t)num) {
		fail_at(ld, ld->line, NULL, NULL, "line of %zu characters, at most %d", len, num - 1);
		return NULL;
	}
	if (classify(ld, p) != 0)
		return NULL;
	memcpy(str, p, len + 1);
	return str;
}

static int parse_file(struct loader *ld)
{
	int line = ini_parse_stream(read_line, ld, on_key, ld);

	if (line == -2 && ld->rc == 0)
		return nomem(ld);
	/*
	 * inih returns the first line it could not use.  Our reader vets every
	 * line first, so this only happens for lines inih reads differently,
	 * such as "key ;= value" where " ;" starts a comment.
	 */
	if (line > 0 && (ld->rc == 0 || line < ld->err_line)) {
		ld->rc = 0;
		return fail_at(ld, line, NULL, NULL, "expected \"key = value\", \"[section]\" or a comment");
	}
	return ld->rc;
}

/* ---- loading ----------------------------------------------------------- */

static void set_defaults(struct cmk_config *c)
{
	c->openbao.timeout = 30;
	c->openbao.mode = CMK_MODE_SIGN;
	c->openbao.max_retries = 4;
	c->renewal.renew_before = 30 * DAY;
	c->renewal.grace_period = 7 * DAY;
	c->renewal.check_interval = MINUTE;
	c->renewal.max_parallel = 4;
	c->renewal.max_ops_per_minute = 60;
	c->renewal.jitter = 10 * MINUTE;
	c->fuse.uid = 0;
	c->fuse.gid = 0;
	c->fuse.cert_mode = 0444;
	c->fuse.key_mode = 0400;
	c->fuse.ca_mode = 0444;
	c->control.mode = 0660;
	c->control.gid = 0;
}

/* The file's directory as an absolute path: the daemon may change directory after loading. */
static char *absolute_dir(const char *path)
{
	char *copy = strdup(path), *cwd = NULL, *dir, *res = NULL;

	if (copy == NULL)
		return NULL;
	dir = dirname(copy);
	if (dir[0] == '/')
		res = strdup(dir);
	else if ((cwd = getcwd(NULL, 0)) != NULL)
		res = strcmp(dir, ".") == 0 ? strdup(cwd) : cmk_asprintf("%s/%s", cwd, dir);
	free(cwd);
	free(copy);
	return res;
}

/*
 * Open the file and refuse one that others could change: it names the
 * master key, the store and the audit log of a root daemon.
 */
static int loader_open(struct loader *ld, const char *path)
{
	struct stat sb;
	int err;

	ld->file = path;
	/*
	 * A configuration file that is missing or cannot be opened is bad input
	 * (exit 2: nothing was done yet), unlike a process out of resources.
	 */
	if ((ld->fp = fopen(path, "re")) == NULL) {
		err = errno;
		return cmk_fail(err == EACCES ? CMK_ERR_PERM : err == ENOMEM ? CMK_ERR_NOMEM :
				err == EMFILE || err == ENFILE ? CMK_ERR_IO : CMK_ERR_CONFIG,
				"%s: %s", path, strerror(err));
	}
	if (fstat(fileno(ld->fp), &sb) != 0)
		return cmk_fail(CMK_ERR_IO, "%s: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return cmk_fail(CMK_ERR_CONFIG, "%s: not a regular file", path);
	if ((sb.st_mode & 022) != 0)
		return cmk_fail(CMK_ERR_PERM, "%s: mode %04o lets group or others change it, must not be writable by them",
				path, (unsigned)(sb.st_mode & 07777));
	if (sb.st_uid != 0 && sb.st_uid != geteuid())
		return cmk_fail(CMK_ERR_PERM, "%s: owned by uid %u, must be owned by root or the user running cmkcert",
				path, (unsigned)sb.st_uid);
	if ((ld->dir = absolute_dir(path)) == NULL)
		return cmk_fail(errno == ENOMEM ? CMK_ERR_NOMEM : CMK_ERR_IO, "%s: finding its directory: %s", path,
				strerror(errno));
	if ((ld->cfg = calloc(1, sizeof(*ld->cfg))) == NULL || (ld->cfg->path = strdup(path)) == NULL)
		return cmk_fail(CMK_ERR_NOMEM, "%s: out of memory", path);
	set_defaults(ld->cfg);
	return 0;
}

/* Checks that need the whole file: sections that never appeared and values taken from other sections. */
static int finish_file(struct loader *ld)
{
	struct cmk_config *c = ld->cfg;
	int rc = end_section(ld);

	if (rc != 0)
		return rc;
	for (size_t i = 0; i < N_ELEMS(sections); i++) {
		const struct section_spec *s = &sections[i];

		if (s->kind != SEC_FIXED || !s->required || ld->fixed_line[i] != 0)
			continue;
		for (size_t j = 0; j < s->n_keys; j++)
			if ((s->keys[j].flags & KEY_REQUIRED) != 0)
				return fail_at(ld, 0, s->name, s->keys[j].name, "missing (the file has no [%s] section)",
					       s->name);
	}
	if (c->n_templates == 0)
		return fail_at(ld, 0, NULL, NULL, "no [template:<type>] section, at least one is required");
	if (c->keys.provider == NULL && (c->keys.provider = strdup("local")) == NULL)
		return nomem(ld);
	if (c->control.socket == NULL && !ld->control_off) {
		if ((c->control.socket = strdup(CMK_CONTROL_DEFAULT_SOCKET)) == NULL)
			return nomem(ld);
		c->control.socket_default = true;
	}
	for (size_t i = 0; i < c->n_owners; i++) {
		if (c->owners[i].uid == (uid_t)-1)
			c->owners[i].uid = c->fuse.uid;
		if (c->owners[i].gid == (gid_t)-1)
			c->owners[i].gid = c->fuse.gid;
	}
	return 0;
}

static void loader_close(struct loader *ld)
{
	if (ld->fp != NULL)
		fclose(ld->fp);
	free(ld->buf);
	free(ld->dir);
	cmk_config_free(ld->cfg);
}

int cmk_config_load(const char *path, struct cmk_config **out)
{
	struct loader ld;
	int rc;

	memset(&ld, 0, sizeof(ld));
	*out = NULL;
	if (path == NULL)
		path = getenv("CMKCERT_CONF");
	if (path == NULL || *path == '\0')
		path = CMK_CONFIG_DEFAULT_PATH;
	rc = loader_open(&ld, path);
	if (rc == 0)
		rc = parse_file(&ld);
	if (rc == 0)
		rc = finish_file(&ld);
	if (rc == 0) {
		*out = ld.cfg;
		ld.cfg = NULL;
	}
	loader_close(&ld);
	return rc;
}

void cmk_config_free(struct cmk_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->openbao.address);
	free(cfg->openbao.ca_cert);
	free(cfg->openbao.namespace_);
	free(cfg->openbao.pki_mount);
	free(cfg->openbao.role);
	free(cfg->auth.mount);
	free(cfg->auth.role);
	free(cfg->auth.jwt_path);
	free(cfg->auth.role_id_path);
	free(cfg->auth.secret_id_path);
	free(cfg->auth.token_path);
	free(cfg->store.path);
	free(cfg->keys.provider);
	free(cfg->keys.master_key);
	free(cfg->audit.path);
	free(cfg->control.socket);
	free(cfg->control.allow);
	for (size_t i = 0; i < cfg->n_owners; i++)
		free(cfg->owners[i].tenant);
	free(cfg->owners);
	for (size_t i = 0; i < cfg->n_templates; i++) {
		struct cmk_template *t = &cfg->templates[i];

		free(t->type);
		free(t->common_name);
		free_list(t->alt_names, t->n_alt_names);
		free_list(t->aliases, t->n_aliases);
		free(t->role);
	}
	free(cfg->templates);
	free(cfg);
}

/* ---- lookups ----------------------------------------------------------- */

const struct cmk_template *cmk_config_template(const struct cmk_config *cfg, const char *type_or_alias)
{
	bool as_alias;

	if (cfg == NULL || type_or_alias == NULL)
		return NULL;
	return template_named(cfg, type_or_alias, &as_alias);
}

const char *cmk_config_role(const struct cmk_config *cfg, const struct cmk_template *tpl)
{
	return tpl != NULL && tpl->role != NULL ? tpl->role : cfg->openbao.role;
}

void cmk_config_owner(const struct cmk_config *cfg, const char *tenant, uid_t *uid, gid_t *gid)
{
	*uid = cfg->fuse.uid;
	*gid = cfg->fuse.gid;
	for (size_t i = 0; tenant != NULL && i < cfg->n_owners; i++) {
		if (strcmp(cfg->owners[i].tenant, tenant) == 0) {
			*uid = cfg->owners[i].uid;
			*gid = cfg->owners[i].gid;
			return;
		}
	}
}

int cmk_verify_parse(const char *s)
{
	for (int i = 0; s != NULL && verify_words[i] != NULL; i++)
		if (strcmp(s, verify_words[i]) == 0)
			return i;
	return -1;
}

bool cmk_config_control_allows(const struct cmk_config *cfg, uid_t uid, gid_t gid, const gid_t *groups, size_t n)
{
	if (uid == 0)
		return true;
	for (size_t i = 0; i < cfg->control.n_allow; i++) {
		const struct cmk_control_peer *p = &cfg->control.allow[i];

		if (!p->is_group) {
			if (p->id == (unsigned)uid)
				return true;
			continue;
		}
		if (p->id == (unsigned)gid)
			return true;
		for (size_t j = 0; groups != NULL && j < n; j++)
			if (p->id == (unsigned)groups[j])
				return true;
	}
	return false;
}

char *cmk_template_expand(const char *pattern, const char *tenant)
{
	const size_t ph_len = sizeof(PLACEHOLDER) - 1;
	size_t count = 0, len, t_len;
	const char *p, *hit;
	char *out, *o;

	if (pattern == NULL || tenant == NULL)
		return NULL;
	t_len = strlen(tenant);
	for (p = pattern; (hit = strstr(p, PLACEHOLDER)) != NULL; p = hit + ph_len)
		count++;
	len = strlen(pattern) - count * ph_len + count * t_len;
	if ((out = malloc(len + 1)) == NULL)
		return NULL;
	o = out;
	for (p = pattern; (hit = strstr(p, PLACEHOLDER)) != NULL; p = hit + ph_len) {
		memcpy(o, p, (size_t)(hit - p));
		o += hit - p;
		memcpy(o, tenant, t_len);
		o += t_len;
	}
	strcpy(o, p);
	return out;
}

static const char *word(const char *const *words, size_t n_words, int v)
{
	return v >= 0 && (size_t)v < n_words && words[v] != NULL ? words[v] : "unknown";
}

const char *cmk_verify_name(enum cmk_verify v)
{
	return word(verify_words, N_ELEMS(verify_words), (int)v);
}

const char *cmk_key_type_name(enum cmk_key_type t)
{
	return word(key_type_words, N_ELEMS(key_type_words), (int)t);
}

const char *cmk_mode_name(enum cmk_mode m)
{
	return word(mode_words, N_ELEMS(mode_words), (int)m);
}

const char *cmk_auth_method_name(enum cmk_auth_method m)
{
	return word(method_words, N_ELEMS(method_words), (int)m);
}
