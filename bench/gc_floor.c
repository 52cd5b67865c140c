/*
 * bench/gc_floor.c - the floor for GC: the fewest syscalls that any
 * atime-based mark-and-sweep GC must make on a chunklock store, in one
 * thread, with nothing else (docs/benchmarks.md "GC against the floor").
 *
 *     gc_floor [--margin SECONDS] STORE
 *
 *   mark:  walk STORE/<type>/<id>/<time>/, and for every *.didx / *.fidx:
 *          open + fstat + mmap, read the digests straight from the entries
 *          (no checksum checks), and utimensat(atime = now) each digest
 *          not seen before in this run (a simple open-addressing set).
 *   sweep: for each of the 65,536 prefix directories: open, getdents64,
 *          one fstatat per entry, unlinkat when atime < start - margin.
 *
 * Deliberately absent, compared with ckl_gc_run: no GC lock, no process
 * locker, no LMDB coordination state or roster, no atime probe, no
 * removed-during-GC set, no index validation (CRC, SHA-256 of the
 * entries), no rename-then-verify (the floor unlinks directly: it is not
 * safe against concurrent writers), no trash purge, no status file, one
 * thread. It is a lower bound for the work, not a usable GC.
 *
 * Prints one JSON line with its phase times and counts. Depends on libc
 * only, so its start-up cost is minimal too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HDR_LEN 128

typedef struct set {
  uint8_t (*slots)[32];
  size_t cap, count;
} set;

static int is_zero(const uint8_t *d) {
  static const uint8_t zero[32];
  return memcmp(d, zero, 32) == 0;
}

static void put(uint8_t (*slots)[32], size_t cap, const uint8_t *d) {
  uint64_t h;
  memcpy(&h, d, 8);
  size_t i = (size_t)h & (cap - 1);
  while (!is_zero(slots[i])) i = (i + 1) & (cap - 1);
  memcpy(slots[i], d, 32);
}

static void set_grow(set *s) {
  size_t ncap = s->cap ? s->cap * 2 : 1024;
  uint8_t (*n)[32] = calloc(ncap, 32);
  if (!n) {
    fputs("gc_floor: out of memory\n", stderr);
    exit(3);
  }
  for (size_t i = 0; i < s->cap; i++)
    if (!is_zero(s->slots[i])) put(n, ncap, s->slots[i]);
  free(s->slots);
  s->slots = n;
  s->cap = ncap;
}

/* 1 if d was added, 0 if present. The all-zero digest marks an empty
 * slot; no generated chunk has that name (SHA-256 of real data). */
static int set_add(set *s, const uint8_t *d) {
  if ((s->count + 1) * 4 > s->cap * 3) set_grow(s);
  uint64_t h;
  memcpy(&h, d, 8);
  size_t i = (size_t)h & (s->cap - 1);
  while (!is_zero(s->slots[i])) {
    if (memcmp(s->slots[i], d, 32) == 0) return 0;
    i = (i + 1) & (s->cap - 1);
  }
  memcpy(s->slots[i], d, 32);
  s->count++;
  return 1;
}

typedef struct floor_stats {
  uint64_t index_files, references, unique, touched, missing;
  uint64_t disk_chunks, removed, removed_bytes;
} floor_stats;

static int chunks_fd;
static set seen;
static floor_stats fs;

static void die(const char *what, const char *name) {
  fprintf(stderr, "gc_floor: %s %s: %s\n", what, name, strerror(errno));
  exit(1);
}

static const char hexd[] = "0123456789abcdef";

static void mark_index(int dirfd, const char *name, int fixed) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open", name);
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat", name);
  size_t len = (size_t)st.st_size;
  if (len < HDR_LEN) die("short index", name);
  const uint8_t *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) die("mmap", name);
  close(fd);
  uint64_t count;
  memcpy(&count, p + 40, 8);
  size_t esz = fixed ? 32 : 40, doff = fixed ? 0 : 8;
  if (count > (len - HDR_LEN) / esz) die("bad count in", name);
  char rel[70];
  rel[4] = '/';
  rel[69] = '\0';
  static const struct timespec now[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *d = p + HDR_LEN + i * esz + doff;
    fs.references++;
    if (!set_add(&seen, d)) continue;
    for (int b = 0; b < 32; b++) {
      rel[5 + 2 * b] = hexd[d[b] >> 4];
      rel[6 + 2 * b] = hexd[d[b] & 15];
    }
    memcpy(rel, rel + 5, 4);
    if (utimensat(chunks_fd, rel, now, 0) == 0)
      fs.touched++;
    else if (errno == ENOENT)
      fs.missing++;
    else
      die("utimensat", rel);
  }
  munmap((void *)p, len);
  fs.index_files++;
}

