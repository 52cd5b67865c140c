/*
 * bench/gen_store.c - a deterministic, seeded chunk store for the GC
 * benchmark (docs/benchmarks.md "GC against the floor").
 *
 *     gen_store [-n 1M] [--seed 1] [--groups 10] [--snapshots 25]
 *               [--archives 4] [--refs 4] [--threads 2] [--insert] STORE
 *     gen_store --reset [same options] STORE
 *
 * What it builds, for N chunks and seed S (the same N/S/shape always give
 * byte-identical chunk files and the same index contents):
 *
 *   - A store created with ckl_store_create: sync "none", compress_level
 *     -1 (chunks stored raw), GC atime safety 0, margin 5 s.
 *   - Chunk i (0 <= i < N) has a payload of 1024..4096 bytes of
 *     pseudo-random data derived from (S, i); its name is the SHA-256 of
 *     that payload, so chunks land uniformly over the 65,536 prefix
 *     directories. Every chunk file's atime and mtime are set to
 *     2020-01-01T00:00:00Z, far below any GC cutoff.
 *   - Chunks 0 .. N/2-1 are referenced, chunks N/2 .. N-1 are garbage:
 *     exactly half of the store is garbage (the generator checks that the
 *     indexes cover every referenced chunk).
 *   - groups x snapshots x archives dynamic indexes (default 10 x 25 x 4
 *     = 1,000 .didx files) in snapshots host/bench-GGG/<daily time>/.
 *     The referenced chunks are split evenly over the groups x archives
 *     "archive streams"; snapshot s of a stream references a window of
 *     W = ceil(refs x C / snapshots) consecutive chunks of the stream's C,
 *     sliding from the first to the last snapshot, so every chunk is
 *     referenced about `refs` times in total (cross-snapshot dedup, as in
 *     daily backups of a slowly changing machine). Each snapshot also has
 *     a minimal index.json, so it lists as complete.
 *
 * Writing: by default chunk files are written directly at their final
 * names with the library's encoder (ckl_chunk_encode) and
 * openat(O_CREAT|O_EXCL) + write + futimens + close, no fsync: nothing
 * else uses the store while it is generated, so the temp-file-and-rename
 * that ckl_chunk_insert does for concurrent writers is not needed.
 * --insert uses ckl_chunk_insert (CKL_SYNC_NONE) + utimensat instead, to
 * measure the difference (docs/benchmarks.md has both numbers).
 *
 * --reset restores a store generated with the same options after a GC
 * (or the floor) ran on it: each chunk's times are set back to 2020
 * (utimensat) and the chunks that were removed are written again. That
 * is cheaper than a copy of the whole store (cp -a re-creates all N files,
 * reset only the N/2 garbage ones) and gives the same logical store: same
 * names, contents, times and indexes. Chunks are processed by --threads
 * worker threads (each takes every T-th chunk).
 *
 * --export DIR writes no store: the same N chunk payloads as plain files
 * for the peers (restic, borg, casync; bench/peers/gc_peers.py), the
 * referenced half into DIR/live/stream-KK.bin and the garbage half into
 * DIR/garbage/stream-KK.bin (KK = groups x archives streams, each file
 * the concatenation of its stream's payloads in chunk order). A peer that
 * backs up both directories and then forgets the garbage backup is left
 * with the same half garbage as the store (by bytes; its own chunker cuts
 * other chunk boundaries).
 *
 * Prints one JSON line: {"chunks":N,"written":..,"aged":..,"bytes":..,
 * "index_files":..,"references":..,"seconds":..}.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunklock/chunklock.h"
#include "common/internal.h"

#define OLD_TIME 1577836800 /* 2020-01-01T00:00:00Z */
#define SNAP_BASE 1704067200 /* 2024-01-01T00:00:00Z, first snapshot */
#define MIN_LEN 1024u
#define MAX_LEN 4096u

typedef struct gen_opts {
  uint64_t n, seed;
  unsigned groups, snapshots, archives, refs, threads;
  int reset, insert;
  const char *store;
} gen_opts;

typedef struct shared {
  const gen_opts *o;
  int chunks_fd;
  ckl_chunkstore *cs;     /* --insert only */
  ckl_digest *digests;    /* digests of the referenced chunks (N/2) */
  atomic_int err;
  atomic_ullong written, aged, bytes;
} shared;

