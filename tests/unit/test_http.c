/*
 * test_http.c - the libcurl boundary against a real local HTTPS server
 * (tests/unit/data/openbao/script_server.py): TLS verified against the
 * given CA only, transport failures mapped to our codes, headers read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cmkcert/error.h"
#include "cmkcert/http.h"
#include "data/openbao/script_server.h"

static struct script_server srv;

static int group_setup(void **state)
{
	(void)state;
	if (cmk_http_global_init() != 0)
		return -1;
	return script_server_start(&srv);
}

static int group_teardown(void **state)
{
	(void)state;
	script_server_stop(&srv);
	cmk_http_global_cleanup();
	return 0;
}

/* One request on a fresh handle trusting `ca`; returns the cmk code, the answer stays in *resp. */
static int request_with(const char *ca, long timeout, const char *method, const char *path, const char *const *hdrs,
			const char *body, struct cmk_http_response *resp)
{
	struct cmk_http *h = NULL;
	char url[256];
	int rc;

	snprintf(url, sizeof(url), "%s%s", srv.url, path);
	assert_int_equal(cmk_http_new(ca, timeout, &h), 0);
	rc = cmk_http_request(h, method, url, hdrs, body, body ? strlen(body) : 0, resp);
	cmk_http_free(h);
	return rc;
}

static void test_post_with_right_ca(void **state)
{
	const char *const hdrs[] = { "X-Vault-Request: true", "Content-Type: application/json", NULL };
	struct cmk_http_response resp = { 0 };

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"echo\": true}]"), 0);
	assert_int_equal(request_with(srv.ca, 10, "POST", "/v1/pki/issue/web", hdrs, "{\"common_name\":\"a\"}", &resp), 0);
	assert_int_equal(resp.status, 200);
	assert_non_null(strstr(resp.body, "\"method\": \"POST\""));
	assert_non_null(strstr(resp.body, "\"path\": \"/v1/pki/issue/web\""));
	assert_non_null(strstr(resp.body, "\"x-vault-request\": \"true\""));
	assert_non_null(strstr(resp.body, "\"body\": \"{\\\"common_name\\\":\\\"a\\\"}\""));
	assert_int_equal(resp.retry_after, -1);
	assert_null(resp.location);
	cmk_http_response_clear(&resp);
	assert_null(resp.body);
}

static void test_headers_are_read(void **state)
{
	struct cmk_http_response resp = { 0 };

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"status\": 307, \"headers\": {\"Location\": "
				"\"https://10.0.0.2:8200/v1/pki/issue/web\", \"Retry-After\": \"7\", "
				"\"Content-Type\": \"application/json\"}}]"), 0);
	assert_int_equal(request_with(srv.ca, 10, "GET", "/v1/x", NULL, NULL, &resp), 0);
	assert_int_equal(resp.status, 307);
	assert_string_equal(resp.location, "https://10.0.0.2:8200/v1/pki/issue/web");
	assert_string_equal(resp.content_type, "application/json");
	assert_int_equal(resp.retry_after, 7);
	/* An empty answer is still a string. */
	assert_non_null(resp.body);
	assert_int_equal(resp.body_len, 0);
	assert_string_equal(resp.body, "");
	cmk_http_response_clear(&resp);
}

static void test_retry_after_http_date(void **state)
{
	struct cmk_http_response resp = { 0 };
	char date[64], queue[256];
	time_t when = time(NULL) + 120;
	struct tm tm;

	(void)state;
	gmtime_r(&when, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	snprintf(queue, sizeof(queue), "[{\"status\": 429, \"headers\": {\"Retry-After\": \"%s\"}}]", date);
	assert_int_equal(script_server_queue(&srv, queue), 0);
	assert_int_equal(request_with(srv.ca, 10, "GET", "/v1/x", NULL, NULL, &resp), 0);
	assert_int_equal(resp.status, 429);
	assert_in_range(resp.retry_after, 110, 120);
	cmk_http_response_clear(&resp);
}

static void test_other_ca_is_tls_error(void **state)
{
	struct cmk_http_response resp = { 0 };

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"echo\": true}]"), 0);
	assert_int_equal(request_with(srv.other_ca, 10, "GET", "/v1/sys/health", NULL, NULL, &resp), CMK_ERR_TLS);
	assert_non_null(strstr(cmk_errdetail(), srv.url));
	assert_null(resp.body);
}

