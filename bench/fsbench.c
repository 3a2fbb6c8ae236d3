/*
 * fsbench.c - time open + read to end-of-file + close of files, the way a
 * TLS client loads its certificate and key.
 *
 *   fsbench ITERATIONS FILE...
 *
 * For each FILE: 100 untimed rounds, then ITERATIONS timed rounds in this
 * one process; prints "FILE <microseconds per round> <bytes per round>".
 * Every round checks it read the same number of bytes, so a failing read
 * cannot pass for a fast one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 100

static char buf[1 << 16];

static long round_once(const char *path)
{
	long total = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		total += n;
	}
	close(fd);
	return total;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	long iters;

	if (argc < 3 || (iters = strtol(argv[1], NULL, 10)) <= 0) {
		fprintf(stderr, "usage: fsbench ITERATIONS FILE...\n");
		return 2;
	}
	for (int f = 2; f < argc; f++) {
		long size = round_once(argv[f]);
		double t0;

		if (size < 0) {
			fprintf(stderr, "fsbench: %s: %s\n", argv[f], strerror(errno));
			return 1;
		}
		for (int i = 0; i < WARMUP; i++)
			round_once(argv[f]);
		t0 = now_us();
		for (long i = 0; i < iters; i++) {
			if (round_once(argv[f]) != size) {
				fprintf(stderr, "fsbench: %s: short or failed read in round %ld\n", argv[f], i);
				return 1;
			}
		}
		printf("%s %.2f %ld\n", argv[f], (now_us() - t0) / (double)iters, size);
	}
	return 0;
}
