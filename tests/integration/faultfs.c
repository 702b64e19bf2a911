/* faultfs: an LD_PRELOAD shim (tests only) that makes one folder full or read-only for the
 * process it is loaded in, where mounting a small tmpfs or a read-only bind mount is refused.
 *
 * Python, Rust (safetensors), C++ (torch, onnx, onnxruntime) and SQLite all reach the file
 * system through these libc calls, so each sees the same errno a real full or read-only disk
 * gives. Environment:
 *   FAULTFS_PREFIX       absolute, resolved folder; only paths under it are faulted.
 *   FAULTFS_MODE         "enospc": writes under the prefix fail with ENOSPC once
 *                        FAULTFS_QUOTA_BYTES (default 0) have been written there in all (the
 *                        write crossing it is cut short, as the kernel does);
 *                        "erofs": opening for writing, creating, mkdir, rename, link and
 *                        unlink under the prefix fail with EROFS.
 * Limits: paths are joined, not normalized (the tests pass resolved ones); glibc's own
 * internal calls (fwrite's flush, mkstemp) bypass any preload, so FILE* writes are not
 * counted; the quota is per process (a child starts with a fresh one).
 * Build: cc -shared -fPIC -O2 -o faultfs.so faultfs.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OFF, ENOSPC_MODE, EROFS_MODE };
static int mode = OFF;
static const char *prefix = "";
static size_t prefix_len;
static long long quota, written;

__attribute__((constructor)) static void setup(void) {
    const char *p = getenv("FAULTFS_PREFIX"), *m = getenv("FAULTFS_MODE");
    const char *q = getenv("FAULTFS_QUOTA_BYTES");
    if (!p || p[0] != '/' || !m) return;
    prefix = p;
    prefix_len = strlen(p);
    while (prefix_len > 1 && prefix[prefix_len - 1] == '/') prefix_len--;
    quota = q ? atoll(q) : 0;
    mode = !strcmp(m, "enospc") ? ENOSPC_MODE : !strcmp(m, "erofs") ? EROFS_MODE : OFF;
}

/* The next definition of `f` (libc's), looked up once: calls made before our constructor or
 * from other constructors must still work. */
#define REAL(f)                                   \
    static __typeof__(&f) real_##f;               \
    if (!real_##f) real_##f = (__typeof__(&f))dlsym(RTLD_NEXT, #f)

static int is_under(const char *abs) {
    return !strncmp(abs, prefix, prefix_len) && (abs[prefix_len] == '/' || !abs[prefix_len]);
}

/* Whether `path`, relative to `dirfd` as the *at calls take it, is under the prefix. */
static int path_under(int dirfd, const char *path) {
    char base[PATH_MAX], full[2 * PATH_MAX + 2], link[32];
    if (!path) return 0;
    if (path[0] == '/') return is_under(path);
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base)) return 0;
    } else {
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0) return 0;
        base[n] = '\0';
    }
    snprintf(full, sizeof full, "%s/%s", base, path);
    return is_under(full);
}

/* Whether an open descriptor is a file under the prefix (asked on every write: descriptors
 * are reused, and some are opened by calls no preload sees, e.g. fopen's). */
static int fd_under(int fd) {
    char link[32], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = '\0';
    return is_under(target);
}

/* ---------------------------------------------------------------- enospc: the write family */

/* Shrinks *count to the room left for a write to `fd`: 0 if fd is not watched, 1 if it is,
 * -1 (errno ENOSPC) if no room is left. */
static int room(int fd, size_t *count) {
    if (mode != ENOSPC_MODE || !fd_under(fd)) return 0;
    long long left = quota - __atomic_load_n(&written, __ATOMIC_SEQ_CST);
    if (left <= 0 && *count) return errno = ENOSPC, -1;
    if ((long long)*count > left) *count = (size_t)left;
    return 1;
}

