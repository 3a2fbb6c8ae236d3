/* A process-shared condition variable whose waiter was killed: pthread_cond_destroy() never returns. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared { pthread_mutex_t mu; pthread_cond_t cv; };

int main(void)
{
	struct shared *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;
	pid_t pid;

	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_condattr_init(&ca);
	pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&s->mu, &ma);
	pthread_cond_init(&s->cv, &ca);
	if ((pid = fork()) == 0) {
		pthread_mutex_lock(&s->mu);
		pthread_cond_wait(&s->cv, &s->mu);     /* never signalled */
		_exit(0);
	}
	sleep(1);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	printf("waiter killed; destroying the condition variable...\n");
	fflush(stdout);
	alarm(5);
	pthread_cond_destroy(&s->cv);
	printf("destroy returned\n");
	return 0;
}
