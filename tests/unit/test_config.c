/*
 * test_config.c - cmkcert.conf loading: the shipped example loads with the
 * values it shows, absent keys take their documented defaults, relative
 * paths are taken from the file's directory, and every kind of mistake is
 * refused with "FILE:LINE: [section] key: ..." and no configuration.
 *
 * Each test writes its configuration into a fresh temporary directory,
 * usually as the small BASE file below with one line changed or a few
 * lines appended (BASE's line numbers are listed so expectations can name
 * them).  Run from the repository root: the shipped example is read from
 * conf/cmkcert.conf.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmkcert/config.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"

#define SHIPPED_CONF "conf/cmkcert.conf"

/*
 * Line numbers: 1 [openbao], 2 address, 3 ca_cert, 4 pki_mount, 5 role,
 * 7 [auth], 8 method, 9 token_path, 11 [store], 12 path, 14 [keys],
 * 15 master_key, 17 [audit], 18 path, 20 [template:thales_luna],
 * 21 common_name, 22 ttl; appended text starts at line 23.
 */
static const char BASE[] =
	"[openbao]\n"
	"address = https://bao.example:8200\n"
	"ca_cert = ca.pem\n"
	"pki_mount = pki\n"
	"role = client\n"
	"\n"
	"[auth]\n"
	"method = token\n"
	"token_path = bao.token\n"
	"\n"
	"[store]\n"
	"path = store\n"
	"\n"
	"[keys]\n"
	"master_key = master.key\n"
	"\n"
	"[audit]\n"
	"path = audit.log\n"
	"\n"
	"[template:thales_luna]\n"
	"common_name = tenant-{tenant_id}.internal\n"
	"ttl = 8760h\n";

struct fixture {
	char dir[256];         /* the temporary directory, resolved */
	char key[300];         /* a good master key: 32 bytes, 0600 */
	char conf[300];        /* where write_conf() puts the configuration */
};

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static int setup(void **state)
{
	static const unsigned char key[32] = { 1, 2, 3 };
	struct fixture *f = calloc(1, sizeof(*f));
	char tmpl[] = "/tmp/cmkcert-test-config-XXXXXX", resolved[PATH_MAX];

	/* Resolved, since the loader builds absolute paths from getcwd(), which resolves links too. */
	if (f == NULL || mkdtemp(tmpl) == NULL || realpath(tmpl, resolved) == NULL ||
	    strlen(resolved) >= sizeof(f->dir))
		return -1;
	strcpy(f->dir, resolved);
	snprintf(f->key, sizeof(f->key), "%s/master.key", f->dir);
	snprintf(f->conf, sizeof(f->conf), "%s/cmkcert.conf", f->dir);
	write_file(f->key, key, sizeof(key), 0600);
	*state = f;
	return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int rc = nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);

	free(f);
	return rc;
}

static const char *write_conf(struct fixture *f, const char *text)
{
	write_file(f->conf, text, strlen(text), 0644);
	return f->conf;
}

/* `text` with the first `old` replaced by `new`; the test fails when `old` is not there. */
static char *edit(const char *text, const char *old, const char *new)
{
	const char *at = strstr(text, old);
	char *out;

	if (at == NULL)
		fail_msg("\"%s\" not in the configuration", old);
	out = malloc(strlen(text) - strlen(old) + strlen(new) + 1);
	assert_non_null(out);
	sprintf(out, "%.*s%s%s", (int)(at - text), text, new, at + strlen(old));
	return out;
}

static char *append(const char *text, const char *more)
{
	char *out = malloc(strlen(text) + strlen(more) + 1);

	assert_non_null(out);
	sprintf(out, "%s%s", text, more);
	return out;
}

static struct cmk_config *load_ok(struct fixture *f, const char *text)
{
	struct cmk_config *cfg = NULL;
	int rc = cmk_config_load(write_conf(f, text), &cfg);

	if (rc != 0)
		fail_msg("load failed: %d %s", rc, cmk_errdetail());
	assert_non_null(cfg);
	return cfg;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle) == NULL)
		fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/*
 * Loading `text` fails with CMK_ERR_CONFIG, hands back nothing, and the
 * detail starts with "FILE:LINE: " (just "FILE: " for line 0) and then
 * `what`.
 */
static void expect_refused(struct fixture *f, const char *text, int line, const char *what)
{
	static struct cmk_config sentinel;
	struct cmk_config *cfg = &sentinel;   /* must come back NULL */
	char prefix[1024];
	int rc = cmk_config_load(write_conf(f, text), &cfg);

	if (rc != CMK_ERR_CONFIG)
		fail_msg("expected CMK_ERR_CONFIG, got %d (%s)", rc, cmk_errdetail());
	assert_null(cfg);
	if (line > 0)
		snprintf(prefix, sizeof(prefix), "%s:%d: %s", f->conf, line, what);
	else
		snprintf(prefix, sizeof(prefix), "%s: %s", f->conf, what);
	if (strncmp(cmk_errdetail(), prefix, strlen(prefix)) != 0)
		fail_msg("expected the detail to start with \"%s\", got \"%s\"", prefix, cmk_errdetail());
}

/* Change `old` to `new` in BASE and expect a refusal. */
static void expect_edit_refused(struct fixture *f, const char *old, const char *new, int line, const char *what)
{
	char *text = edit(BASE, old, new);

	expect_refused(f, text, line, what);
	free(text);
}

/* Append `more` to BASE (from line 23) and expect a refusal. */
static void expect_append_refused(struct fixture *f, const char *more, int line, const char *what)
{
	char *text = append(BASE, more);

	expect_refused(f, text, line, what);
	free(text);
}