static ssize_t counted(int watched, ssize_t done) {
    if (watched == 1 && done > 0) __atomic_add_fetch(&written, done, __ATOMIC_SEQ_CST);
    return done;
}

#define WRITER(f, params, fd, count, ...)                  \
    ssize_t f params {                                     \
        REAL(f);                                           \
        int watched = room(fd, &count);                    \
        if (watched < 0) return -1;                        \
        return counted(watched, real_##f(__VA_ARGS__));    \
    }
WRITER(write, (int fd, const void *buf, size_t n), fd, n, fd, buf, n)
WRITER(pwrite, (int fd, const void *buf, size_t n, off_t o), fd, n, fd, buf, n, o)
WRITER(pwrite64, (int fd, const void *buf, size_t n, off64_t o), fd, n, fd, buf, n, o)
WRITER(sendfile, (int out, int in, off_t *o, size_t n), out, n, out, in, o, n)
WRITER(sendfile64, (int out, int in, off64_t *o, size_t n), out, n, out, in, o, n)
WRITER(copy_file_range, (int in, off64_t *io, int out, off64_t *oo, size_t n, unsigned fl),
       out, n, in, io, out, oo, n, fl)

/* The vectored writes: *iov and *cnt swapped for `cut`, the buffers cut to the room left. */
static int cut_iov(int fd, const struct iovec **iov, int *cnt, struct iovec *cut) {
    size_t total = 0;
    int n = 0;
    for (int i = 0; i < *cnt; i++) total += (*iov)[i].iov_len;
    int watched = room(fd, &total);
    if (watched != 1 || *cnt < 0 || *cnt > IOV_MAX) return watched;
    for (int i = 0; i < *cnt && total; i++, n++) {
        cut[n] = (*iov)[i];
        if (cut[n].iov_len > total) cut[n].iov_len = total;
        total -= cut[n].iov_len;
    }
    *iov = cut;
    *cnt = n;
    return watched;
}

#define VWRITER(f, params, ...)                             \
    ssize_t f params {                                      \
        REAL(f);                                            \
        struct iovec cut[IOV_MAX];                          \
        int watched = cut_iov(fd, &iov, &cnt, cut);         \
        if (watched < 0) return -1;                         \
        return counted(watched, real_##f(__VA_ARGS__));     \
    }
VWRITER(writev, (int fd, const struct iovec *iov, int cnt), fd, iov, cnt)
VWRITER(pwritev, (int fd, const struct iovec *iov, int cnt, off_t o), fd, iov, cnt, o)
VWRITER(pwritev64, (int fd, const struct iovec *iov, int cnt, off64_t o), fd, iov, cnt, o)
VWRITER(pwritev2, (int fd, const struct iovec *iov, int cnt, off_t o, int fl), fd, iov, cnt, o,
        fl)

/* Reserving room (SQLite, torch) fails when it would not fit; only the writes that follow
 * count against the quota. posix_fallocate returns its error instead of setting errno. */
static int fits(int fd, long long len) {
    size_t want = (size_t)len;
    return room(fd, &want) >= 0 && want == (size_t)len;
}
#define FALLOCATOR(f, off)                                                  \
    int f(int fd, int m, off o, off len) {                                  \
        REAL(f);                                                            \
        return fits(fd, len) ? real_##f(fd, m, o, len) : (errno = ENOSPC, -1); \
    }
#define POSIX_FALLOCATOR(f, off)                                            \
    int f(int fd, off o, off len) {                                         \
        REAL(f);                                                            \
        return fits(fd, len) ? real_##f(fd, o, len) : ENOSPC;               \
    }
FALLOCATOR(fallocate, off_t)
FALLOCATOR(fallocate64, off64_t)
POSIX_FALLOCATOR(posix_fallocate, off_t)
POSIX_FALLOCATOR(posix_fallocate64, off64_t)

/* ---------------------------------------------------------------- erofs: the open family */

static int deny(void) { return errno = EROFS, -1; }

/* Whether opening `path` with `flags` writes: the kernel refuses write access, truncation and
 * creating a new file on a read-only mount; opening an existing file O_CREAT read-only works. */
static int opens_for_write(int dirfd, const char *path, int flags) {
    if (mode != EROFS_MODE || !path_under(dirfd, path)) return 0;
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) return 1;
    return (flags & O_CREAT) && faccessat(dirfd, path, F_OK, 0) != 0;
}

/* A new name under the prefix: EEXIST comes first on a real read-only mount. */
static int creates(int dirfd, const char *path) {
    if (mode != EROFS_MODE || !path_under(dirfd, path)) return 0;
    return faccessat(dirfd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ? (errno = EEXIST, -1) : 1;
}

/* open's third argument exists only when it creates. */
#define OPENER(f, params, dirfd, ...)                               \
    int f params {                                                  \
        REAL(f);                                                    \
        int perm = 0;                                               \
        if (flags & (O_CREAT | __O_TMPFILE)) {                      \
            va_list ap;                                             \
            va_start(ap, flags);                                    \
            perm = va_arg(ap, int);                                 \
            va_end(ap);                                             \
        }                                                           \
        if (opens_for_write(dirfd, path, flags)) return deny();     \
        return real_##f(__VA_ARGS__);                               \
    }
OPENER(open, (const char *path, int flags, ...), AT_FDCWD, path, flags, perm)
OPENER(open64, (const char *path, int flags, ...), AT_FDCWD, path, flags, perm)
OPENER(openat, (int d, const char *path, int flags, ...), d, d, path, flags, perm)
OPENER(openat64, (int d, const char *path, int flags, ...), d, d, path, flags, perm)

int creat(const char *path, mode_t perm) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, perm); }
int creat64(const char *path, mode_t perm) { return creat(path, perm); }

