/*
 * test_log.c - the log channel's view of the journal (cmkcert/log.h):
 * priorities match syslog(3), and standard error counts as the journal only
 * while it is the very stream $JOURNAL_STREAM names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "cmkcert/log.h"
#include "testutil.h"

static void test_priorities_are_syslogs(void **state)
{
	(void)state;
	assert_int_equal(cmk_log_priority(CMK_LOG_ERROR), LOG_ERR);
	assert_int_equal(cmk_log_priority(CMK_LOG_WARN), LOG_WARNING);
	assert_int_equal(cmk_log_priority(CMK_LOG_INFO), LOG_INFO);
	assert_int_equal(cmk_log_priority(CMK_LOG_DEBUG), LOG_DEBUG);
	assert_int_equal(LOG_ERR, 3);
}

/*
 * cmk_log_stderr_is_journal() with stderr on a fresh file (or, !same_file, on
 * another one) and $JOURNAL_STREAM set to the value given, or to the file's
 * device:inode when NULL.
 */
static bool with_stderr_on_file(const char *journal_stream_of_file, bool same_file)
{
	char dir[64], path[128], other[128], env[64];
	struct stat st;
	int saved, fd, ofd;
	bool is;

	assert_int_equal(tu_mkdtemp(dir, sizeof(dir), "log"), 0);
	snprintf(path, sizeof(path), "%s/stream", dir);
	snprintf(other, sizeof(other), "%s/other", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ofd = open(other, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0 && ofd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	if (journal_stream_of_file != NULL)
		setenv("JOURNAL_STREAM", journal_stream_of_file, 1);
	else {
		snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
		setenv("JOURNAL_STREAM", env, 1);
	}
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(same_file ? fd : ofd, STDERR_FILENO) >= 0);
	is = cmk_log_stderr_is_journal();
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	close(fd);
	close(ofd);
	unsetenv("JOURNAL_STREAM");
	tu_rmtree(dir);
	return is;
}

static void test_journal_only_when_stderr_is_that_stream(void **state)
{
	(void)state;
	assert_true(with_stderr_on_file(NULL, true));
	/* A child whose stderr was redirected inherits the variable, not the stream. */
	assert_false(with_stderr_on_file(NULL, false));
	assert_false(with_stderr_on_file("", true));
	assert_false(with_stderr_on_file("garbage", true));
	assert_false(with_stderr_on_file("1:2:3", true));
	unsetenv("JOURNAL_STREAM");
	assert_false(cmk_log_stderr_is_journal());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_priorities_are_syslogs),
		cmocka_unit_test(test_journal_only_when_stderr_is_that_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