static char *read_text(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long len;

	if (fp == NULL)
		fail_msg("%s: cannot open (run the tests from the repository root)", path);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	len = ftell(fp);
	rewind(fp);
	buf = calloc(1, (size_t)len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
	fclose(fp);
	return buf;
}

/* ---- what loads -------------------------------------------------------- */

static void test_shipped_example_loads_as_written(void **state)
{
	struct fixture *f = *state;
	char *shipped = read_text(SHIPPED_CONF), line[1024], *text;
	const struct cmk_template *t;
	struct cmk_config *cfg;

	snprintf(line, sizeof(line), "master_key = %s", f->key);
	text = edit(shipped, "master_key = /etc/cmkcert/master.key", line);
	cfg = load_ok(f, text);

	assert_string_equal(cfg->path, f->conf);
	assert_string_equal(cfg->openbao.address,
			    "https://openbao-pki-service.platform-services.svc.cluster.local:8200");
	assert_string_equal(cfg->openbao.ca_cert, "/etc/cmkcert/openbao-ca.pem");
	assert_null(cfg->openbao.namespace_);
	assert_int_equal(cfg->openbao.timeout, 30);
	assert_string_equal(cfg->openbao.pki_mount, "pki_client_certs");
	assert_string_equal(cfg->openbao.role, "openkcm-client-cert-role");
	assert_int_equal(cfg->openbao.mode, CMK_MODE_SIGN);
	assert_int_equal(cfg->openbao.max_retries, 4);

	assert_int_equal(cfg->auth.method, CMK_AUTH_KUBERNETES);
	assert_string_equal(cfg->auth.mount, "kubernetes");
	assert_string_equal(cfg->auth.role, "cmk-api-server-role");
	assert_string_equal(cfg->auth.jwt_path, "/var/run/secrets/kubernetes.io/serviceaccount/token");
	assert_null(cfg->auth.role_id_path);
	assert_null(cfg->auth.secret_id_path);
	assert_null(cfg->auth.token_path);

	assert_string_equal(cfg->store.path, "/var/lib/cmkcert/store");
	assert_string_equal(cfg->keys.provider, "local");
	assert_string_equal(cfg->keys.master_key, f->key);
	assert_int_equal(cfg->keys.pool_size, 8);

	assert_int_equal(cfg->renewal.renew_before, 30 * 86400);
	assert_int_equal(cfg->renewal.grace_period, 7 * 86400);
	assert_int_equal(cfg->renewal.check_interval, 60);
	assert_int_equal(cfg->renewal.max_parallel, 4);
	assert_int_equal(cfg->renewal.max_ops_per_minute, 60);
	assert_int_equal(cfg->renewal.jitter, 600);

	assert_string_equal(cfg->audit.path, "/var/log/cmkcert/audit.log");

	assert_int_equal(cfg->fuse.uid, 0);
	assert_int_equal(cfg->fuse.gid, 0);
	assert_int_equal(cfg->fuse.cert_mode, 0444);
	assert_int_equal(cfg->fuse.key_mode, 0400);
	assert_int_equal(cfg->fuse.ca_mode, 0444);
	assert_int_equal(cfg->n_owners, 0);

	assert_int_equal(cfg->n_templates, 2);
	t = &cfg->templates[0];
	assert_string_equal(t->type, "thales_luna");
	assert_string_equal(t->common_name, "tenant-{tenant_id}-thales.keystore.internal");
	assert_int_equal(t->n_alt_names, 1);
	assert_string_equal(t->alt_names[0], "tenant-{tenant_id}.internal");
	assert_int_equal(t->key_type, CMK_KEY_RSA);
	assert_int_equal(t->key_bits, 4096);
	assert_int_equal(t->ttl, 8760 * 3600);
	assert_int_equal(t->n_aliases, 1);
	assert_string_equal(t->aliases[0], "thales_luna_hsm");
	assert_null(t->role);
	assert_int_equal(t->verify, CMK_VERIFY_TLS);
	assert_int_equal(t->pool_size, -1);

	/* RSA-3072: the keys OpenKCM's keystore plugins load and the CMK server makes by default. */
	t = &cfg->templates[1];
	assert_string_equal(t->type, "aws_kms");
	assert_string_equal(t->common_name, "tenant-{tenant_id}-aws.keystore.internal");
	assert_int_equal(t->n_alt_names, 1);
	assert_string_equal(t->alt_names[0], "tenant-{tenant_id}.internal");
	assert_int_equal(t->key_type, CMK_KEY_RSA);
	assert_int_equal(t->key_bits, 3072);
	assert_int_equal(t->ttl, 4380 * 3600);
	assert_int_equal(t->n_aliases, 1);
	assert_string_equal(t->aliases[0], "aws_kms_keystore");
	assert_int_equal(t->verify, CMK_VERIFY_TLS);
	assert_string_equal(cmk_config_role(cfg, t), "openkcm-client-cert-role");

	cmk_config_free(cfg);
	free(text);
	free(shipped);
}

static void test_lookup_by_type_or_alias(void **state)
{
	struct fixture *f = *state;
	char *shipped = read_text(SHIPPED_CONF), line[1024], *text;
	struct cmk_config *cfg;

	snprintf(line, sizeof(line), "master_key = %s", f->key);
	text = edit(shipped, "master_key = /etc/cmkcert/master.key", line);
	cfg = load_ok(f, text);

	/* The use case's JSON says thales_luna_hsm where its template says thales_luna. */
	assert_ptr_equal(cmk_config_template(cfg, "thales_luna_hsm"), &cfg->templates[0]);
	assert_ptr_equal(cmk_config_template(cfg, "thales_luna"), &cfg->templates[0]);
	assert_ptr_equal(cmk_config_template(cfg, "aws_kms_keystore"), &cfg->templates[1]);
	assert_ptr_equal(cmk_config_template(cfg, "aws_kms"), &cfg->templates[1]);
	assert_null(cmk_config_template(cfg, "fortanix_dsm"));
	assert_null(cmk_config_template(cfg, "thales"));
	assert_null(cmk_config_template(cfg, NULL));

	cmk_config_free(cfg);
	free(text);
	free(shipped);
}

static void test_defaults_when_keys_are_absent(void **state)
{
	struct fixture *f = *state;
	struct cmk_config *cfg = load_ok(f, BASE);
	const struct cmk_template *t = &cfg->templates[0];

	assert_null(cfg->openbao.namespace_);
	assert_int_equal(cfg->openbao.timeout, 30);
	assert_int_equal(cfg->openbao.mode, CMK_MODE_SIGN);
	assert_int_equal(cfg->openbao.max_retries, 4);
	assert_int_equal(cfg->auth.method, CMK_AUTH_TOKEN);
	assert_null(cfg->auth.mount);          /* a token has no login mount */
	assert_null(cfg->auth.jwt_path);
	assert_string_equal(cfg->keys.provider, "local");
	assert_int_equal(cfg->renewal.renew_before, 30 * 86400);
	assert_int_equal(cfg->renewal.grace_period, 7 * 86400);
	assert_int_equal(cfg->renewal.check_interval, 60);
	assert_int_equal(cfg->renewal.max_parallel, 4);
	assert_int_equal(cfg->renewal.max_ops_per_minute, 60);
	assert_int_equal(cfg->renewal.jitter, 600);
	assert_int_equal(cfg->fuse.uid, 0);
	assert_int_equal(cfg->fuse.gid, 0);
	assert_int_equal(cfg->fuse.cert_mode, 0444);
	assert_int_equal(cfg->fuse.key_mode, 0400);
	assert_int_equal(cfg->fuse.ca_mode, 0444);
	assert_string_equal(cfg->control.socket, "/run/cmkcert/control.sock");
	assert_true(cfg->control.socket_default);
	assert_int_equal(cfg->control.n_allow, 0);
	assert_int_equal(cfg->control.mode, 0660);
	assert_int_equal(cfg->control.gid, 0);
	assert_int_equal(cfg->keys.pool_size, 0);
	assert_int_equal(cfg->n_templates, 1);
	assert_int_equal(t->key_type, CMK_KEY_RSA);
	assert_int_equal(t->key_bits, 2048);
	assert_int_equal(t->pool_size, -1);
	assert_int_equal(t->verify, CMK_VERIFY_TLS);
	assert_int_equal(t->n_alt_names, 0);
	assert_int_equal(t->n_aliases, 0);
	assert_null(t->role);
	assert_int_equal(t->line, 20);
	assert_string_equal(cmk_config_role(cfg, t), "client");
	cmk_config_free(cfg);
}

static void test_auth_method_defaults(void **state)
{
	struct fixture *f = *state;
	char *text = edit(BASE, "method = token\ntoken_path = bao.token\n", "method = kubernetes\nrole = cmk\n");
	struct cmk_config *cfg = load_ok(f, text);
	char expect[512];

	assert_int_equal(cfg->auth.method, CMK_AUTH_KUBERNETES);
	assert_string_equal(cfg->auth.mount, "kubernetes");
	assert_string_equal(cfg->auth.role, "cmk");
	assert_string_equal(cfg->auth.jwt_path, "/var/run/secrets/kubernetes.io/serviceaccount/token");
	cmk_config_free(cfg);
	free(text);

	text = edit(BASE, "method = token\ntoken_path = bao.token\n",
		    "method = approle\nrole_id_path = role_id\nsecret_id_path = /run/secret_id\n");
	cfg = load_ok(f, text);
	assert_int_equal(cfg->auth.method, CMK_AUTH_APPROLE);
	assert_string_equal(cfg->auth.mount, "approle");
	assert_null(cfg->auth.jwt_path);
	assert_string_equal(cfg->auth.secret_id_path, "/run/secret_id");
	cmk_config_free(cfg);
	free(text);

	/* One file may hold every method's settings; only `method` decides, and its own needs still count. */
	text = edit(BASE, "method = token\n",
		    "method = token\nmount = k8s\nrole = cmk\njwt_path = /jwt\nrole_id_path = /r\nsecret_id_path = /s\n");
	cfg = load_ok(f, text);
	assert_int_equal(cfg->auth.method, CMK_AUTH_TOKEN);
	assert_string_equal(cfg->auth.mount, "k8s");
	assert_string_equal(cfg->auth.jwt_path, "/jwt");
	snprintf(expect, sizeof(expect), "%s/bao.token", f->dir);
	assert_string_equal(cfg->auth.token_path, expect);
	cmk_config_free(cfg);
	free(text);
}

static void test_every_key_set(void **state)
{
	struct fixture *f = *state;
	char *text = edit(BASE, "role = client\n",
			  "role = client\nnamespace = team/ns\ntimeout = 90s\nmode = issue\nmax_retries = 0\n");
	char *full = append(text,
			    "alt_names = a-{tenant_id}.x, b.{tenant_id}.y ,c.z\n"
			    "key_type = ec\n"
			    "key_bits = 384\n"
			    "aliases = luna, hsm_1\n"
			    "role = luna-role\n"
			    "verify = kmip\n"
			    "[renewal]\n"
			    "renew_before = 10d\n"
			    "grace_period = 0s\n"
			    "check_interval = 30s\n"
			    "max_parallel = 64\n"
			    "max_ops_per_minute = 100000\n"
			    "jitter = 0m\n"
			    "[fuse]\n"
			    "owner = 1234\n"
			    "group = 4321\n"
			    "cert_mode = 0440\n"
			    "key_mode = 440\n"
			    "ca_mode = 0400\n"
			    "[tenant:acme-corp-12345]\n"
			    "owner = 77\n"
			    "[tenant:other]\n"
			    "owner = root\n"
			    "group = 88\n");
	struct cmk_config *cfg = load_ok(f, full);
	const struct cmk_template *t = &cfg->templates[0];
	uid_t uid;
	gid_t gid;

	assert_string_equal(cfg->openbao.namespace_, "team/ns");
	assert_int_equal(cfg->openbao.timeout, 90);
	assert_int_equal(cfg->openbao.mode, CMK_MODE_ISSUE);
	assert_int_equal(cfg->openbao.max_retries, 0);
	assert_int_equal(t->n_alt_names, 3);
	assert_string_equal(t->alt_names[0], "a-{tenant_id}.x");
	assert_string_equal(t->alt_names[1], "b.{tenant_id}.y");
	assert_string_equal(t->alt_names[2], "c.z");
	assert_int_equal(t->key_type, CMK_KEY_EC);
	assert_int_equal(t->key_bits, 384);
	assert_int_equal(t->n_aliases, 2);
	assert_string_equal(t->aliases[1], "hsm_1");
	assert_string_equal(cmk_config_role(cfg, t), "luna-role");
	assert_int_equal(t->verify, CMK_VERIFY_KMIP);
	assert_ptr_equal(cmk_config_template(cfg, "hsm_1"), t);
	assert_int_equal(cfg->renewal.renew_before, 10 * 86400);
	assert_int_equal(cfg->renewal.grace_period, 0);
	assert_int_equal(cfg->renewal.check_interval, 30);
	assert_int_equal(cfg->renewal.max_parallel, 64);
	assert_int_equal(cfg->renewal.max_ops_per_minute, 100000);
	assert_int_equal(cfg->renewal.jitter, 0);
	assert_int_equal(cfg->fuse.cert_mode, 0440);
	assert_int_equal(cfg->fuse.key_mode, 0440);
	assert_int_equal(cfg->fuse.ca_mode, 0400);

	/* A tenant section that sets only the owner takes the group from [fuse]. */
	assert_int_equal(cfg->n_owners, 2);
	cmk_config_owner(cfg, "acme-corp-12345", &uid, &gid);
	assert_int_equal(uid, 77);
	assert_int_equal(gid, 4321);
	cmk_config_owner(cfg, "other", &uid, &gid);
	assert_int_equal(uid, 0);
	assert_int_equal(gid, 88);
	cmk_config_owner(cfg, "unlisted", &uid, &gid);
	assert_int_equal(uid, 1234);
	assert_int_equal(gid, 4321);

	cmk_config_free(cfg);
	free(full);
	free(text);
}

static void test_relative_paths_are_taken_from_the_file_directory(void **state)
{
	struct fixture *f = *state;
	char sub[512], conf[600], expect[700], cwd[PATH_MAX];
	char *text = edit(BASE, "path = store\n", "path = /var/lib/cmkcert/store\n");
	char *text2 = edit(text, "master_key = master.key", "master_key = ../master.key");
	struct cmk_config *cfg = NULL;
	int rc;

	snprintf(sub, sizeof(sub), "%s/etc", f->dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	snprintf(conf, sizeof(conf), "%s/cmkcert.conf", sub);
	write_file(conf, text2, strlen(text2), 0644);

	/* Loaded by a relative name from elsewhere: the paths still come out absolute. */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(f->dir), 0);
	rc = cmk_config_load("etc/cmkcert.conf", &cfg);
	/* Back before any assertion can end the test: the other tests read conf/ relative to it. */
	assert_int_equal(chdir(cwd), 0);
	if (rc != 0)
		fail_msg("load failed: %d %s", rc, cmk_errdetail());

	assert_string_equal(cfg->path, "etc/cmkcert.conf");
	snprintf(expect, sizeof(expect), "%s/ca.pem", sub);
	assert_string_equal(cfg->openbao.ca_cert, expect);
	snprintf(expect, sizeof(expect), "%s/bao.token", sub);
	assert_string_equal(cfg->auth.token_path, expect);
	snprintf(expect, sizeof(expect), "%s/../master.key", sub);
	assert_string_equal(cfg->keys.master_key, expect);
	snprintf(expect, sizeof(expect), "%s/audit.log", sub);
	assert_string_equal(cfg->audit.path, expect);
	assert_string_equal(cfg->store.path, "/var/lib/cmkcert/store");
	cmk_config_free(cfg);
	free(text2);
	free(text);
}

static void test_layout_tolerance(void **state)
{
	struct fixture *f = *state;
	/* BOM, CRLF, indentation, comments and trailing blanks; an indented key is its own key, not a continuation. */
	static const char text[] =
		"\xef\xbb\xbf# comment\r\n"
		"[openbao]   ; section comment\r\n"
		"  address = https://bao.example:8200/  \r\n"
		"  ca_cert = ca.pem\r\n"
		"\tpki_mount = pki\r\n"
		"role: client ; inline comment\r\n"
		"[auth]\nmethod = token\ntoken_path = t\n[store]\npath = s\n[keys]\nmaster_key = master.key\n"
		"[audit]\npath = a\n[template:x]\ncommon_name = {tenant_id}\nttl = 1h";
	struct cmk_config *cfg = load_ok(f, text);
	char expect[1024];

	assert_string_equal(cfg->openbao.address, "https://bao.example:8200");
	snprintf(expect, sizeof(expect), "%s/ca.pem", f->dir);
	assert_string_equal(cfg->openbao.ca_cert, expect);
	assert_string_equal(cfg->openbao.pki_mount, "pki");
	assert_string_equal(cfg->openbao.role, "client");
	assert_int_equal(cfg->templates[0].ttl, 3600);
	cmk_config_free(cfg);
}

static void test_address_forms(void **state)
{
	static const struct {
		const char *in, *out;
	} good[] = {
		{ "https://bao.example", "https://bao.example" },
		{ "https://bao.example:8200//", "https://bao.example:8200" },
		{ "https://127.0.0.1:8200", "https://127.0.0.1:8200" },
		{ "https://[::1]:8200", "https://[::1]:8200" },
		{ "https://[::1]", "https://[::1]" },
	};
	struct fixture *f = *state;
	char line[128];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(line, sizeof(line), "address = %s\n", good[i].in);
		char *text = edit(BASE, "address = https://bao.example:8200\n", line);
		struct cmk_config *cfg = load_ok(f, text);

		assert_string_equal(cfg->openbao.address, good[i].out);
		cmk_config_free(cfg);
		free(text);
	}
}