static void test_closed_port_is_unreachable(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	struct cmk_http_response resp = { 0 };
	struct cmk_http *h = NULL;
	char url[128];
	int fd;

	(void)state;
	/* Take a free port from the kernel, then close it: nothing listens there. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/sys/health", ntohs(sa.sin_port));
	assert_int_equal(cmk_http_new(srv.ca, 5, &h), 0);
	assert_int_equal(cmk_http_request(h, "GET", url, NULL, NULL, 0, &resp), CMK_ERR_UNREACHABLE);
	assert_non_null(strstr(cmk_errdetail(), url));
	cmk_http_free(h);
}

static void test_plain_http_refused(void **state)
{
	struct cmk_http_response resp = { 0 };
	struct cmk_http *h = NULL;
	char url[128];
	char *seen;

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"echo\": true}]"), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/sys/health", srv.port);
	assert_int_equal(cmk_http_new(srv.ca, 5, &h), 0);
	assert_int_equal(cmk_http_request(h, "GET", url, NULL, NULL, 0, &resp), CMK_ERR_INVALID);
	cmk_http_free(h);
	/* Nothing was sent. */
	seen = script_server_requests(&srv);
	assert_string_equal(seen, "");
	free(seen);
}

static void test_dropped_connection_is_unreachable(void **state)
{
	struct cmk_http_response resp = { 0 };

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"drop\": true}]"), 0);
	assert_int_equal(request_with(srv.ca, 10, "GET", "/v1/x", NULL, NULL, &resp), CMK_ERR_UNREACHABLE);
}

static void test_timeout(void **state)
{
	struct cmk_http_response resp = { 0 };

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"delay\": 3, \"body\": \"late\"}]"), 0);
	assert_int_equal(request_with(srv.ca, 1, "GET", "/v1/x", NULL, NULL, &resp), CMK_ERR_TIMEOUT);
	assert_null(resp.body);
}

static void test_oversized_answer(void **state)
{
	struct cmk_http_response resp = { 0 };

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"size\": 9437184}]"), 0);
	assert_int_equal(request_with(srv.ca, 10, "GET", "/v1/x", NULL, NULL, &resp), CMK_ERR_PROTOCOL);
	assert_null(resp.body);
	/* Just under the cap is fine. */
	assert_int_equal(script_server_queue(&srv, "[{\"size\": 8388608}]"), 0);
	assert_int_equal(request_with(srv.ca, 10, "GET", "/v1/x", NULL, NULL, &resp), 0);
	assert_int_equal(resp.body_len, 8388608);
	cmk_http_response_clear(&resp);
}

/* The handle is reused: the second request goes over the first one's connection. */
static void test_connection_reused(void **state)
{
	struct cmk_http_response a = { 0 }, b = { 0 };
	struct cmk_http *h = NULL;
	char url[128], *peer_a, *peer_b;

	(void)state;
	assert_int_equal(script_server_queue(&srv, "[{\"echo\": true, \"times\": 2}]"), 0);
	snprintf(url, sizeof(url), "%s/v1/one", srv.url);
	assert_int_equal(cmk_http_new(srv.ca, 10, &h), 0);
	assert_int_equal(cmk_http_request(h, "GET", url, NULL, NULL, 0, &a), 0);
	assert_int_equal(cmk_http_request(h, "POST", url, NULL, "{}", 2, &b), 0);
	cmk_http_free(h);
	peer_a = strstr(a.body, "\"peer\"");
	peer_b = strstr(b.body, "\"peer\"");
	assert_non_null(peer_a);
	assert_non_null(peer_b);
	assert_int_equal(strcspn(peer_a, "}"), strcspn(peer_b, "}"));
	assert_memory_equal(peer_a, peer_b, strcspn(peer_a, "}"));
	cmk_http_response_clear(&a);
	cmk_http_response_clear(&b);
}

static void test_new_checks_arguments(void **state)
{
	struct cmk_http *h = NULL;

	(void)state;
	assert_int_equal(cmk_http_new(NULL, 5, &h), CMK_ERR_INVALID);
	assert_int_equal(cmk_http_new(srv.ca, 0, &h), CMK_ERR_INVALID);
	assert_int_equal(cmk_http_new("/nonexistent/ca.pem", 5, &h), CMK_ERR_NOTFOUND);
	assert_non_null(strstr(cmk_errdetail(), "/nonexistent/ca.pem"));
	assert_null(h);
	cmk_http_free(NULL);
	cmk_http_response_clear(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_post_with_right_ca),
		cmocka_unit_test(test_headers_are_read),
		cmocka_unit_test(test_retry_after_http_date),
		cmocka_unit_test(test_other_ca_is_tls_error),
		cmocka_unit_test(test_closed_port_is_unreachable),
		cmocka_unit_test(test_plain_http_refused),
		cmocka_unit_test(test_dropped_connection_is_unreachable),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_oversized_answer),
		cmocka_unit_test(test_connection_reused),
		cmocka_unit_test(test_new_checks_arguments),
	};

	return cmocka_run_group_tests_name("http", tests, group_setup, group_teardown);
}
