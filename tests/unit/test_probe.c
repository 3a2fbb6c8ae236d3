/*
 * test_probe.c - the keystore connection test against real servers on
 * loopback: openssl s_server verifying client certificates, a TLS server
 * that closes right after the handshake, one that echoes, a listener that
 * never speaks, a closed port, and a real PyKMIP server
 * (tests/unit/kmip_server.py).
 *
 * Certificates are made with the openssl CLI in a temporary directory:
 * a keystore CA signing the server certificates, a client CA signing the
 * tenant's EC P-256 client certificate, and an unrelated CA signing another.
 * Each server runs in its own process group, killed at the end - also when
 * the test itself is interrupted, so that no server outlives it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/probe.h"
#include "cmkcert/util.h"

#define PYTHON "/usr/bin/python3"
#define PROBE_MS 10000
#define SILENT_MS 400

/* Run by /bin/sh in the temporary directory ($1). */
static const char cert_script[] =
	"set -eu\n"
	"cd \"$1\"\n"
	"ca() {\n"
	"	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \\\n"
	"		-keyout \"$1.key\" -out \"$1.crt\" -subj \"/CN=$2\" \\\n"
	"		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign\n"
	"}\n"
	"leaf() {\n"
	"	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\\n"
	"		-keyout \"$1.key\" -out \"$1.csr\" -subj \"/CN=$3\"\n"
	"	printf '%s\\n' \"$4\" \"$5\" >\"$1.ext\"\n"
	"	openssl x509 -req -in \"$1.csr\" -CA \"$2.crt\" -CAkey \"$2.key\" -CAcreateserial -days 2 \\\n"
	"		-extfile \"$1.ext\" -out \"$1.crt\"\n"
	"}\n"
	"ca ks-ca 'Keystore CA'\n"
	"ca client-ca 'Client CA'\n"
	"ca other-ca 'Other CA'\n"
	"leaf server ks-ca localhost subjectAltName=IP:127.0.0.1,DNS:localhost extendedKeyUsage=serverAuth\n"
	"leaf server-dns ks-ca keystore.example subjectAltName=DNS:keystore.example extendedKeyUsage=serverAuth\n"
	"leaf client client-ca tenant1 extendedKeyUsage=clientAuth keyUsage=digitalSignature\n"
	"leaf other other-ca tenant1 extendedKeyUsage=clientAuth keyUsage=digitalSignature\n"
	/* No ExtendedKeyUsage at all: OpenSSL lets it through, PyKMIP refuses it at the KMIP level. */
	"leaf noeku client-ca tenant1 keyUsage=digitalSignature ''\n";

struct server {
	pid_t pid;          /* leader of its own process group */
	uint16_t port;
	const char *name;
};

static struct {
	char dir[64];
	char script_dir[512];
	struct server tls, dns_only, no_auth, closer, echo, kmip;
	int silent_fd;
	uint16_t silent_port;
	uint16_t closed_port;
	char *ks_ca, *client_ca, *other_ca;
	char *client_crt, *other_crt, *noeku_crt;
	struct cmk_key *client_key, *other_key, *noeku_key;
} fx = { .silent_fd = -1 };

static char logbuf[16384];

static void capture_log(enum cmk_log_level level, const char *msg, void *arg)
{
	size_t used = strlen(logbuf);

	(void)arg;
	snprintf(logbuf + used, sizeof(logbuf) - used, "%s: %s\n", cmk_log_level_name(level), msg);
}

/* ---- processes and ports ------------------------------------------------- */

/* Start argv[0] in its own process group with output to `log`. */
static pid_t spawn(char *const argv[], const char *log)
{
	pid_t parent = getpid(), pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY), out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		setpgid(0, 0);
		/* Die with the test even if it is killed outright (and do not start if it already was). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(125);
		if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	/* Also from the parent, so a kill of the group cannot race the child's own setpgid(). */
	setpgid(pid, pid);
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void stop(struct server *s)
{
	if (s->pid <= 0)
		return;
	kill(-s->pid, SIGKILL);
	wait_exit(s->pid);
	s->pid = 0;
}

static void print_file(const char *path)
{
	char *text = NULL;

	if (cmk_read_file(path, 1 << 20, &text, NULL) == 0)
		fprintf(stderr, "---- %s\n%s\n----\n", path, text);
	free(text);
}