static void test_template_expand(void **state)
{
	char *s;

	(void)state;
	s = cmk_template_expand("tenant-{tenant_id}.{tenant_id}.internal", "acme-corp-12345");
	assert_string_equal(s, "tenant-acme-corp-12345.acme-corp-12345.internal");
	free(s);
	s = cmk_template_expand("{tenant_id}", "t");
	assert_string_equal(s, "t");
	free(s);
	s = cmk_template_expand("fixed.internal", "t");
	assert_string_equal(s, "fixed.internal");
	free(s);
	s = cmk_template_expand("{tenant}-{tenant_id", "t");
	assert_string_equal(s, "{tenant}-{tenant_id");
	free(s);
}

static void test_value_names(void **state)
{
	(void)state;
	assert_string_equal(cmk_verify_name(CMK_VERIFY_TLS), "tls");
	assert_string_equal(cmk_verify_name(CMK_VERIFY_KMIP), "kmip");
	assert_string_equal(cmk_verify_name(CMK_VERIFY_NONE), "none");
	assert_string_equal(cmk_verify_name((enum cmk_verify)7), "unknown");
	assert_string_equal(cmk_key_type_name(CMK_KEY_RSA), "rsa");
	assert_string_equal(cmk_key_type_name(CMK_KEY_EC), "ec");
	assert_string_equal(cmk_mode_name(CMK_MODE_ISSUE), "issue");
	assert_string_equal(cmk_auth_method_name(CMK_AUTH_APPROLE), "approle");
}

