/*
 * lockmem.h - memory for unsealed private keys: whole pages of their own,
 * locked against swapping (mlock) and left out of core dumps.
 *
 * mlock works on pages, and unlocking a page unlocks it for every buffer on
 * it, so two keys never share a page.  Released buffers are wiped and kept
 * (still locked) for reuse, up to a small number per size, because an mmap
 * plus mlock per open would cost more than the unsealing itself; the rest
 * is wiped, unlocked and unmapped.
 */
#ifndef CMKCERTFS_LOCKMEM_H
#define CMKCERTFS_LOCKMEM_H

#include <stddef.h>
#include <stdint.h>

struct lockmem;

struct lockbuf {
	uint8_t *p;
	size_t cap;                   /* usable bytes (whole pages) */
};

int lockmem_new(struct lockmem **out);
/* Wipes, unlocks and unmaps every pooled buffer.  Buffers still out must be freed first. */
void lockmem_free(struct lockmem *m);

/*
 * A buffer of at least `len` bytes.  When the kernel refuses to lock it
 * (RLIMIT_MEMLOCK), the buffer is still returned, unlocked, and a warning
 * is logged once.  Returns 0 or CMK_ERR_NOMEM.
 */
int lockmem_get(struct lockmem *m, size_t len, struct lockbuf *out);

/* Wipe the whole buffer and give it back.  A zeroed lockbuf is a no-op. */
void lockmem_put(struct lockmem *m, struct lockbuf *b);

#endif