typedef struct worker {
  shared *sh;
  unsigned index;
  pthread_t thread;
} worker;

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t chunk_state(uint64_t seed, uint64_t id) {
  uint64_t s = seed * 0x2545F4914F6CDD1Dull ^ (id + 1) * 0x9E3779B97F4A7C15ull;
  splitmix(&s);
  return s;
}

/* The payload length of chunk id: the first value of its stream. */
static size_t payload_len(uint64_t seed, uint64_t id) {
  uint64_t s = chunk_state(seed, id);
  return MIN_LEN + (size_t)(splitmix(&s) % (MAX_LEN - MIN_LEN + 1));
}

static size_t payload(uint64_t seed, uint64_t id, uint8_t buf[MAX_LEN]) {
  uint64_t s = chunk_state(seed, id);
  size_t len = MIN_LEN + (size_t)(splitmix(&s) % (MAX_LEN - MIN_LEN + 1));
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = splitmix(&s);
    size_t k = len - i < 8 ? len - i : 8;
    memcpy(buf + i, &v, k);
  }
  return len;
}

static const struct timespec old_times[2] = {{.tv_sec = OLD_TIME}, {.tv_sec = OLD_TIME}};

static int write_chunk(shared *sh, const char *rel, const uint8_t *data, size_t len,
                       const ckl_digest *d) {
  if (sh->cs) {
    uint64_t stored = 0;
    int rc = ckl_chunk_insert(sh->cs, d, data, len, &stored);
    if (rc < 0) return rc;
    if (utimensat(sh->chunks_fd, rel, old_times, 0) != 0) return -errno;
    atomic_fetch_add(&sh->bytes, stored);
    return 0;
  }
  void *img;
  size_t img_len;
  int rc = ckl_chunk_encode(data, len, -1, &img, &img_len);
  if (rc < 0) return rc;
  int fd = openat(sh->chunks_fd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    rc = -errno;
  } else {
    rc = ckl__write_all(fd, img, img_len);
    if (rc == 0 && futimens(fd, old_times) != 0) rc = -errno;
    if (close(fd) != 0 && rc == 0) rc = -errno;
  }
  free(img);
  if (rc == 0) atomic_fetch_add(&sh->bytes, img_len);
  return rc;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  shared *sh = w->sh;
  const gen_opts *o = sh->o;
  uint8_t buf[MAX_LEN];
  for (uint64_t id = w->index; id < o->n; id += o->threads) {
    if (atomic_load_explicit(&sh->err, memory_order_relaxed)) break;
    size_t len = payload(o->seed, id, buf);
    ckl_digest d;
    ckl_digest_compute(buf, len, &d);
    if (id < o->n / 2) sh->digests[id] = d;
    char rel[80];
    ckl_chunk_relpath(&d, rel, sizeof rel);
    int rc = 0;
    if (o->reset) {
      if (utimensat(sh->chunks_fd, rel, old_times, 0) == 0) {
        atomic_fetch_add_explicit(&sh->aged, 1, memory_order_relaxed);
        continue;
      }
      if (errno != ENOENT) rc = -errno;
    }
    if (rc == 0) rc = write_chunk(sh, rel, buf, len, &d);
    if (rc < 0) {
      fprintf(stderr, "gen_store: chunk %llu (.chunks/%s): %s\n", (unsigned long long)id, rel,
              ckl_strerror(rc));
      int zero = 0;
      atomic_compare_exchange_strong(&sh->err, &zero, rc);
      break;
    }
    atomic_fetch_add_explicit(&sh->written, 1, memory_order_relaxed);
  }
  return NULL;
}

static int mkdir_p(char *path) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    int rc = mkdir(path, 0755);
    *p = '/';
    if (rc != 0 && errno != EEXIST) return -errno;
  }
  if (mkdir(path, 0755) != 0 && errno != EEXIST) return -errno;
  return 0;
}

static const char *const archive_names[] = {"root", "data", "home", "etc"};

/* Write the indexes; returns the number of references, or a negative
 * code. Checks that the windows cover every referenced chunk. */