static void test_environment_and_missing_file(void **state)
{
	struct fixture *f = *state;
	struct cmk_config *cfg = NULL;
	char missing[512], expect[600];

	write_conf(f, BASE);
	assert_int_equal(setenv("CMKCERT_CONF", f->conf, 1), 0);
	assert_int_equal(cmk_config_load(NULL, &cfg), 0);
	assert_string_equal(cfg->path, f->conf);
	cmk_config_free(cfg);

	snprintf(missing, sizeof(missing), "%s/nope.conf", f->dir);
	assert_int_equal(setenv("CMKCERT_CONF", missing, 1), 0);
	/* A missing configuration is a configuration error (the CLI's exit 2), naming the file. */
	assert_int_equal(cmk_config_load(NULL, &cfg), CMK_ERR_CONFIG);
	assert_null(cfg);
	snprintf(expect, sizeof(expect), "%s: No such file or directory", missing);
	assert_string_equal(cmk_errdetail(), expect);
	assert_int_equal(unsetenv("CMKCERT_CONF"), 0);

	assert_int_equal(cmk_config_load(missing, &cfg), CMK_ERR_CONFIG);
	assert_string_equal(cmk_errdetail(), expect);
}

static void test_writable_config_file_is_refused(void **state)
{
	struct fixture *f = *state;
	struct cmk_config *cfg = NULL;

	write_conf(f, BASE);
	assert_int_equal(chmod(f->conf, 0664), 0);
	assert_int_equal(cmk_config_load(f->conf, &cfg), CMK_ERR_PERM);
	assert_null(cfg);
	assert_contains(cmk_errdetail(), f->conf);
	assert_contains(cmk_errdetail(), "0664");
}

