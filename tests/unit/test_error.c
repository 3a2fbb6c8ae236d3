/*
 * test_error.c - result code texts and the per-thread failure detail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "cmkcert/error.h"

/* Every code error.h defines, from CMK_OK down to the last one. */
#define FIRST_CODE CMK_OK
#define LAST_CODE CMK_ERR_INTERNAL

static void test_every_code_has_its_own_text(void **state)
{
	(void)state;
	for (int a = FIRST_CODE; a >= LAST_CODE; a--) {
		const char *s = cmk_strerror(a);

		assert_non_null(s);
		assert_true(s[0] != '\0');
		assert_string_not_equal(s, "unknown error");
		/* Two codes with one text would leave a user unable to tell them apart. */
		for (int b = a - 1; b >= LAST_CODE; b--)
			assert_string_not_equal(s, cmk_strerror(b));
	}
	assert_string_equal(cmk_strerror(CMK_ERR_AUDIT), "audit trail error");
}

static void test_unknown_codes(void **state)
{
	(void)state;
	assert_string_equal(cmk_strerror(LAST_CODE - 1), "unknown error");
	assert_string_equal(cmk_strerror(1), "unknown error");
	assert_string_equal(cmk_strerror(-1000), "unknown error");
}

static void test_fail_returns_code_and_sets_detail(void **state)
{
	(void)state;
	cmk_errclear();
	assert_string_equal(cmk_errdetail(), "");
	assert_int_equal(cmk_fail(CMK_ERR_INVALID, "tenant \"%s\": %d bad characters", "a/b", 1), CMK_ERR_INVALID);
	assert_string_equal(cmk_errdetail(), "tenant \"a/b\": 1 bad characters");
	/* The next failure replaces the detail. */
	assert_int_equal(cmk_fail(CMK_ERR_NOTFOUND, "no record %u", 7u), CMK_ERR_NOTFOUND);
	assert_string_equal(cmk_errdetail(), "no record 7");
	cmk_errclear();
	assert_string_equal(cmk_errdetail(), "");
}

static void test_long_detail_is_cut_not_overrun(void **state)
{
	char big[3000];
	size_t len;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(cmk_fail(CMK_ERR_IO, "%s", big), CMK_ERR_IO);
	len = strlen(cmk_errdetail());
	assert_true(len > 3 && len < sizeof(big) - 1);
	/* A prefix of the message, and "..." to say it was cut. */
	assert_memory_equal(cmk_errdetail(), big, len - 3);
	assert_string_equal(cmk_errdetail() + len - 3, "...");
}

static void test_detail_is_escaped(void **state)
{
	(void)state;
	/* Input quoted in a message cannot reach a terminal or a log as control characters. */
	cmk_fail(CMK_ERR_INVALID, "field \"%s\": unknown", "k\x1b[2J\n\x7f\xff");
	assert_string_equal(cmk_errdetail(), "field \"k\\x1b[2J\\x0a\\x7f\\xff\": unknown");
	/* Text that is already escaped passes unchanged: details quote details. */
	cmk_fail(CMK_ERR_IO, "wrapped: %s", cmk_errdetail());
	assert_string_equal(cmk_errdetail(), "wrapped: field \"k\\x1b[2J\\x0a\\x7f\\xff\": unknown");
}

struct peer {
	pthread_barrier_t *set, *checked;
	char seen_at_start[64];
};

static void *peer_thread(void *p)
{
	struct peer *peer = p;

	/* The main thread has already failed: this thread must not see its detail. */
	pthread_barrier_wait(peer->set);
	strcpy(peer->seen_at_start, cmk_errdetail());
	cmk_fail(CMK_ERR_STORE, "peer failure");
	pthread_barrier_wait(peer->checked);
	return NULL;
}

static void test_detail_is_per_thread(void **state)
{
	pthread_barrier_t set, checked;
	struct peer peer = { &set, &checked, "unset" };
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_barrier_init(&set, NULL, 2), 0);
	assert_int_equal(pthread_barrier_init(&checked, NULL, 2), 0);
	assert_int_equal(pthread_create(&th, NULL, peer_thread, &peer), 0);

	cmk_fail(CMK_ERR_INVALID, "main failure");
	pthread_barrier_wait(&set);
	/* The peer has failed by the time it reaches the second barrier. */
	pthread_barrier_wait(&checked);
	assert_string_equal(cmk_errdetail(), "main failure");
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_string_equal(peer.seen_at_start, "");

	pthread_barrier_destroy(&set);
	pthread_barrier_destroy(&checked);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_code_has_its_own_text),
		cmocka_unit_test(test_unknown_codes),
		cmocka_unit_test(test_fail_returns_code_and_sets_detail),
		cmocka_unit_test(test_long_detail_is_cut_not_overrun),
		cmocka_unit_test(test_detail_is_escaped),
		cmocka_unit_test(test_detail_is_per_thread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