static long long write_indexes(const gen_opts *o, const ckl_digest *digests, uint64_t *files) {
  uint64_t u = o->n / 2, k = (uint64_t)o->groups * o->archives;
  uint8_t *covered = calloc(u ? u : 1, 1);
  if (!covered) return -ENOMEM;
  long long refs = 0;
  int rc = 0;
  for (unsigned g = 0; rc == 0 && g < o->groups; g++) {
    for (unsigned s = 0; rc == 0 && s < o->snapshots; s++) {
      char tm[CKL_SNAP_TIME_LEN + 1];
      ckl_snapshot_time_format(SNAP_BASE + (int64_t)s * 86400, tm);
      char dir[4096];
      snprintf(dir, sizeof dir, "%s/host/bench-%03u/%s", o->store, g, tm);
      if ((rc = mkdir_p(dir)) < 0) break;
      for (unsigned a = 0; rc == 0 && a < o->archives; a++) {
        uint64_t stream = (uint64_t)g * o->archives + a;
        uint64_t lo = stream * u / k, hi = (stream + 1) * u / k, c = hi - lo;
        uint64_t win = (o->refs * c + o->snapshots - 1) / o->snapshots;
        if (win > c) win = c;
        uint64_t start = o->snapshots > 1 ? s * (c - win) / (o->snapshots - 1) : 0;
        char path[4200], name[64];
        if (a < 4)
          snprintf(name, sizeof name, "%s.didx", archive_names[a]);
        else
          snprintf(name, sizeof name, "archive%u.didx", a);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        ckl_index_writer *w;
        rc = ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, CKL_ATOMIC_NOSYNC, &w);
        if (rc < 0) break;
        uint64_t end = 0;
        for (uint64_t i = lo + start; rc == 0 && i < lo + start + win; i++) {
          end += payload_len(o->seed, i);
          rc = ckl_index_writer_add(w, end, &digests[i]);
          covered[i] = 1;
          refs++;
        }
        if (rc < 0) {
          ckl_index_writer_abort(w);
          break;
        }
        if ((rc = ckl_index_writer_commit(w, NULL)) < 0) break;
        (*files)++;
      }
      if (rc < 0) break;
      char mpath[4200];
      snprintf(mpath, sizeof mpath, "%s/index.json", dir);
      FILE *f = fopen(mpath, "we");
      if (!f) {
        rc = -errno;
        break;
      }
      fputs("{\"files\":[],\"format\":1,\"unprotected\":{}}", f);
      if (fclose(f) != 0) rc = -errno;
    }
  }
  for (uint64_t i = 0; rc == 0 && i < u; i++) {
    if (!covered[i]) {
      fprintf(stderr, "gen_store: referenced chunk %llu is in no index (shape too small?)\n",
              (unsigned long long)i);
      rc = -EINVAL;
    }
  }
  free(covered);
  return rc < 0 ? rc : refs;
}

static uint64_t parse_count(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*end == 'k' || *end == 'K') v *= 1e3;
  else if (*end == 'm' || *end == 'M') v *= 1e6;
  else if (*end != '\0') return 0;
  return v < 2 ? 0 : (uint64_t)v;
}

static void usage(void) {
  fputs("usage: gen_store [--reset] [-n N (1M; 100k, 4M...)] [--seed S] [--groups G]\n"
        "                 [--snapshots S] [--archives A] [--refs R] [--threads T] [--insert]"
        " STORE\n"
        "       gen_store --export DIR [-n N] [--seed S] [--groups G] [--archives A]\n",
        stderr);
}