static char last_warning[1024];

static void remember_warning(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)arg;
	if (level == CMK_LOG_WARN)
		snprintf(last_warning, sizeof(last_warning), "%s", msg);
}

static void test_key_mode_readable_by_others_warns(void **state)
{
	struct fixture *f = *state;
	char *text = append(BASE, "[fuse]\nkey_mode = 0444\n");
	struct cmk_config *cfg;

	cmk_set_log(remember_warning, NULL, CMK_LOG_DEBUG);
	last_warning[0] = '\0';
	cfg = load_ok(f, BASE);
	assert_string_equal(last_warning, "");
	cmk_config_free(cfg);

	cfg = load_ok(f, text);
	assert_int_equal(cfg->fuse.key_mode, 0444);
	assert_contains(last_warning, ":24: [fuse] key_mode 0444 lets every local user read private keys");
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	cmk_config_free(cfg);
	free(text);
}

/* ---- what is refused --------------------------------------------------- */

static void test_unknown_key(void **state)
{
	struct fixture *f = *state;

	expect_edit_refused(f, "role = client\n", "role = client\ncolour = blue\n", 6,
			    "[openbao] colour: unknown key");
	/* The value of an unknown key is never shown: it could be a secret put in the wrong place. */
	assert_null(strstr(cmk_errdetail(), "blue"));
	assert_contains(cmk_errdetail(), "known keys: address, ca_cert");

	expect_append_refused(f, "[fuse]\nmode = 0444\n", 24, "[fuse] mode: unknown key");
	expect_append_refused(f, "Common_Name = x\n", 23, "[template:thales_luna] Common_Name: unknown key");
	expect_edit_refused(f, "[openbao]\n", "address = x\n[openbao]\n", 1, "address: outside any section");
	expect_append_refused(f, "= value\n", 23, "[template:thales_luna]: missing key name");
}

static void test_unknown_section(void **state)
{
	struct fixture *f = *state;

	expect_append_refused(f, "[openbaoo]\n", 23, "[openbaoo]: unknown section");
	expect_append_refused(f, "[ store ]\npath = x\n", 23, "[ store ]: unknown section");
	expect_append_refused(f, "[tenants:x]\n", 23, "[tenants:x]: unknown section");
	expect_append_refused(f, "[templatex]\n", 23, "[templatex]: unknown section");
}

static void test_syntax_errors(void **state)
{
	struct fixture *f = *state;
	char longline[400];

	expect_append_refused(f, "garbage\n", 23, "expected \"key = value\"");
	expect_append_refused(f, "[renewal\n", 23, "section header without ']'");
	expect_append_refused(f, "[renewal] x\n", 23, "unexpected text after ']'");
	expect_append_refused(f, "# ok\nrole = a\x01\n", 24, "control character 0x01");
	/* Passes our reader but not inih, for which " ;" starts a comment before the '='. */
	expect_append_refused(f, "# ok\nrole ;= a\n", 24, "expected \"key = value\"");

	/* inih would cut a long line in two and read its tail as another line; we refuse it whole. */
	snprintf(longline, sizeof(longline), "alt_names = %0300d\n", 0);
	expect_append_refused(f, longline, 23, "line of ");
}

static void test_duplicates(void **state)
{
	struct fixture *f = *state;

	expect_edit_refused(f, "role = client\n", "role = client\nrole = other\n", 6,
			    "[openbao] role: set twice (first on line 5)");
	expect_append_refused(f, "[store]\npath = x\n", 23, "[store]: duplicate section (first on line 11)");
	expect_append_refused(f, "[template:thales_luna]\ncommon_name = {tenant_id}\nttl = 1h\n", 23,
			      "[template:thales_luna]: duplicate section (first on line 20)");
	expect_append_refused(f, "[tenant:t]\nowner = 1\n[tenant:t]\nowner = 2\n", 25,
			      "[tenant:t]: duplicate section");
}

static void test_duration_with_unknown_unit(void **state)
{
	struct fixture *f = *state;

	expect_append_refused(f, "[renewal]\nrenew_before = 30x\n", 24,
			      "[renewal] renew_before: duration \"30x\": unknown unit");
	expect_append_refused(f, "[renewal]\njitter = 10\n", 24, "[renewal] jitter: duration \"10\": missing unit");
	expect_edit_refused(f, "ttl = 8760h", "ttl = 0h", 22, "[template:thales_luna] ttl: 0s is too short");
	expect_edit_refused(f, "role = client\n", "role = client\ntimeout = 2h\n", 6,
			    "[openbao] timeout: 2h is too long, at most 1h");
}

static void test_missing_master_key_file(void **state)
{
	struct fixture *f = *state;
	char expect[1024];

	snprintf(expect, sizeof(expect), "[keys] master_key: %s/missing.key: No such file or directory", f->dir);
	expect_edit_refused(f, "master_key = master.key", "master_key = missing.key", 15, expect);
}

static void test_master_key_readable_by_others(void **state)
{
	struct fixture *f = *state;
	char expect[1024];

	assert_int_equal(chmod(f->key, 0644), 0);
	snprintf(expect, sizeof(expect), "[keys] master_key: %s: mode 0644", f->key);
	expect_refused(f, BASE, 15, expect);
	assert_contains(cmk_errdetail(), "0400 or 0600");

	assert_int_equal(chmod(f->key, 0640), 0);
	expect_refused(f, BASE, 15, "[keys] master_key: ");
	assert_contains(cmk_errdetail(), "0640");

	/* 0400 is fine too. */
	assert_int_equal(chmod(f->key, 0400), 0);
	cmk_config_free(load_ok(f, BASE));
}

static void test_master_key_wrong_size(void **state)
{
	struct fixture *f = *state;
	static const unsigned char bytes[33] = { 0 };
	char expect[1024];

	write_file(f->key, bytes, 31, 0600);
	snprintf(expect, sizeof(expect), "[keys] master_key: %s: 31 bytes, must be exactly 32", f->key);
	expect_refused(f, BASE, 15, expect);
	write_file(f->key, bytes, 33, 0600);
	expect_refused(f, BASE, 15, "[keys] master_key: ");
	assert_contains(cmk_errdetail(), "33 bytes");
}

