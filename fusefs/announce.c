/*
 * announce.c - the announcer thread (see announce.h).
 *
 * One batch: take everything queued, open a view of the mount (a private
 * writable clone, or the mount itself), perform each change that is still
 * wanted through it, close the view, then say the position is served.  A
 * change whose operation fails is made in the tree directly, and what the
 * kernel must forget is sent then and once more on the next batch.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/mounts.h"
#include "cmkcert/util.h"
#include "announce.h"
#include "keeper.h"
#include "notify.h"

#define FUSE_SUPER_MAGIC 0x65735546
/* How soon notes sent once are sent again when no batch comes. */
#define AGAIN_MS 200

enum view_mode {
	VIEW_CLONE,             /* the public mount is read-only; we write through a private clone */
	VIEW_DIRECT,            /* through the mount itself (no CAP_SYS_ADMIN) */
	VIEW_NONE,              /* the mount cannot be reached: changes go without the kernel */
};

struct announcer {
	struct cmkfs *fs;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;                /* CLOCK_MONOTONIC */
	struct ann_list queue;
	uint64_t queued_seq;              /* position the queue brings the mount to */
	bool stop;
	atomic_uint_fast64_t served;
	enum view_mode mode;
	atomic_bool mode_chosen;          /* mode is final (announcer_is_set_up()) */
	dev_t dev;                        /* the mount's device, to recognise it */
	struct notes again;
};

bool announcer_is_set_up(struct announcer *a)
{
	return a != NULL && atomic_load(&a->mode_chosen);
}

bool announcer_is_caller(struct cmkfs *fs, fuse_req_t req)
{
	pid_t tid = (pid_t)atomic_load(&fs->announcer_tid);

	return tid != 0 && fuse_req_ctx(req)->pid == tid;
}

/* Is `fd` the root of our mount?  The first time, remember its device. */
static bool is_our_root(struct announcer *a, int fd)
{
	struct statfs sfs;
	struct stat st;

	if (fstatfs(fd, &sfs) != 0 || sfs.f_type != FUSE_SUPER_MAGIC || fstat(fd, &st) != 0 || st.st_ino != 1)
		return false;
	if (a->dev == 0)
		a->dev = st.st_dev;
	return st.st_dev == a->dev;
}

static int set_readonly(int fd, bool ro)
{
	struct mount_attr attr = { 0 };

	if (ro)
		attr.attr_set = MOUNT_ATTR_RDONLY;
	else
		attr.attr_clr = MOUNT_ATTR_RDONLY;
	return mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr));
}