static int listen_socket(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A port nobody listens on (just released by us). */
static uint16_t free_port(void)
{
	uint16_t port;

	close(listen_socket(&port));
	return port;
}

static bool port_accepts(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* Wait until the server's port accepts connections; fail at once if the server died. */
static void wait_ready(const struct server *s, const char *log)
{
	for (int i = 0; i < 400; i++) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };

		if (port_accepts(s->port))
			return;
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			print_file(log);
			fail_msg("%s server exited before listening on port %u", s->name, s->port);
		}
		nanosleep(&ts, NULL);
	}
	print_file(log);
	fail_msg("%s server did not listen on port %u within 20 s", s->name, s->port);
}

/* ---- fixture ---------------------------------------------------------------- */

static char *path_in(const char *name)
{
	char *p = cmk_asprintf("%s/%s", fx.dir, name);

	assert_non_null(p);
	return p;
}

static char *slurp(const char *name)
{
	char *path = path_in(name), *text = NULL;

	assert_int_equal(cmk_read_file(path, 1 << 20, &text, NULL), 0);
	free(path);
	return text;
}

static struct cmk_key *load_key(const char *name)
{
	char *pem = slurp(name);
	struct cmk_key *key = NULL;

	assert_int_equal(cmk_key_parse_pem(pem, strlen(pem), &key), 0);
	cmk_strfreezero(pem);
	return key;
}

static void make_certificates(void)
{
	char *log = path_in("certs.log");
	char *argv[] = { "/bin/sh", "-c", (char *)cert_script, "sh", fx.dir, NULL };

	if (wait_exit(spawn(argv, log)) != 0) {
		print_file(log);
		fail_msg("making test certificates with openssl failed");
	}
	free(log);
}

static void start_s_server(struct server *s, const char *name, const char *cert, bool verify_clients)
{
	char port[16], *log = path_in(name), *ca = path_in("client-ca.crt");
	char *crt_name = cmk_asprintf("%s.crt", cert), *key_name = cmk_asprintf("%s.key", cert), *crt, *key;

	assert_non_null(crt_name);
	assert_non_null(key_name);
	crt = path_in(crt_name);
	key = path_in(key_name);
	s->name = name;
	s->port = free_port();
	snprintf(port, sizeof(port), "127.0.0.1:%u", s->port);
	/* -www: after the handshake the server waits for an HTTP request, like a keystore waiting for ours. */
	char *with_verify[] = { "/usr/bin/openssl", "s_server", "-accept", port, "-www", "-cert", crt, "-key", key,
				"-CAfile", ca, "-Verify", "1", "-verify_return_error", NULL };
	char *without_verify[] = { "/usr/bin/openssl", "s_server", "-accept", port, "-www", "-cert", crt, "-key", key,
				   NULL };
	s->pid = spawn(verify_clients ? with_verify : without_verify, log);
	wait_ready(s, log);
	free(log);
	free(crt);
	free(key);
	free(ca);
	free(crt_name);
	free(key_name);
}

static void start_python(struct server *s, const char *mode)
{
	char port[8], *script = cmk_asprintf("%s/kmip_server.py", fx.script_dir);
	char *log = path_in(mode), *crt = path_in("server.crt"), *key = path_in("server.key");
	char *ca = path_in("client-ca.crt");

	assert_non_null(script);
	s->name = mode;
	s->port = free_port();
	snprintf(port, sizeof(port), "%u", s->port);
	char *argv[] = { PYTHON, script, (char *)mode, "--port", port, "--cert", crt, "--key", key, "--ca", ca,
			 "--dir", fx.dir, NULL };
	s->pid = spawn(argv, log);
	wait_ready(s, log);
	free(script);
	free(log);
	free(crt);
	free(key);
	free(ca);
}