/*
 * A Kubernetes Secret volume: <dir>/master.key -> ..data/master.key, and
 * ..data -> ..<timestamp>, the directory holding the real file (kubelet
 * swaps ..data to publish a new version).  Two levels of links: the file
 * they lead to is judged (size, owner, mode), not the links.
 */
static void make_secret_volume(const struct fixture *f, const unsigned char *key, size_t len, mode_t mode,
			       char link[512])
{
	char vol[300], stamp[400], real[500], data[400];
	static const char stamp_name[] = "..2024_06_01_12_00_00.123456789";

	snprintf(vol, sizeof(vol), "%s/secret", f->dir);
	snprintf(stamp, sizeof(stamp), "%s/%s", vol, stamp_name);
	snprintf(real, sizeof(real), "%s/master.key", stamp);
	snprintf(data, sizeof(data), "%s/..data", vol);
	snprintf(link, 512, "%s/master.key", vol);
	assert_int_equal(mkdir(vol, 0755), 0);
	assert_int_equal(mkdir(stamp, 0755), 0);
	write_file(real, key, len, mode);
	assert_int_equal(symlink(stamp_name, data), 0);
	assert_int_equal(symlink("..data/master.key", link), 0);
}

static void test_master_key_in_a_kubernetes_secret_volume(void **state)
{
	struct fixture *f = *state;
	static const unsigned char key[32] = { 7 };
	struct cmk_config *cfg;
	char link[512], *text;

	make_secret_volume(f, key, sizeof(key), 0400, link);
	text = edit(BASE, "master_key = master.key", "master_key = secret/master.key");
	cfg = load_ok(f, text);
	/* The configured path is kept as given: kubelet re-points ..data, the link stays. */
	assert_string_equal(cfg->keys.master_key, link);
	cmk_config_free(cfg);
	free(text);
}

static void test_master_key_link_to_an_unsafe_target(void **state)
{
	struct fixture *f = *state;
	static const unsigned char key[33] = { 7 };
	char link[512], target[300], *text;

	/* A link to a file others can read is refused, naming the mode of the file it leads to. */
	make_secret_volume(f, key, 32, 0644, link);
	text = edit(BASE, "master_key = master.key", "master_key = secret/master.key");
	expect_refused(f, text, 15, "[keys] master_key: ");
	assert_contains(cmk_errdetail(), "mode 0644");
	assert_contains(cmk_errdetail(), "0400 or 0600");

	/* The size judged is the target's (31 bytes), not the link's ("..data/master.key" is 17). */
	snprintf(target, sizeof(target), "%s/secret/..data/master.key", f->dir);
	write_file(target, key, 31, 0400);
	expect_refused(f, text, 15, "[keys] master_key: ");
	assert_contains(cmk_errdetail(), "31 bytes, must be exactly 32");

	/* A target owned by another user (root can make one) is refused too. */
	write_file(target, key, 32, 0400);
	cmk_config_free(load_ok(f, text));
	if (geteuid() == 0) {
		assert_int_equal(chown(target, 4321, 4321), 0);
		expect_refused(f, text, 15, "[keys] master_key: ");
		assert_contains(cmk_errdetail(), "owned by uid 4321");
	}
	free(text);
}

static void test_bad_modes(void **state)
{
	static const struct {
		const char *value, *why;
	} bad[] = {
		{ "0644", "0644: only read bits" },
		{ "0500", "0500: only read bits" },
		{ "0600", "0600: only read bits" },
		{ "rw", "\"rw\": must be an octal mode" },
		{ "0888", "\"0888\": must be an octal mode" },
		{ "04444", "\"04444\": must be an octal mode" },
		{ "4444", "4444: setuid" },
		{ "0044", "0044: the owner must be able to read" },
		{ "-444", "\"-444\": must be an octal mode" },
	};
	struct fixture *f = *state;
	char more[64], what[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(more, sizeof(more), "[fuse]\nkey_mode = %s\n", bad[i].value);
		snprintf(what, sizeof(what), "[fuse] key_mode: %s", bad[i].why);
		expect_append_refused(f, more, 24, what);
	}
}

static void test_missing_required_key(void **state)
{
	struct fixture *f = *state;

	/* Reported at the section's header line. */
	expect_edit_refused(f, "pki_mount = pki\n", "# pki_mount\n", 1, "[openbao] pki_mount: missing (required)");
	expect_edit_refused(f, "ttl = 8760h\n", "\n", 20, "[template:thales_luna] ttl: missing (required)");
	expect_edit_refused(f, "method = token\n", "\n", 7, "[auth] method: missing (required)");
	/* A whole section missing: no line to point at, so the file. */
	expect_edit_refused(f, "[store]\npath = store\n", "\n\n", 0,
			    "[store] path: missing (the file has no [store] section)");
	expect_edit_refused(f, "[template:thales_luna]\ncommon_name = tenant-{tenant_id}.internal\nttl = 8760h\n",
			    "\n", 0, "no [template:<type>] section");
	expect_edit_refused(f, "role = client\n", "role =\n", 5, "[openbao] role: empty value");
	expect_edit_refused(f, "ca_cert = ca.pem", "ca_cert = \"/etc/ca.pem\"", 3,
			    "[openbao] ca_cert: values are taken literally; remove the quotes");
}

static void test_auth_keys_follow_the_method(void **state)
{
	struct fixture *f = *state;

	expect_edit_refused(f, "method = token\ntoken_path = bao.token\n", "method = kubernetes\n\n", 7,
			    "[auth] role: missing (required with method = kubernetes)");
	expect_edit_refused(f, "method = token\ntoken_path = bao.token\n", "method = approle\nrole_id_path = r\n", 7,
			    "[auth] secret_id_path: missing (required with method = approle)");
	expect_edit_refused(f, "method = token", "method = cert", 8,
			    "[auth] method: \"cert\": must be kubernetes, approle or token");
}

