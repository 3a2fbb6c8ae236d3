/*
 * test_notify_sd.c - the sd_notify(3) protocol of cmkcertfs (fusefs/notify_sd.h):
 * messages reach a datagram socket named by a path or by an abstract name
 * exactly as sent, values that cannot name a socket are refused, and the
 * watchdog interval follows $WATCHDOG_USEC and $WATCHDOG_PID.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "testutil.h"
#include "../../fusefs/notify_sd.h"

/* A listening datagram socket bound to `addr` (len bytes of sun_path). */
static int listen_at(const char *name, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memcpy(sa.sun_path, name, len);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)), 0);
	return fd;
}

static void expect_datagram(int fd, const char *want)
{
	char buf[512];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	assert_true(n >= 0);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

static void test_message_reaches_a_path_socket(void **state)
{
	char dir[64], path[128];
	struct sd_notifier n;
	int fd;

	(void)state;
	assert_int_equal(tu_mkdtemp(dir, sizeof(dir), "notify"), 0);
	snprintf(path, sizeof(path), "%s/notify.sock", dir);
	fd = listen_at(path, strlen(path) + 1);
	assert_int_equal(notify_sd_open(path, &n), 1);
	assert_ok(notify_sd_send(&n, "READY=1\nSTATUS=serving 2 certificates"));
	expect_datagram(fd, "READY=1\nSTATUS=serving 2 certificates");
	assert_ok(notify_sd_send(&n, "WATCHDOG=1"));
	expect_datagram(fd, "WATCHDOG=1");
	notify_sd_close(&n);
	notify_sd_close(&n);
	close(fd);
	tu_rmtree(dir);
}

static void test_message_reaches_an_abstract_socket(void **state)
{
	char name[64], env[64];
	struct sd_notifier n;
	int fd;

	(void)state;
	/* Abstract names have no terminating NUL: bind exactly the bytes after the leading NUL. */
	snprintf(name, sizeof(name), "%ccmkcert-test-%d", '\0', (int)getpid());
	fd = listen_at(name, 1 + strlen(name + 1));
	snprintf(env, sizeof(env), "@%s", name + 1);
	assert_int_equal(notify_sd_open(env, &n), 1);
	assert_ok(notify_sd_send(&n, "STOPPING=1"));
	expect_datagram(fd, "STOPPING=1");
	notify_sd_close(&n);
	close(fd);
}

static void test_unset_means_nothing_to_do(void **state)
{
	struct sd_notifier n;

	(void)state;
	assert_int_equal(notify_sd_open(NULL, &n), 0);
	assert_int_equal(n.fd, -1);
	assert_int_equal(notify_sd_open("", &n), 0);
	assert_int_equal(notify_sd_send(&n, "READY=1"), CMK_ERR_IO);
}

static void test_bad_values_are_refused(void **state)
{
	char longpath[200];
	struct sd_notifier n;

	(void)state;
	assert_int_equal(notify_sd_open("relative/notify.sock", &n), CMK_ERR_CONFIG);
	assert_contains(cmk_errdetail(), "NOTIFY_SOCKET");
	assert_int_equal(notify_sd_open("vsock:2:1234", &n), CMK_ERR_CONFIG);
	assert_int_equal(notify_sd_open("@", &n), CMK_ERR_CONFIG);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(notify_sd_open(longpath, &n), CMK_ERR_CONFIG);
	/* 107 bytes and its NUL fill sun_path exactly: accepted; 108 is not. */
	longpath[107] = '\0';
	assert_int_equal(notify_sd_open(longpath, &n), 1);
	notify_sd_close(&n);
	longpath[107] = 'a';
	longpath[108] = '\0';
	assert_int_equal(notify_sd_open(longpath, &n), CMK_ERR_CONFIG);
}

static void test_nobody_listening_is_an_error(void **state)
{
	struct sd_notifier n;

	(void)state;
	assert_int_equal(notify_sd_open("/nonexistent/cmkcert/notify.sock", &n), 1);
	assert_int_equal(notify_sd_send(&n, "READY=1"), CMK_ERR_IO);
	assert_contains(cmk_errdetail(), "sendto");
	notify_sd_close(&n);
}

static void test_watchdog_interval(void **state)
{
	(void)state;
	assert_int_equal(notify_sd_watchdog_usec("30000000", NULL, 42), 30000000);
	assert_int_equal(notify_sd_watchdog_usec("30000000", "", 42), 30000000);
	assert_int_equal(notify_sd_watchdog_usec("30000000", "42", 42), 30000000);
	/* Meant for another process (the watchdog was set up for a parent): not ours. */
	assert_int_equal(notify_sd_watchdog_usec("30000000", "41", 42), 0);
	assert_int_equal(notify_sd_watchdog_usec(NULL, NULL, 42), 0);
	assert_int_equal(notify_sd_watchdog_usec("0", NULL, 42), 0);
	assert_int_equal(notify_sd_watchdog_usec("-5", NULL, 42), 0);
	assert_int_equal(notify_sd_watchdog_usec("30s", NULL, 42), 0);
	assert_int_equal(notify_sd_watchdog_usec("99999999999999999999999", NULL, 42), 0);
	assert_int_equal(notify_sd_watchdog_usec("1000", "x42", 42), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_reaches_a_path_socket),
		cmocka_unit_test(test_message_reaches_an_abstract_socket),
		cmocka_unit_test(test_unset_means_nothing_to_do),
		cmocka_unit_test(test_bad_values_are_refused),
		cmocka_unit_test(test_nobody_listening_is_an_error),
		cmocka_unit_test(test_watchdog_interval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