/* --export: see the header comment. */
static int export_files(const gen_opts *o, const char *dir) {
  uint64_t half = o->n / 2, k = (uint64_t)o->groups * o->archives;
  char path[4096];
  uint8_t buf[MAX_LEN];
  unsigned long long bytes = 0;
  for (int part = 0; part < 2; part++) {
    const char *sub = part == 0 ? "live" : "garbage";
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return -errno;
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return -errno;
    uint64_t base = part == 0 ? 0 : half, cnt = part == 0 ? half : o->n - half;
    for (uint64_t s = 0; s < k; s++) {
      snprintf(path, sizeof path, "%s/%s/stream-%03llu.bin", dir, sub, (unsigned long long)s);
      FILE *f = fopen(path, "we");
      if (!f) return -errno;
      for (uint64_t i = base + cnt * s / k; i < base + cnt * (s + 1) / k; i++) {
        size_t len = payload(o->seed, i, buf);
        if (fwrite(buf, 1, len, f) != len) {
          fclose(f);
          return -EIO;
        }
        bytes += len;
      }
      if (fclose(f) != 0) return -errno;
    }
  }
  printf("{\"chunks\":%llu,\"export_bytes\":%llu}\n", (unsigned long long)o->n, bytes);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  gen_opts o = {.n = 1000000, .seed = 1, .groups = 10, .snapshots = 25, .archives = 4,
                .refs = 4, .threads = 2};
  static const struct option longopts[] = {
      {"seed", required_argument, NULL, 's'},      {"groups", required_argument, NULL, 'g'},
      {"snapshots", required_argument, NULL, 'S'}, {"archives", required_argument, NULL, 'a'},
      {"refs", required_argument, NULL, 'r'},      {"threads", required_argument, NULL, 't'},
      {"reset", no_argument, NULL, 'R'},           {"insert", no_argument, NULL, 'i'},
      {"help", no_argument, NULL, 'h'},            {"export", required_argument, NULL, 'E'},
      {0}};
  const char *export_dir = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "n:s:g:S:a:r:t:RihE:", longopts, NULL)) != -1) {
    unsigned long v = optarg ? strtoul(optarg, NULL, 10) : 0;
    switch (c) {
    case 'n': o.n = parse_count(optarg); break;
    case 's': o.seed = v; break;
    case 'g': o.groups = (unsigned)v; break;
    case 'S': o.snapshots = (unsigned)v; break;
    case 'a': o.archives = (unsigned)v; break;
    case 'r': o.refs = (unsigned)v; break;
    case 't': o.threads = (unsigned)v; break;
    case 'R': o.reset = 1; break;
    case 'i': o.insert = 1; break;
    case 'E': export_dir = optarg; break;
    default: usage(); return 2;
    }
  }
  if (export_dir && optind == argc && o.n >= 2 && o.groups && o.archives) {
    int erc = export_files(&o, export_dir);
    if (erc < 0) fprintf(stderr, "gen_store: export to %s: %s\n", export_dir, strerror(-erc));
    return erc < 0 ? 1 : 0;
  }
  if (optind != argc - 1 || o.n == 0 || !o.groups || !o.snapshots || !o.archives || !o.refs ||
      !o.threads || o.threads > 64) {
    usage();
    return 2;
  }
  o.store = argv[optind];
  double t0 = now_s();

  if (!o.reset) {
    ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                                .sync = CKL_SYNC_NONE,
                                .compress_level = -1,
                                .gc_atime_safety_s = 0,
                                .gc_margin_s = 5};
    int rc = ckl_store_create(o.store, &co);
    if (rc < 0) {
      fprintf(stderr, "gen_store: create %s: %s\n", o.store, ckl_strerror(rc));
      return 1;
    }
  }
  char chunks[4096];
  snprintf(chunks, sizeof chunks, "%s/.chunks", o.store);
  shared sh = {.o = &o};
  atomic_init(&sh.err, 0);
  sh.chunks_fd = open(chunks, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sh.chunks_fd < 0) {
    fprintf(stderr, "gen_store: open %s: %s\n", chunks, strerror(errno));
    return 1;
  }
  if (o.insert) {
    ckl_chunkstore_opts co = {.sync = CKL_SYNC_NONE, .compress_level = -1};
    int rc = ckl_chunkstore_open(chunks, &co, &sh.cs);
    if (rc < 0) {
      fprintf(stderr, "gen_store: open chunk store %s: %s\n", chunks, ckl_strerror(rc));
      return 1;
    }
  }
  sh.digests = calloc(o.n / 2 ? o.n / 2 : 1, sizeof *sh.digests);
  worker *ws = calloc(o.threads, sizeof *ws);
  if (!sh.digests || !ws) return 1;
  for (unsigned i = 0; i < o.threads; i++) {
    ws[i] = (worker){.sh = &sh, .index = i};
    if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) return 1;
  }
  for (unsigned i = 0; i < o.threads; i++) pthread_join(ws[i].thread, NULL);
  int rc = atomic_load(&sh.err);
  long long refs = 0;
  uint64_t files = 0;
  if (rc == 0 && !o.reset) {
    refs = write_indexes(&o, sh.digests, &files);
    if (refs < 0) {
      fprintf(stderr, "gen_store: writing indexes: %s\n", ckl_strerror((int)refs));
      rc = (int)refs;
    }
  }
  ckl_chunkstore_close(sh.cs);
  close(sh.chunks_fd);
  free(sh.digests);
  free(ws);
  if (rc < 0) return 1;
  printf("{\"chunks\":%llu,\"written\":%llu,\"aged\":%llu,\"bytes\":%llu,\"index_files\":%llu,"
         "\"references\":%lld,\"seconds\":%.3f}\n",
         (unsigned long long)o.n, (unsigned long long)atomic_load(&sh.written),
         (unsigned long long)atomic_load(&sh.aged), (unsigned long long)atomic_load(&sh.bytes),
         (unsigned long long)files, refs, now_s() - t0);
  return 0;
}