/* On SIGINT / SIGTERM / SIGHUP: kill every server's group and the directory, then die of the signal. */
static void on_signal(int sig)
{
	struct server *all[] = { &fx.tls, &fx.dns_only, &fx.no_auth, &fx.closer, &fx.echo, &fx.kmip };
	char *argv[] = { "/bin/rm", "-rf", fx.dir, NULL };
	pid_t pid;

	/* Only async-signal-safe calls here. */
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (all[i]->pid > 0)
			kill(-all[i]->pid, SIGKILL);
	if (fx.dir[0] != '\0' && (pid = fork()) == 0) {
		execv(argv[0], argv);
		_exit(127);
	} else if (fx.dir[0] != '\0' && pid > 0) {
		waitpid(pid, NULL, 0);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* Stop every server and remove the directory; safe to call twice (teardown, then atexit). */
static void cleanup(void)
{
	char *argv[] = { "/bin/rm", "-rf", fx.dir, NULL };

	stop(&fx.tls);
	stop(&fx.dns_only);
	stop(&fx.no_auth);
	stop(&fx.closer);
	stop(&fx.echo);
	stop(&fx.kmip);
	if (fx.silent_fd >= 0)
		close(fx.silent_fd);
	fx.silent_fd = -1;
	if (fx.dir[0] != '\0')
		wait_exit(spawn(argv, "/dev/null"));
	fx.dir[0] = '\0';
}

static int group_setup(void **state)
{
	const char *slash = strrchr(__FILE__, '/');

	(void)state;
	/* cmocka skips the group teardown when setup fails: never leave servers running. */
	atexit(cleanup);
	catch_signals();
	cmk_set_log(capture_log, NULL, CMK_LOG_DEBUG);
	/* The launcher sits beside this source file (paths are relative to the top directory, where tests run). */
	if (slash != NULL)
		snprintf(fx.script_dir, sizeof(fx.script_dir), "%.*s", (int)(slash - __FILE__), __FILE__);
	else
		snprintf(fx.script_dir, sizeof(fx.script_dir), ".");
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/cmk-probe-XXXXXX");
	assert_non_null(mkdtemp(fx.dir));

	make_certificates();
	fx.ks_ca = slurp("ks-ca.crt");
	fx.client_ca = slurp("client-ca.crt");
	fx.other_ca = slurp("other-ca.crt");
	fx.client_crt = slurp("client.crt");
	fx.other_crt = slurp("other.crt");
	fx.noeku_crt = slurp("noeku.crt");
	fx.client_key = load_key("client.key");
	fx.other_key = load_key("other.key");
	fx.noeku_key = load_key("noeku.key");

	start_s_server(&fx.tls, "s_server-verify", "server", true);
	start_s_server(&fx.dns_only, "s_server-dns-only", "server-dns", true);
	start_s_server(&fx.no_auth, "s_server-no-client-auth", "server", false);
	start_python(&fx.closer, "close");
	start_python(&fx.echo, "echo");
	start_python(&fx.kmip, "kmip");
	/* Accepts TCP (the kernel completes the connection) but never reads or writes. */
	fx.silent_fd = listen_socket(&fx.silent_port);
	fx.closed_port = free_port();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	cleanup();
	free(fx.ks_ca);
	free(fx.client_ca);
	free(fx.other_ca);
	free(fx.client_crt);
	free(fx.other_crt);
	free(fx.noeku_crt);
	cmk_key_free(fx.client_key);
	cmk_key_free(fx.other_key);
	cmk_key_free(fx.noeku_key);
	cmk_set_log(NULL, NULL, CMK_LOG_INFO);
	return 0;
}

/* ---- probing ------------------------------------------------------------------ */

struct client {
	const char *crt;
	const char *chain;
	const struct cmk_key *key;
};

static struct client trusted(void) { return (struct client){ fx.client_crt, fx.client_ca, fx.client_key }; }
static struct client untrusted(void) { return (struct client){ fx.other_crt, fx.other_ca, fx.other_key }; }
static struct client no_eku(void) { return (struct client){ fx.noeku_crt, fx.client_ca, fx.noeku_key }; }

static int probe(const char *host, uint16_t port, enum cmk_verify verify, const char *server_ca, struct client c,
		 long timeout_ms)
{
	struct cmk_probe_target t = {
		.host = host, .port = port, .server_ca_pem = server_ca, .verify = verify, .timeout_ms = timeout_ms,
	};
	int rc;

	logbuf[0] = '\0';
	cmk_errclear();
	rc = cmk_probe(&t, c.crt, c.chain, c.key);
	/* Whatever happened, no certificate or key text reaches a log line or an error. */
	assert_null(strstr(cmk_errdetail(), "-----BEGIN"));
	assert_null(strstr(logbuf, "-----BEGIN"));
	return rc;
}

/* The detail must contain the formatted text. */
static void assert_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void assert_detail(const char *fmt, ...)
{
	char want[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	if (strstr(cmk_errdetail(), want) == NULL)
		fail_msg("detail \"%s\" lacks \"%s\"; log:\n%s", cmk_errdetail(), want, logbuf);
}

/* ---- verify=tls ------------------------------------------------------------------ */

static void test_tls_trusted_client_accepted(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.tls.port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS), 0);
	assert_non_null(strstr(logbuf, "TLSv1.2"));
	assert_null(strstr(logbuf, "did not ask for a client certificate"));
}

static void test_tls_dns_name_accepted(void **state)
{
	(void)state;
	assert_int_equal(probe("localhost", fx.tls.port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS), 0);
}

static void test_tls_untrusted_client_refused(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.tls.port, CMK_VERIFY_TLS, fx.ks_ca, untrusted(), PROBE_MS),
			 CMK_ERR_KEYSTORE);
	assert_detail("keystore 127.0.0.1:%u refused the client certificate: unknown_ca", fx.tls.port);
}