/* A private, writable clone of the mount; -1 with errno set when it cannot be made (ENODEV: not our mount). */
static int open_clone(struct announcer *a)
{
	int fd = open_tree(AT_FDCWD, a->fs->mountpoint, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), err;

	if (fd < 0)
		return -1;
	if (!is_our_root(a, fd)) {
		close(fd);
		errno = ENODEV;
		return -1;
	}
	if (set_readonly(fd, false) != 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* Is our file system no longer mounted at the mount point (being unmounted)? */
static bool mount_gone(const struct announcer *a)
{
	struct statfs sfs;

	return statfs(a->fs->mountpoint, &sfs) != 0 || sfs.f_type != FUSE_SUPER_MAGIC;
}

bool announce_protect_mount(const char *mountpoint)
{
	int fd = open_tree(AT_FDCWD, mountpoint, OPEN_TREE_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = set_readonly(fd, true) == 0;
	close(fd);
	return ok;
}

/* Decide how to reach the mount. */
static void choose_mode(struct announcer *a)
{
	bool stopping;
	int fd;

	if (a->fs->mount_readonly) {
		if ((fd = open_clone(a)) >= 0) {
			close(fd);
			a->mode = VIEW_CLONE;
			cmk_log(CMK_LOG_DEBUG, "announce: changes go through a private clone of the mount");
			return;
		}
		int err = errno;
		struct statfs sfs;

		/*
		 * A daemon stopping before this thread first looked, or whose mount
		 * was unmounted already (fusermount3 -u), finds no mount: nothing
		 * to say then.
		 */
		pthread_mutex_lock(&a->fs->keeper_mu);
		stopping = a->fs->stopping;
		pthread_mutex_unlock(&a->fs->keeper_mu);
		if (!stopping && statfs(a->fs->mountpoint, &sfs) == 0 && sfs.f_type != FUSE_SUPER_MAGIC)
			cmk_log(CMK_LOG_DEBUG, "announce: %s is not mounted any more", a->fs->mountpoint);
		else if (!stopping)
			cmk_log(CMK_LOG_WARN, "announce: cannot clone the mount (%s); changes are served without "
				"inotify events", err == ENODEV ? "another file system is mounted over it" : strerror(err));
		a->mode = VIEW_NONE;
		return;
	}
	if ((fd = open(a->fs->mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC)) >= 0 && is_our_root(a, fd)) {
		close(fd);
		a->mode = VIEW_DIRECT;
		return;
	}
	if (fd >= 0)
		close(fd);
	a->mode = VIEW_NONE;
	cmk_log(CMK_LOG_WARN, "announce: cannot reach the mount at %s; changes are served without inotify "
		"events", a->fs->mountpoint);
}

static int open_view(struct announcer *a)
{
	int fd;

	if (a->mode == VIEW_CLONE)
		return open_clone(a);
	if (a->mode == VIEW_DIRECT) {
		if ((fd = open(a->fs->mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC)) >= 0 && !is_our_root(a, fd)) {
			close(fd);
			errno = ENODEV;
			return -1;
		}
		return fd;
	}
	return -1;
}

static int perform(int root, const struct ann *an, const char *from, const char *to)
{
	switch (an->op) {
	case ANN_RENAME: return renameat(root, from, root, to);
	case ANN_UNLINK: return unlinkat(root, to, 0);
	case ANN_RMDIR: return unlinkat(root, to, AT_REMOVEDIR);
	}
	errno = EINVAL;
	return -1;
}

static void run_batch(struct announcer *a, struct ann_list *batch, struct notes *ns)
{
	static struct cmk_log_limit lim = CMK_LOG_LIMIT_INIT;
	struct tree *t = a->fs->tree;
	char from[TREE_NAME_MAX * 3], to[TREE_NAME_MAX * 3];
	int root = -1, view_err = 0;

	if (batch->n > 0 && a->mode != VIEW_NONE && (root = open_view(a)) < 0) {
		/* Unmounted under us (the daemon is being stopped): force the changes without a word. */
		view_err = mount_gone(a) ? 0 : errno;
	}

	for (size_t i = 0; i < batch->n; i++) {
		const struct ann *an = &batch->v[i];
		bool wanted;
		int err = 0;

		tree_lock(t);
		wanted = tree_ann_paths(t, an, from, to, sizeof(from));
		tree_unlock(t);
		if (!wanted)
			continue;
		if (root < 0)
			err = view_err;
		else if (perform(root, an, from, to) != 0)
			err = errno;
		if (root < 0 || err != 0) {
			/* A newer change of the name may have replaced this one meanwhile: nothing to do then. */
			tree_lock(t);
			wanted = tree_ann_paths(t, an, from, to, sizeof(from));
			if (wanted)
				tree_ann_force(t, an, ns);
			tree_unlock(t);
			if (wanted && err != 0)
				cmk_log_limited(&lim, CMK_LOG_WARN, "announce: %s %s: %s; changed without telling "
						"watchers", an->op == ANN_RENAME ? "rename onto" : "unlink", to,
						strerror(err));
		}
	}
	if (root >= 0)
		close(root);
	tree_lock(t);
	tree_ann_release(t, batch);
	tree_unlock(t);
}

static void *run(void *arg)
{
	struct announcer *a = arg;
	struct ann_list batch = { 0 };
	struct notes ns = { 0 };
	uint64_t seq;
	bool stop;

	atomic_store(&a->fs->announcer_tid, (int)syscall(SYS_gettid));
	/* Looking at the mount needs the session to answer: this thread waits for it, nobody else. */
	choose_mode(a);
	atomic_store(&a->mode_chosen, true);
	for (;;) {
		pthread_mutex_lock(&a->mu);
		if (a->queue.n == 0 && a->queued_seq == atomic_load(&a->served) && !a->stop) {
			if (a->again.n > 0) {
				struct timespec ts;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_nsec += AGAIN_MS * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&a->cv, &a->mu, &ts);
			} else {
				pthread_cond_wait(&a->cv, &a->mu);
			}
		}
		/* Swap the queue for the (empty) batch list, keeping both allocations. */
		struct ann_list tmp = batch;
		batch = a->queue;
		a->queue = tmp;
		seq = a->queued_seq;
		stop = a->stop;
		pthread_mutex_unlock(&a->mu);

		if (stop) {
			/* Shutting down: the mount is going; make what is left without it. */
			a->mode = VIEW_NONE;
		}
		run_batch(a, &batch, &ns);
		if (stop)
			ns.n = 0;       /* the kernel has nothing of the mount left to forget */
		else
			notify_send(a->fs->se, &ns, &a->again);
		atomic_store(&a->served, seq);
		/* Everything up to seq is visible on the mount: say so where cmkcert --wait looks (mounts.h). */
		if (!stop && a->fs->mount_reg != NULL && seq != 0 && cmk_mounts_publish(a->fs->mount_reg, seq) != 0)
			cmk_log(CMK_LOG_DEBUG, "announce: %s", cmk_errdetail());
		if (stop)
			break;
	}
	ann_list_clear(&batch);
	notes_clear(&ns);
	return NULL;
}

int announcer_start(struct cmkfs *fs, struct announcer **out)
{
	struct announcer *a;
	pthread_condattr_t ca;

	*out = NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return CMK_ERR_NOMEM;
	a->fs = fs;
	pthread_mutex_init(&a->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&a->thread, NULL, run, a) != 0) {
		pthread_cond_destroy(&a->cv);
		pthread_mutex_destroy(&a->mu);
		free(a);
		return cmk_fail(CMK_ERR_INTERNAL, "announce: cannot start the announcer thread");
	}
	*out = a;
	return 0;
}

void announcer_submit(struct announcer *a, struct ann_list *anns, uint64_t seq)
{
	struct notes ns = { 0 };
	size_t need;

	pthread_mutex_lock(&a->mu);
	need = a->queue.n + anns->n;
	if (need > a->queue.cap) {
		size_t cap = a->queue.cap ? a->queue.cap : 64;
		while (cap < need)
			cap *= 2;
		struct ann *v = realloc(a->queue.v, cap * sizeof(*v));
		if (v == NULL) {
			/* No room to queue them: make them now, without the kernel's help. */
			pthread_mutex_unlock(&a->mu);
			tree_lock(a->fs->tree);
			for (size_t i = 0; i < anns->n; i++)
				tree_ann_force(a->fs->tree, &anns->v[i], &ns);
			tree_ann_release(a->fs->tree, anns);
			tree_unlock(a->fs->tree);
			notify_send(a->fs->se, &ns, &a->again);
			notes_clear(&ns);
			pthread_mutex_lock(&a->mu);
			goto queued;
		}
		a->queue.v = v;
		a->queue.cap = cap;
	}
	/* An empty list may come with no array at all (memcpy wants valid pointers even for 0 bytes). */
	if (anns->n > 0)
		memcpy(a->queue.v + a->queue.n, anns->v, anns->n * sizeof(*anns->v));
	a->queue.n += anns->n;
	anns->n = 0;
queued:
	if (seq > a->queued_seq)
		a->queued_seq = seq;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

uint64_t announcer_served(struct announcer *a)
{
	return atomic_load(&a->served);
}

bool announcer_stop(struct announcer *a, int64_t deadline_ms)
{
	if (a == NULL)
		return true;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	if (!keeper_join_until(a->thread, deadline_ms)) {
		/* Stuck in an operation on a mount that no longer answers: leave it, and its memory, behind. */
		cmk_log(CMK_LOG_WARN, "announce: the announcer thread did not stop; left behind");
		pthread_detach(a->thread);
		return false;
	}
	atomic_store(&a->fs->announcer_tid, 0);
	ann_list_clear(&a->queue);
	notes_clear(&a->again);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	free(a);
	return true;
}
