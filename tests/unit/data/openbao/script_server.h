/*
 * script_server.h - drive script_server.py (beside this file) from a unit
 * test: start it in a temporary directory, queue the answers it gives, read
 * back the requests it saw, stop it.  Header-only so test_http and
 * test_openbao can share it without another object in their link lines.
 *
 * Tests run from the repository root; CMK_TEST_DATA overrides the data dir.
 */
#ifndef CMK_TEST_SCRIPT_SERVER_H
#define CMK_TEST_SCRIPT_SERVER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

struct script_server {
	pid_t pid;
	int port;
	char dir[64];
	char ca[128];          /* CA that signed the server certificate */
	char other_ca[128];    /* an unrelated CA */
	char url[64];          /* https://127.0.0.1:<port> */
};

static inline const char *script_server_data_dir(void)
{
	const char *d = getenv("CMK_TEST_DATA");

	return d != NULL ? d : "tests/unit/data";
}

static inline void script_server_path(const struct script_server *s, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", s->dir, name);
}

/* Start the server; 0 once it printed READY, -1 otherwise. */
static inline int script_server_start(struct script_server *s)
{
	char script[512], line[64];
	int fds[2];
	FILE *f;

	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/cmk-unit-XXXXXX");
	snprintf(script, sizeof(script), "%s/openbao/script_server.py", script_server_data_dir());
	if (mkdtemp(s->dir) == NULL || pipe(fds) != 0)
		return -1;
	if ((s->pid = fork()) < 0)
		return -1;
	if (s->pid == 0) {
		/* The server must not outlive a test that dies before its teardown. */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() == 1)
			_exit(127);
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execl("/usr/bin/python3", "python3", script, s->dir, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	if (f == NULL || fgets(line, sizeof(line), f) == NULL || sscanf(line, "READY %d", &s->port) != 1) {
		if (f != NULL)
			fclose(f);
		return -1;
	}
	fclose(f);
	script_server_path(s, "ca.pem", s->ca, sizeof(s->ca));
	script_server_path(s, "other-ca.pem", s->other_ca, sizeof(s->other_ca));
	snprintf(s->url, sizeof(s->url), "https://127.0.0.1:%d", s->port);
	return 0;
}

static inline void script_server_stop(struct script_server *s)
{
	static const char *const files[] = { "ca.pem", "other-ca.pem", "server.pem", "server.key",
					     "queue.json", "requests.jsonl" };
	char path[256];

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		script_server_path(s, files[i], path, sizeof(path));
		unlink(path);
	}
	rmdir(s->dir);
}

/* Replace the queue of answers (a JSON list) and forget the requests seen so far. */
static inline int script_server_queue(const struct script_server *s, const char *json)
{
	char path[256];
	FILE *f;

	script_server_path(s, "requests.jsonl", path, sizeof(path));
	unlink(path);
	script_server_path(s, "queue.json", path, sizeof(path));
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fputs(json, f);
	return fclose(f) == 0 ? 0 : -1;
}

/* The requests seen since the last queue, one JSON object a line; malloc'd, "" when none. */
static inline char *script_server_requests(const struct script_server *s)
{
	char path[256], *buf = NULL;
	size_t len = 0;
	FILE *f, *mem;
	int c;

	script_server_path(s, "requests.jsonl", path, sizeof(path));
	if ((mem = open_memstream(&buf, &len)) == NULL)
		return NULL;
	if ((f = fopen(path, "r")) != NULL) {
		while ((c = fgetc(f)) != EOF)
			fputc(c, mem);
		fclose(f);
	}
	fclose(mem);
	return buf;
}

#endif