static void test_tls_wrong_server_ca(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.tls.port, CMK_VERIFY_TLS, fx.other_ca, trusted(), PROBE_MS),
			 CMK_ERR_TLS);
	assert_detail("keystore 127.0.0.1:%u certificate not trusted: ", fx.tls.port);
	assert_detail("not correctly signed by the trusted CA");
}

static void test_tls_system_trust_store_does_not_know_private_ca(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.tls.port, CMK_VERIFY_TLS, NULL, trusted(), PROBE_MS), CMK_ERR_TLS);
	assert_detail("certificate not trusted");
}

static void test_ip_host_needs_ip_san(void **state)
{
	(void)state;
	/* The certificate names keystore.example only: 127.0.0.1 is not in it. */
	assert_int_equal(probe("127.0.0.1", fx.dns_only.port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS),
			 CMK_ERR_TLS);
	assert_detail("certificate not trusted: no iPAddress subjectAltName matches 127.0.0.1");
}

static void test_dns_host_must_match(void **state)
{
	(void)state;
	assert_int_equal(probe("localhost", fx.dns_only.port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS),
			 CMK_ERR_TLS);
	assert_detail("keystore localhost:%u certificate not trusted: ", fx.dns_only.port);
	assert_detail("Common Name");
}

static void test_server_not_asking_for_certificate_warns(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.no_auth.port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS), 0);
	assert_non_null(strstr(logbuf, "warning: probe: keystore 127.0.0.1"));
	assert_non_null(strstr(logbuf, "did not ask for a client certificate"));
}

static void test_close_after_handshake_is_refusal(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.closer.port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS),
			 CMK_ERR_KEYSTORE);
	assert_detail("keystore 127.0.0.1:%u refused the client certificate: connection closed right after the handshake",
		      fx.closer.port);
}

static void test_closed_port_unreachable(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.closed_port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), PROBE_MS),
			 CMK_ERR_UNREACHABLE);
	assert_detail("keystore 127.0.0.1:%u: cannot connect: Connection refused", fx.closed_port);
}

static void test_silent_listener_times_out(void **state)
{
	int64_t start = cmk_monotonic_ms(), elapsed;

	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.silent_port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), SILENT_MS),
			 CMK_ERR_TIMEOUT);
	elapsed = cmk_monotonic_ms() - start;
	assert_detail("keystore 127.0.0.1:%u: TLS handshake not finished within %d ms", fx.silent_port, SILENT_MS);
	/* It waited for the whole timeout, and the timeout - not some other limit - ended it (bound kept loose). */
	assert_true(elapsed >= SILENT_MS);
	assert_true(elapsed < SILENT_MS + 5000);
}

static void test_verify_none_does_not_connect(void **state)
{
	(void)state;
	/* The closed port would answer CMK_ERR_UNREACHABLE if anything were tried. */
	assert_int_equal(probe("127.0.0.1", fx.closed_port, CMK_VERIFY_NONE, fx.ks_ca, trusted(), PROBE_MS), 0);
}

static void test_local_problems_found_before_connecting(void **state)
{
	struct client mismatched = { fx.client_crt, fx.client_ca, fx.other_key };

	(void)state;
	/* Each would be CMK_ERR_UNREACHABLE on the closed port had the keystore been contacted. */
	assert_int_equal(probe("127.0.0.1", fx.closed_port, CMK_VERIFY_TLS, fx.ks_ca, mismatched, PROBE_MS),
			 CMK_ERR_INVALID);
	assert_detail("the client certificate does not belong to the key");
	assert_int_equal(probe("127.0.0.1", fx.closed_port, CMK_VERIFY_TLS, "not a certificate", trusted(), PROBE_MS),
			 CMK_ERR_INVALID);
	assert_detail("server CA");
	assert_int_equal(probe("127.0.0.1", fx.closed_port, CMK_VERIFY_TLS, fx.ks_ca, trusted(), 0), CMK_ERR_INVALID);
}