static void test_template_patterns(void **state)
{
	struct fixture *f = *state;

	expect_edit_refused(f, "common_name = tenant-{tenant_id}.internal", "common_name = tenant.internal", 21,
			    "[template:thales_luna] common_name: \"tenant.internal\": must contain {tenant_id}");
	expect_edit_refused(f, "common_name = tenant-{tenant_id}.internal", "common_name = {tenant}.{tenant_id}", 21,
			    "[template:thales_luna] common_name: \"{tenant}.{tenant_id}\": unknown placeholder "
			    "\"{tenant}\"");
	expect_edit_refused(f, "common_name = tenant-{tenant_id}.internal", "common_name = {tenant_id}, O=Evil", 21,
			    "[template:thales_luna] common_name: \"{tenant_id}, O=Evil\": may only contain");
	expect_append_refused(f, "alt_names = a.{tenant_id}, {type}.x\n", 23,
			      "[template:thales_luna] alt_names: \"{type}.x\": unknown placeholder");
	expect_append_refused(f, "alt_names = a,,b\n", 23,
			      "[template:thales_luna] alt_names: entry 2 of the comma-separated list is empty");
	expect_append_refused(f, "key_type = ec\nkey_bits = 4096\n", 24,
			      "[template:thales_luna] key_bits: 4096 does not fit key_type = ec (256 or 384)");
	/* key_bits may come before key_type: the pair is checked when the section ends. */
	expect_append_refused(f, "key_bits = 256\nkey_type = rsa\n", 23,
			      "[template:thales_luna] key_bits: 256 does not fit key_type = rsa");
	expect_append_refused(f, "key_type = dsa\n", 23, "[template:thales_luna] key_type: \"dsa\": must be rsa or ec");
	expect_append_refused(f, "verify = maybe\n", 23,
			      "[template:thales_luna] verify: \"maybe\": must be tls, kmip or none");
	expect_append_refused(f, "role = ../root\n", 23, "[template:thales_luna] role \"../root\": may only contain");
}

static void test_bad_template_type_name(void **state)
{
	struct fixture *f = *state;

	expect_edit_refused(f, "[template:thales_luna]", "[template:Thales-Luna]", 20,
			    "[template:Thales-Luna] type \"Thales-Luna\": may only contain a-z, 0-9 and _");
	expect_edit_refused(f, "[template:thales_luna]", "[template:]", 20, "[template:] type: must not be empty");
}

static void test_duplicate_alias(void **state)
{
	struct fixture *f = *state;
	static const char second[] = "[template:aws_kms]\ncommon_name = x-{tenant_id}\nttl = 1h\n";
	char more[256];

	/* Lines: 23 aliases, 24 [template:aws_kms], 25 common_name, 26 ttl, 27 aliases. */
	snprintf(more, sizeof(more), "aliases = luna\n%saliases = kms, luna\n", second);
	expect_append_refused(f, more, 27,
			      "[template:aws_kms] aliases: \"luna\" is already an alias of [template:thales_luna] (line 20)");
	snprintf(more, sizeof(more), "%saliases = thales_luna\n", second);
	expect_append_refused(f, more, 26,
			      "[template:aws_kms] aliases: \"thales_luna\" is already the type of [template:thales_luna]");
	expect_append_refused(f, "aliases = a, b, a\n", 23, "[template:thales_luna] aliases: \"a\" is listed twice");
	expect_append_refused(f, "aliases = thales_luna\n", 23,
			      "[template:thales_luna] aliases: \"thales_luna\" is this template's own type");
	expect_append_refused(f, "aliases = Luna\n", 23, "[template:thales_luna] aliases \"Luna\": may only contain");
	/* A later template may not take a name that is already an alias. */
	expect_append_refused(f, "aliases = luna\n[template:luna]\n", 24,
			      "[template:luna]: \"luna\" is already an alias of [template:thales_luna] (line 20)");
}

static void test_numbers_out_of_range(void **state)
{
	struct fixture *f = *state;

	expect_append_refused(f, "[renewal]\nmax_parallel = 0\n", 24,
			      "[renewal] max_parallel: 0 is out of range, must be 1 to 64");
	expect_append_refused(f, "[renewal]\nmax_parallel = 65\n", 24, "[renewal] max_parallel: 65 is out of range");
	expect_append_refused(f, "[renewal]\nmax_parallel = four\n", 24,
			      "[renewal] max_parallel: \"four\" is not a whole number");
	expect_append_refused(f, "[renewal]\nmax_ops_per_minute = 99999999999999999999999\n", 24,
			      "[renewal] max_ops_per_minute: 99999999999999999999999 is out of range");
	expect_edit_refused(f, "role = client\n", "role = client\nmax_retries = 21\n", 6,
			    "[openbao] max_retries: 21 is out of range, must be 0 to 20");
	expect_edit_refused(f, "role = client\n", "role = client\nmax_retries = -1\n", 6,
			    "[openbao] max_retries: \"-1\" is not a whole number");
	expect_edit_refused(f, "master_key = master.key\n", "master_key = master.key\npool_size = 1001\n", 16,
			    "[keys] pool_size: 1001 is out of range, must be 0 to 1000");
	expect_append_refused(f, "pool_size = -1\n", 23, "[template:thales_luna] pool_size: \"-1\" is not a whole number");
}

/* [keys] pool_size for every key type and size; a template's own replaces it for its own. */
static void test_pool_sizes(void **state)
{
	struct fixture *f = *state;
	char *text = edit(BASE, "master_key = master.key\n", "master_key = master.key\npool_size = 5\n");
	char *more = cmk_asprintf("%s\npool_size = 2\n[template:aws_kms]\ncommon_name = t-{tenant_id}.aws\n"
				  "key_type = ec\nttl = 1h\npool_size = 0\n", text);
	struct cmk_config *cfg = load_ok(f, more);

	assert_int_equal(cfg->keys.pool_size, 5);
	assert_int_equal(cfg->templates[0].pool_size, 2);
	assert_int_equal(cfg->templates[1].pool_size, 0);
	cmk_config_free(cfg);
	free(more);
	free(text);
}

static void test_bad_address(void **state)
{
	struct fixture *f = *state;
	static const char line[] = "address = https://bao.example:8200";

	expect_edit_refused(f, line, "address = http://bao.example:8200", 2,
			    "[openbao] address: must start with https://");
	expect_edit_refused(f, line, "address = https://bao.example:8200/v1", 2,
			    "[openbao] address: must be https://HOST[:PORT] without a path");
	expect_edit_refused(f, line, "address = https://admin:hunter2@bao.example:8200", 2,
			    "[openbao] address: must not contain a user name or password");
	assert_null(strstr(cmk_errdetail(), "hunter2"));
	expect_edit_refused(f, line, "address = https://bao.example:0", 2,
			    "[openbao] address: endpoint \"bao.example:0\": the port must be 1 to 65535");
	expect_edit_refused(f, line, "address = https://", 2, "[openbao] address: endpoint \":443\": empty host");
	expect_edit_refused(f, line, "address = https://bao_example", 2, "[openbao] address: endpoint");
}