#define FOPENER(f)                                                              \
    FILE *f(const char *path, const char *how) {                                \
        REAL(f);                                                                \
        int writes = how && strpbrk(how, "wa+") != NULL;                        \
        if (writes && opens_for_write(AT_FDCWD, path, O_WRONLY)) return deny(), NULL; \
        return real_##f(path, how);                                             \
    }
FOPENER(fopen)
FOPENER(fopen64)

/* Calls that change names: refused when any name they change is under the prefix. */
#define NAMER(f, params, check, ...)                          \
    int f params {                                            \
        REAL(f);                                              \
        int c = (check);                                      \
        if (c) return c < 0 ? -1 : deny();                    \
        return real_##f(__VA_ARGS__);                         \
    }
#define UNDER(d, p) (mode == EROFS_MODE && path_under(d, p))
NAMER(mkdir, (const char *p, mode_t m), creates(AT_FDCWD, p), p, m)
NAMER(mkdirat, (int d, const char *p, mode_t m), creates(d, p), d, p, m)
NAMER(rename, (const char *a, const char *b), UNDER(AT_FDCWD, a) || UNDER(AT_FDCWD, b), a, b)
NAMER(renameat, (int da, const char *a, int db, const char *b), UNDER(da, a) || UNDER(db, b),
      da, a, db, b)
NAMER(renameat2, (int da, const char *a, int db, const char *b, unsigned fl),
      UNDER(da, a) || UNDER(db, b), da, a, db, b, fl)
NAMER(unlink, (const char *p), UNDER(AT_FDCWD, p), p)
NAMER(unlinkat, (int d, const char *p, int fl), UNDER(d, p), d, p, fl)
NAMER(rmdir, (const char *p), UNDER(AT_FDCWD, p), p)
NAMER(link, (const char *a, const char *b), creates(AT_FDCWD, b), a, b)
NAMER(linkat, (int da, const char *a, int db, const char *b, int fl), creates(db, b), da, a, db,
      b, fl)
NAMER(symlink, (const char *a, const char *b), creates(AT_FDCWD, b), a, b)
NAMER(symlinkat, (const char *a, int d, const char *b), creates(d, b), a, d, b)