/* ---- verify=kmip ------------------------------------------------------------------- */

static void test_kmip_trusted_client_accepted(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.kmip.port, CMK_VERIFY_KMIP, fx.ks_ca, trusted(), PROBE_MS), 0);
	/* PyKMIP 0.10 lists 2.0 down to 1.0; what we logged came from its answer. */
	assert_non_null(strstr(logbuf, "answered DiscoverVersions: "));
	assert_non_null(strstr(logbuf, "1.4 1.3 1.2 1.1 1.0"));
}

static void test_kmip_untrusted_client_refused(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.kmip.port, CMK_VERIFY_KMIP, fx.ks_ca, untrusted(), PROBE_MS),
			 CMK_ERR_KEYSTORE);
	assert_detail("keystore 127.0.0.1:%u refused the client certificate: unknown_ca", fx.kmip.port);
}

static void test_kmip_refusal_in_kmip_answer(void **state)
{
	(void)state;
	/* TLS accepts the certificate; PyKMIP then refuses it for lacking a clientAuth key usage. */
	assert_int_equal(probe("127.0.0.1", fx.kmip.port, CMK_VERIFY_KMIP, fx.ks_ca, no_eku(), PROBE_MS),
			 CMK_ERR_KEYSTORE);
	assert_detail("keystore 127.0.0.1:%u refused the KMIP request (operation failed): authentication not successful",
		      fx.kmip.port);
}

static void test_kmip_over_a_closing_server_is_refusal(void **state)
{
	(void)state;
	assert_int_equal(probe("127.0.0.1", fx.closer.port, CMK_VERIFY_KMIP, fx.ks_ca, trusted(), PROBE_MS),
			 CMK_ERR_KEYSTORE);
	assert_detail("refused the client certificate: connection closed");
}

static void test_kmip_answer_not_understood(void **state)
{
	(void)state;
	/* An echo server sends our own RequestMessage back. */
	assert_int_equal(probe("127.0.0.1", fx.echo.port, CMK_VERIFY_KMIP, fx.ks_ca, trusted(), PROBE_MS),
			 CMK_ERR_PROTOCOL);
	assert_detail("keystore 127.0.0.1:%u sent an invalid KMIP answer: not a KMIP ResponseMessage (tag 0x420078",
		      fx.echo.port);
}

static void test_kmip_silence_ends_at_the_deadline(void **state)
{
	(void)state;
	/* s_server -www waits for an HTTP request line that our binary request never completes. */
	assert_int_equal(probe("127.0.0.1", fx.tls.port, CMK_VERIFY_KMIP, fx.ks_ca, trusted(), 1500), CMK_ERR_TIMEOUT);
	assert_detail("keystore 127.0.0.1:%u: timed out while waiting for the KMIP answer", fx.tls.port);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_trusted_client_accepted),
		cmocka_unit_test(test_tls_dns_name_accepted),
		cmocka_unit_test(test_tls_untrusted_client_refused),
		cmocka_unit_test(test_tls_wrong_server_ca),
		cmocka_unit_test(test_tls_system_trust_store_does_not_know_private_ca),
		cmocka_unit_test(test_ip_host_needs_ip_san),
		cmocka_unit_test(test_dns_host_must_match),
		cmocka_unit_test(test_server_not_asking_for_certificate_warns),
		cmocka_unit_test(test_close_after_handshake_is_refusal),
		cmocka_unit_test(test_closed_port_unreachable),
		cmocka_unit_test(test_silent_listener_times_out),
		cmocka_unit_test(test_verify_none_does_not_connect),
		cmocka_unit_test(test_local_problems_found_before_connecting),
		cmocka_unit_test(test_kmip_trusted_client_accepted),
		cmocka_unit_test(test_kmip_untrusted_client_refused),
		cmocka_unit_test(test_kmip_refusal_in_kmip_answer),
		cmocka_unit_test(test_kmip_over_a_closing_server_is_refusal),
		cmocka_unit_test(test_kmip_answer_not_understood),
		cmocka_unit_test(test_kmip_silence_ends_at_the_deadline),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
