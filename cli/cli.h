/*
 * cli.h - shared pieces of the cmkcert command-line front end.
 */
#ifndef CMKCERT_CLI_H
#define CMKCERT_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#include "cmkcert/log.h"

/* Exit codes (documented in README.md and cmkcert(1)). */
enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,      /* the operation ran and failed (keystore refused, verification failed, ...) */
	EXIT_USAGE = 2,       /* usage error or bad input (names, JSON, configuration) */
	EXIT_OPENBAO = 3,     /* OpenBao unreachable, sealed, or its TLS certificate not trusted */
	EXIT_WAIT = 4,        /* --wait: the change is committed, but a running cmkcertfs did not show it in time */
};

struct cli {
	const char *config;   /* -c FILE, NULL = default */
	bool json;            /* --json: machine-readable output on stdout */
	int verbose;
	const char *prog;
	char **argv;          /* as given: a run whose store open is wedged starts again (cli_open_ctx) */
	bool read_stdin;      /* standard input was consumed: the run cannot start again */
	bool restartable;     /* the command may start again at any point (what it changed, a new run
				 finds done) */
	bool wait;            /* --wait: return once every running cmkcertfs of the store shows the change */
	int64_t wait_ms;      /* how long --wait waits at most */
	bool journal;         /* stderr is the systemd journal: lines carry "<N>" priorities (log.h) */
};

/* Exit code for a library result code. */
int cli_exit_code(int rc);

/*
 * Text output.  Each writes one line: the formatted text with control
 * characters, DEL and invalid UTF-8 escaped as \xNN (cmk_escape), then a
 * newline.  cli_error() prefixes "cmkcert: " and writes to stderr;
 * cli_log() does the same for a library log line, with its level's name.
 * When stderr is the journal, both start with the syslog priority ("<3>"
 * for errors).
 */
void cli_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_error(const struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_log(const struct cli *cli, enum cmk_log_level level, const char *msg);

/* A malloc'd escaped copy of `s` (NULL gives ""), for text printed in pieces; NULL when memory runs out. */
char *cli_escaped(const char *s);

/* Print "cmkcert: <what>: <detail>" for a failure (text mode) or a JSON error object (json mode). */
int cli_fail(const struct cli *cli, int rc, const char *what);

/* Print a usage error and return EXIT_USAGE. */
int cli_usage_error(const struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print a JSON value on stdout (pretty) and release it. */
void cli_print_json(json_t *v);

/* Commands. Each returns an exit code. */
int cmd_check(struct cli *cli, int argc, char **argv);
int cmd_keystore(struct cli *cli, int argc, char **argv);
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_show(struct cli *cli, int argc, char **argv);
int cmd_audit(struct cli *cli, int argc, char **argv);
int cmd_renew(struct cli *cli, int argc, char **argv);
int cmd_revoke(struct cli *cli, int argc, char **argv);
int cmd_keystore_remove(struct cli *cli, int argc, char **argv);
int cmd_verify(struct cli *cli, int argc, char **argv);
int cmd_pool(struct cli *cli, int argc, char **argv);

/* cmk_ctx_open() for this run. */
struct cmk_ctx;
int cli_open_ctx(const struct cli *cli, struct cmk_ctx **ctx);

/*
 * The store's wedged callback for this run (set in main()): wedged while
 * opening the store, the run starts again; later, it stops with exit 1.
 */
void cli_on_wedged(const char *path, bool whole_store, void *arg);

/* --wait or --wait=SECONDS (arg NULL: the default, 10 s).  0, or EXIT_USAGE with the message printed. */
int cli_parse_wait(struct cli *cli, const char *arg);

/*
 * What the store's running cmkcertfs mounts show after a committed change
 * (follow.c): `line` for people ("mount: ..."), `json` for the "mount" field
 * of --json output, `exit` EXIT_WAIT when --wait's deadline passed or the
 * registry could not be read with --wait (`error` says why), else EXIT_OK.
 */
struct cli_follow {
	char *line;
	json_t *json;
	char *error;
	int exit;
};

/* Look at the mounts of the store (with cli->wait: wait for them; cmk_follow_mounts()).  Never fails the operation. */
void cli_follow_mounts(const struct cli *cli, struct cmk_ctx *ctx, struct cli_follow *f);

/*
 * Print the line on stdout (text mode) and the --wait failure on stderr,
 * release `f` (the caller took its own reference to f->json if it kept it)
 * and return f->exit.  Safe on a zeroed struct (returns EXIT_OK).
 */
int cli_follow_report(const struct cli *cli, struct cli_follow *f);

/* Actor name for the audit trail: "cli:uid=N". */
const char *cli_actor(void);

#endif