static void test_bad_bao_paths_and_names(void **state)
{
	struct fixture *f = *state;

	expect_edit_refused(f, "pki_mount = pki", "pki_mount = /pki", 4,
			    "[openbao] pki_mount \"/pki\": must not start or end with '/'");
	expect_edit_refused(f, "pki_mount = pki", "pki_mount = pki/../sys", 4, "[openbao] pki_mount \"pki/../sys\"");
	expect_edit_refused(f, "role = client", "role = a b", 5, "[openbao] role \"a b\": may only contain");
	expect_edit_refused(f, "[keys]\n", "[keys]\nprovider = vault\n", 15,
			    "[keys] provider: \"vault\": unknown provider, the only one is local");
}

static void test_tenant_sections(void **state)
{
	struct fixture *f = *state;

	expect_append_refused(f, "[tenant:a/b]\nowner = 1\n", 23,
			      "[tenant:a/b] tenant_id \"a/b\": may only contain letters, digits and . _ ~ -");
	expect_append_refused(f, "[tenant:..]\nowner = 1\n", 23, "[tenant:..] tenant_id \"..\": not allowed");
	expect_append_refused(f, "[tenant:t]\n[fuse]\n", 23, "[tenant:t]: sets neither owner nor group");
	expect_append_refused(f, "[tenant:t]\nowner = no_such_user_cmkcert\n", 24,
			      "[tenant:t] owner: no user \"no_such_user_cmkcert\" on this system");
	expect_append_refused(f, "[fuse]\ngroup = no_such_group_cmkcert\n", 24,
			      "[fuse] group: no group \"no_such_group_cmkcert\" on this system");
	expect_append_refused(f, "[fuse]\nowner = 4294967295\n", 24, "[fuse] owner: 4294967295 is out of range for a user id");
}

/* ---- [control] ----------------------------------------------------------- */

static void test_control_section(void **state)
{
	struct fixture *f = *state;
	char *text = append(BASE, "[control]\nsocket = run/ctl.sock\nallow = root, 4321, @0, @4322\nmode = 0600\n"
				  "group = 4323\n");
	struct cmk_config *cfg = load_ok(f, text);
	char want[400];
	gid_t groups[] = { 7, 4322 };

	snprintf(want, sizeof(want), "%s/run/ctl.sock", f->dir);
	assert_string_equal(cfg->control.socket, want);
	assert_false(cfg->control.socket_default);
	assert_int_equal(cfg->control.n_allow, 4);
	assert_false(cfg->control.allow[0].is_group);
	assert_int_equal(cfg->control.allow[0].id, 0);
	assert_int_equal(cfg->control.allow[1].id, 4321);
	assert_true(cfg->control.allow[2].is_group);
	assert_int_equal(cfg->control.allow[2].id, 0);
	assert_true(cfg->control.allow[3].is_group);
	assert_int_equal(cfg->control.allow[3].id, 4322);
	assert_int_equal(cfg->control.mode, 0600);
	assert_int_equal(cfg->control.gid, 4323);

	/* Root always; a listed uid; a listed group as primary or supplementary group; no one else. */
	assert_true(cmk_config_control_allows(cfg, 0, 99, NULL, 0));
	assert_true(cmk_config_control_allows(cfg, 4321, 99, NULL, 0));
	assert_true(cmk_config_control_allows(cfg, 1000, 4322, NULL, 0));
	assert_true(cmk_config_control_allows(cfg, 1000, 99, groups, 2));
	assert_false(cmk_config_control_allows(cfg, 1000, 99, groups, 1));
	assert_false(cmk_config_control_allows(cfg, 4322, 99, NULL, 0));     /* a gid is not a uid */
	assert_false(cmk_config_control_allows(cfg, 4323, 4323, NULL, 0));   /* the socket's group is not allowed */
	cmk_config_free(cfg);
	free(text);

	/* "none": no control socket; an empty allow list: root only. */
	text = append(BASE, "[control]\nsocket = none\nallow =\n");
	cfg = load_ok(f, text);
	assert_null(cfg->control.socket);
	assert_int_equal(cfg->control.n_allow, 0);
	assert_false(cmk_config_control_allows(cfg, 1, 1, NULL, 0));
	cmk_config_free(cfg);
	free(text);
}

static void test_control_mistakes(void **state)
{
	struct fixture *f = *state;
	char longpath[200], line[260];

	expect_append_refused(f, "[control]\nallow = no_such_user_cmkcert\n", 24,
			      "[control] allow: no user \"no_such_user_cmkcert\" on this system");
	expect_append_refused(f, "[control]\nallow = @no_such_group_cmkcert\n", 24,
			      "[control] allow: no group \"no_such_group_cmkcert\" on this system");
	expect_append_refused(f, "[control]\nallow = 1,,2\n", 24, "[control] allow: entry 2 of the comma-separated list is empty");
	expect_append_refused(f, "[control]\nmode = 0770\n", 24, "[control] mode: 0770: only read and write bits");
	expect_append_refused(f, "[control]\nmode = 0466\n", 24, "[control] mode: 0466: the owner must be able to read and write");
	expect_append_refused(f, "[control]\nmode = rw\n", 24, "[control] mode: \"rw\": must be an octal mode");
	expect_append_refused(f, "[control]\nport = 80\n", 24, "[control] port: unknown key (known keys: socket, allow, mode, group)");
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	snprintf(line, sizeof(line), "[control]\nsocket = /%.*s\n", 107, longpath);
	expect_append_refused(f, line, 24, "[control] socket: \"/xxxx");
	assert_contains(cmk_errdetail(), "...\": a unix socket path has at most 107 bytes");
	snprintf(line, sizeof(line), "[control]\nsocket = /%.*s\n", 106, longpath);
	{
		char *text = append(BASE, line);
		struct cmk_config *cfg = load_ok(f, text);

		assert_int_equal(strlen(cfg->control.socket), 107);
		cmk_config_free(cfg);
		free(text);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_shipped_example_loads_as_written, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lookup_by_type_or_alias, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defaults_when_keys_are_absent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_method_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_key_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relative_paths_are_taken_from_the_file_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layout_tolerance, setup, teardown),
		cmocka_unit_test_setup_teardown(test_address_forms, setup, teardown),
		cmocka_unit_test(test_template_expand),
		cmocka_unit_test(test_value_names),
		cmocka_unit_test_setup_teardown(test_environment_and_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writable_config_file_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_mode_readable_by_others_warns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duration_with_unknown_unit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_master_key_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_master_key_readable_by_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_master_key_wrong_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_master_key_in_a_kubernetes_secret_volume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_master_key_link_to_an_unsafe_target, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_required_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_keys_follow_the_method, setup, teardown),
		cmocka_unit_test_setup_teardown(test_template_patterns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_template_type_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_alias, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numbers_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_address, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_bao_paths_and_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tenant_sections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_mistakes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
