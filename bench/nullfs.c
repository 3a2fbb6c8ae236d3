/*
 * nullfs.c - the cheapest FUSE file system that serves files the way
 * cmkcertfs does, as a yardstick for the benchmark: what any FUSE file
 * system costs on this machine before it does any work of its own.
 *
 *   nullfs MOUNTPOINT FILE...
 *
 * Serves the bytes of each FILE (read once at start) in its root directory
 * under the FILE's base name.  Names ending in ".crt" open with keep_cache,
 * everything else with direct_io, as /certs and /private do in cmkcertfs.
 * Same libfuse loop (multi-threaded), same mount options that matter
 * (ro, noflush).  Runs in the foreground until unmounted.
 */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 16

struct file {
	char *name;
	char *data;
	size_t len;
	int direct;
};

static struct file files[MAX_FILES];
static size_t n_files;

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return;
	}
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)files[ino - 2].len;
}

static void nf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	for (size_t i = 0; parent == FUSE_ROOT_ID && i < n_files; i++) {
		if (strcmp(files[i].name, name) == 0) {
			e.ino = i + 2;
			e.attr_timeout = e.entry_timeout = 3600.0;
			fill_stat(e.ino, &e.attr);
			fuse_reply_entry(req, &e);
			return;
		}
	}
	fuse_reply_err(req, ENOENT);
}

static void nf_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill_stat(ino, &st);
	fuse_reply_attr(req, &st, 3600.0);
}

static void nf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fi->direct_io = files[ino - 2].direct;
	fi->keep_cache = !files[ino - 2].direct;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void nf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	const struct file *f = &files[ino - 2];
	size_t n;

	(void)fi;
	if (off < 0 || (size_t)off >= f->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	n = f->len - (size_t)off < size ? f->len - (size_t)off : size;
	fuse_reply_buf(req, f->data + off, n);
}

static void nf_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = nf_lookup,
	.getattr = nf_getattr,
	.open = nf_open,
	.read = nf_read,
	.release = nf_release,
};

static int load(const char *path, struct file *f)
{
	FILE *fp = fopen(path, "rb");
	const char *base = strrchr(path, '/');
	long len;

	if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0 ||
	    (f->data = malloc((size_t)len + 1)) == NULL || fread(f->data, 1, (size_t)len, fp) != (size_t)len) {
		if (fp != NULL)
			fclose(fp);
		return -1;
	}
	fclose(fp);
	f->len = (size_t)len;
	f->name = strdup(base != NULL ? base + 1 : path);
	f->direct = strlen(f->name) < 4 || strcmp(f->name + strlen(f->name) - 4, ".crt") != 0;
	return f->name != NULL ? 0 : -1;
}

int main(int argc, char **argv)
{
	char *fargv[] = { "nullfs", "-o", "ro,fsname=nullfs", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_loop_config loop = { .clone_fd = 0, .max_idle_threads = 10 };
	struct fuse_session *se;
	int rc = 1;

	if (argc < 3 || argc - 2 > MAX_FILES) {
		fprintf(stderr, "usage: nullfs MOUNTPOINT FILE...\n");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (load(argv[i], &files[n_files++]) != 0) {
			fprintf(stderr, "nullfs: cannot read %s\n", argv[i]);
			return 1;
		}
	}
	if ((se = fuse_session_new(&args, &ops, sizeof(ops), NULL)) == NULL)
		return 1;
	if (fuse_set_signal_handlers(se) == 0 && fuse_session_mount(se, argv[1]) == 0) {
		rc = fuse_session_loop_mt(se, &loop) < 0;
		fuse_session_unmount(se);
	}
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	return rc;
}
