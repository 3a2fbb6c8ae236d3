/*
 * main.c - cmkcert [-c FILE] [--json] [-v] COMMAND [ARGS]
 *
 * Parses the global options, installs the log callback, hardens the
 * process (it handles private keys) and dispatches to a command.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/http.h"
#include "cmkcert/log.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"
#include "cli.h"

#define CMKCERT_VERSION "0.1.0"

static void usage(FILE *f)
{
	fputs("usage: cmkcert [-c FILE] [--json] [-v] COMMAND [ARGS]\n"
	      "\n"
	      "Commands:\n"
	      "  check [--login]                        reach OpenBao, authenticate, verify the PKI mount and roles\n"
	      "                                         (--login: log in even though the store holds a fresh token)\n"
	      "  keystore add --tenant T --type K [--endpoint HOST:PORT]... [--server-ca FILE]\n"
	      "               [--verify tls|kmip|none]   issue, seal, store, test and activate a certificate\n"
	      "  keystore add --json FILE               the same from a keystore request JSON ('-' = stdin)\n"
	      "  keystore remove --tenant T --type K    revoke the keystore's certificates (CRL-confirmed), forget it\n"
	      "  renew --tenant T --type K | --due      renew one now, or everything that is due\n"
	      "  revoke --tenant T --type K [--reason compromise|superseded|cessation|unspecified]\n"
	      "     these four also take --wait[=SECONDS]: return once every running cmkcertfs of the store\n"
	      "     shows the change (default 10 s); without it they say when the mount will show it\n"
	      "  list [--tenant T] [--type K] [--status S]  certificate records (metadata only)\n"
	      "  show --tenant T --type K [--pem]       one tenant's certificate (--pem: certificate and CA chain)\n"
	      "  audit verify [FILE]                    check the audit trail's chain, MACs and anchor\n"
	      "  audit rotate                           start a new trail file that continues the chain\n"
	      "  verify                                 every active certificate's sealed key opens and matches it\n"
	      "  pool fill [--type K]...                generate keys until every key pool (or those of K) is full\n"
	      "  pool status [--json [--keys]]          keys ready in each pool, and what became of the others\n"
	      "\n"
	      "Options:\n"
	      "  -c, --config FILE   configuration (default $CMKCERT_CONF or /etc/cmkcert/cmkcert.conf)\n"
	      "      --json          machine-readable output on stdout\n"
	      "  -v, --verbose       more log output on stderr (repeat for debug)\n"
	      "  -h, --help          this help;  --version  print the version\n"
	      "\n"
	      "Exit status: 0 success, 1 operation failed, 2 usage or bad input, 3 OpenBao unreachable or sealed,\n"
	      "4 --wait: done, but a running cmkcertfs did not show the change in time.\n",
	      f);
}

static void log_to_stderr(enum cmk_log_level level, const char *msg, void *arg)
{
	cli_log(arg, level, msg);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli cli = { .prog = "cmkcert", .argv = argv };
	const char *cmd;
	int c, rc;

	/* '+': stop at the command so its own options are parsed by the command. */
	while ((c = getopt_long(argc, argv, "+c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cli.config = optarg; break;
		case 'j': cli.json = true; break;
		case 'v': cli.verbose++; break;
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf("cmkcert %s\n", CMKCERT_VERSION); return EXIT_OK;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cli.journal = cmk_log_stderr_is_journal();
	if (cmk_harden_process() != 0)
		cli_log(&cli, CMK_LOG_WARN, cmk_errdetail());
	cmk_set_log(log_to_stderr, &cli,
		    cli.verbose >= 2 ? CMK_LOG_DEBUG : cli.verbose == 1 ? CMK_LOG_INFO : CMK_LOG_WARN);
	cmk_store_set_wedged_default(cli_on_wedged, &cli);
	if (cmk_http_global_init() != 0) {
		cli_error(&cli, "%s", cmk_errdetail());
		return EXIT_FAILED;
	}

	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	optind = 0;        /* reset getopt for the command's own options (GNU: 0 re-initialises) */
	if (strcmp(cmd, "check") == 0)
		rc = cmd_check(&cli, argc, argv);
	else if (strcmp(cmd, "keystore") == 0)
		rc = cmd_keystore(&cli, argc, argv);
	else if (strcmp(cmd, "list") == 0)
		rc = cmd_list(&cli, argc, argv);
	else if (strcmp(cmd, "show") == 0)
		rc = cmd_show(&cli, argc, argv);
	else if (strcmp(cmd, "audit") == 0)
		rc = cmd_audit(&cli, argc, argv);
	else if (strcmp(cmd, "renew") == 0)
		rc = cmd_renew(&cli, argc, argv);
	else if (strcmp(cmd, "revoke") == 0)
		rc = cmd_revoke(&cli, argc, argv);
	else if (strcmp(cmd, "verify") == 0)
		rc = cmd_verify(&cli, argc, argv);
	else if (strcmp(cmd, "pool") == 0)
		rc = cmd_pool(&cli, argc, argv);
	else if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		rc = EXIT_OK;
	} else
		rc = cli_usage_error(&cli, "unknown command \"%s\"", cmd);
	cmk_http_global_cleanup();
	return rc;
}
