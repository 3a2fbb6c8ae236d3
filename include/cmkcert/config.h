/*
 * config.h - the INI configuration (DESIGN §4, cmkcert.conf(5)).
 *
 * cmk_config_load() reads the whole file, checks every section, key and
 * value, and either returns a complete configuration or fails with detail
 * "FILE:LINE: ..." naming the bad key; nothing is half-loaded.
 */
#ifndef CMKCERT_CONFIG_H
#define CMKCERT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CMK_CONFIG_DEFAULT_PATH "/etc/cmkcert/cmkcert.conf"
#define CMK_CONTROL_DEFAULT_SOCKET "/run/cmkcert/control.sock"
#define CMK_CONTROL_SOCKET_MAX 107     /* bytes of a unix socket path (sun_path less its NUL) */
#define CMK_POOL_SIZE_MAX 1000

enum cmk_mode { CMK_MODE_SIGN = 0, CMK_MODE_ISSUE = 1 };
enum cmk_auth_method { CMK_AUTH_KUBERNETES = 0, CMK_AUTH_APPROLE = 1, CMK_AUTH_TOKEN = 2 };
enum cmk_verify { CMK_VERIFY_TLS = 0, CMK_VERIFY_KMIP = 1, CMK_VERIFY_NONE = 2 };
enum cmk_key_type { CMK_KEY_RSA = 0, CMK_KEY_EC = 1 };

struct cmk_template {
	char *type;            /* section name after "template:" */
	char *common_name;     /* pattern with {tenant_id} */
	char **alt_names;      /* patterns with {tenant_id}; n_alt_names entries */
	size_t n_alt_names;
	enum cmk_key_type key_type;
	int key_bits;          /* rsa: 2048, 3072, 4096; ec: 256, 384 */
	int64_t ttl;           /* seconds */
	char **aliases;        /* other type names accepted for this template */
	size_t n_aliases;
	char *role;            /* per-type PKI role, NULL = [openbao] role */
	enum cmk_verify verify;
	int pool_size;         /* keys kept ready for this key type and size (pool.h); -1 = [keys] pool_size */
	int line;              /* line of the section header, for messages */
};

struct cmk_tenant_owner {
	char *tenant;
	uid_t uid;
	gid_t gid;
};

/* One entry of [control] allow: a user (uid) or, written "@group", a group (gid). */
struct cmk_control_peer {
	bool is_group;
	unsigned id;
};

struct cmk_config {
	char *path;            /* file this was loaded from */
	struct {
		char *address;     /* https://host:port, no trailing slash */
		char *ca_cert;
		char *namespace_;  /* NULL when unset */
		int64_t timeout;   /* seconds, default 30 */
		char *pki_mount;
		char *role;
		enum cmk_mode mode;
		int max_retries;   /* default 4 */
	} openbao;
	struct {
		enum cmk_auth_method method;
		char *mount;       /* default: "kubernetes", "approle" per method */
		char *role;
		char *jwt_path;    /* default /var/run/secrets/kubernetes.io/serviceaccount/token */
		char *role_id_path;
		char *secret_id_path;
		char *token_path;
	} auth;
	struct {
		char *path;
	} store;
	struct {
		char *provider;    /* "local" */
		char *master_key;
		int pool_size;     /* keys kept ready per key type and size (pool.h); default 0 = no pool */
	} keys;
	struct {
		int64_t renew_before;     /* default 30d */
		int64_t grace_period;     /* default 7d */
		int64_t check_interval;   /* default 1m */
		int max_parallel;         /* default 4 */
		int max_ops_per_minute;   /* default 60 */
		int64_t jitter;           /* default 10m */
	} renewal;
	struct {
		char *path;
	} audit;
	struct {
		uid_t uid;                /* owner, default 0 */
		gid_t gid;                /* group, default 0 */
		mode_t cert_mode;         /* default 0444 */
		mode_t key_mode;          /* default 0400 */
		mode_t ca_mode;           /* default 0444 */
	} fuse;
	struct {
		char *socket;             /* default CMK_CONTROL_DEFAULT_SOCKET; NULL: "none", no control socket */
		bool socket_default;      /* socket was not set in the file */
		struct cmk_control_peer *allow;  /* who may call besides root; n_allow entries */
		size_t n_allow;
		mode_t mode;              /* of the socket file, default 0660 */
		gid_t gid;                /* group of the socket file, default 0 */
	} control;
	struct cmk_tenant_owner *owners;  /* [tenant:<id>] sections */
	size_t n_owners;
	struct cmk_template *templates;
	size_t n_templates;
};

/*
 * Load and validate `path` (NULL: $CMKCERT_CONF, else the default path).
 * On success *out owns everything; release with cmk_config_free().
 * Errors: CMK_ERR_CONFIG with "FILE: reason" when the file is missing or
 * cannot be opened and "FILE:LINE: ..." for what is wrong in it,
 * CMK_ERR_PERM (the file cannot be read, or it is writable by group or
 * others, or owned by someone other than root or us), CMK_ERR_IO.
 * Relative paths in the file are made absolute against the file's directory.
 * The master key file is checked here (exists, 0400/0600, owner root or us,
 * exactly 32 bytes); its contents are not read.
 */
int cmk_config_load(const char *path, struct cmk_config **out);

void cmk_config_free(struct cmk_config *cfg);

/* Template by type name or alias; NULL when none. */
const struct cmk_template *cmk_config_template(const struct cmk_config *cfg, const char *type_or_alias);

/* Role used for a template: its own role or [openbao] role. */
const char *cmk_config_role(const struct cmk_config *cfg, const struct cmk_template *tpl);

/* Owner of a tenant's files: the [tenant:<id>] section or the [fuse] defaults. */
void cmk_config_owner(const struct cmk_config *cfg, const char *tenant, uid_t *uid, gid_t *gid);

/*
 * May a caller with user `uid`, group `gid` and supplementary groups
 * `groups` (n entries, may be NULL) use the control socket?  Root always
 * may; anyone else when [control] allow names its uid, or a group it is in.
 */
bool cmk_config_control_allows(const struct cmk_config *cfg, uid_t uid, gid_t gid, const gid_t *groups, size_t n);

/*
 * Expand {tenant_id} in a template pattern. Returns a malloc'd string, or
 * NULL when memory runs out.
 */
char *cmk_template_expand(const char *pattern, const char *tenant);

/* "tls", "kmip" or "none" as an enum cmk_verify; -1 for anything else. */
int cmk_verify_parse(const char *s);

/* The configuration words for each value ("tls", "rsa", "sign", "approle"); "unknown" out of range. */
const char *cmk_verify_name(enum cmk_verify v);
const char *cmk_key_type_name(enum cmk_key_type t);
const char *cmk_mode_name(enum cmk_mode m);
const char *cmk_auth_method_name(enum cmk_auth_method m);

#endif