/* depth 0: store root (types), 1: type (ids), 2: id (times), 3: snapshot. */
static void walk(int dirfd, int depth) {
  DIR *d = fdopendir(dirfd);
  if (!d) die("fdopendir", "");
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *n = e->d_name;
    if (n[0] == '.') continue; /* ".", "..", .chunks, .lock, .locks, .state, .trash */
    if (depth < 3) {
      if (e->d_type != DT_DIR) continue; /* chunklock.json */
      int sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (sub < 0) die("open", n);
      walk(sub, depth + 1);
    } else {
      size_t l = strlen(n);
      if (l > 5 && !strcmp(n + l - 5, ".didx")) mark_index(dirfd, n, 0);
      else if (l > 5 && !strcmp(n + l - 5, ".fidx")) mark_index(dirfd, n, 1);
    }
  }
  closedir(d);
}

/* getdents64 straight on the directory fd: opendir/readdir would add an
 * fcntl per directory (and fdopendir a second one), 65,536 times. */
static void sweep(int64_t cutoff_s, long cutoff_ns) {
  static _Alignas(struct dirent64) char buf[32768];
  char pname[5];
  for (unsigned p = 0; p < 65536; p++) {
    for (int k = 0; k < 4; k++) pname[k] = hexd[(p >> (12 - 4 * k)) & 15];
    pname[4] = '\0';
    int dfd = openat(chunks_fd, pname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) die("open .chunks/", pname);
    ssize_t got;
    while ((got = getdents64(dfd, buf, sizeof buf)) > 0) {
      for (size_t off = 0; off < (size_t)got;) {
        const struct dirent64 *e = (const struct dirent64 *)(const void *)(buf + off);
        off += e->d_reclen;
        if (e->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) die("fstatat", e->d_name);
        fs.disk_chunks++;
        if (st.st_atim.tv_sec < cutoff_s ||
            (st.st_atim.tv_sec == cutoff_s && st.st_atim.tv_nsec < cutoff_ns)) {
          if (unlinkat(dfd, e->d_name, 0) != 0) die("unlink", e->d_name);
          fs.removed++;
          fs.removed_bytes += (uint64_t)st.st_size;
        }
      }
    }
    if (got < 0) die("getdents64 .chunks/", pname);
    close(dfd);
  }
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  long margin = 5;
  int a = 1;
  if (a + 1 < argc && !strcmp(argv[a], "--margin")) {
    margin = strtol(argv[a + 1], NULL, 10);
    a += 2;
  }
  if (a != argc - 1) {
    fputs("usage: gc_floor [--margin SECONDS] STORE\n", stderr);
    return 2;
  }
  const char *store = argv[a];
  struct timespec start;
  clock_gettime(CLOCK_REALTIME, &start);
  int64_t t0 = mono_ns();
  int root = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) die("open", store);
  chunks_fd = openat(root, ".chunks", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (chunks_fd < 0) die("open .chunks in", store);
  walk(root, 0);
  fs.unique = seen.count;
  int64_t t1 = mono_ns();
  sweep((int64_t)start.tv_sec - margin, start.tv_nsec);
  int64_t t2 = mono_ns();
  printf("{\"mark_ns\":%lld,\"sweep_ns\":%lld,\"index_files\":%llu,\"references\":%llu,"
         "\"referenced_chunks\":%llu,\"touched\":%llu,\"missing_chunks\":%llu,"
         "\"disk_chunks\":%llu,\"removed_chunks\":%llu,\"removed_bytes\":%llu,"
         "\"touch_set_bytes\":%llu}\n",
         (long long)(t1 - t0), (long long)(t2 - t1), (unsigned long long)fs.index_files,
         (unsigned long long)fs.references, (unsigned long long)fs.unique,
         (unsigned long long)fs.touched, (unsigned long long)fs.missing,
         (unsigned long long)fs.disk_chunks, (unsigned long long)fs.removed,
         (unsigned long long)fs.removed_bytes, (unsigned long long)(seen.cap * 32));
  free(seen.slots);
  return 0;
}
