/*
 * examples/embed.c - chunklock embedded in a program: create (or open) a
 * store, back up an in-memory buffer as one archive of a new snapshot,
 * read it back, and run a garbage collection. Public API only.
 *
 *     cc embed.c $(pkg-config --cflags --libs chunklock) -o embed
 *     ./embed /tmp/mystore
 */
#include <chunklock/chunklock.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what, int rc) {
  fprintf(stderr, "%s: %s (%s)\n", what, ckl_strerror(rc), ckl_err_name(rc));
  return 1;
}

/* ckl_cdc_split hands us each content-defined chunk: store it. */
static int put_chunk(const void *chunk, size_t len, void *archive) {
  int rc = ckl_backup_archive_write_chunk(archive, chunk, len, NULL);
  return rc < 0 ? rc : 0; /* CKL_INSERT_NEW or CKL_INSERT_DEDUP */
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "embed-store";
  int rc = ckl_store_create(path, NULL); /* defaults: 1 MiB chunks, zstd */
  if (rc < 0 && rc != -EEXIST) return die("create", rc);
  ckl_store *st;
  if ((rc = ckl_store_open(path, NULL, &st)) < 0) return die("open", rc);

  /* 8 MiB: 2 MiB of noise written four times, so most chunks repeat. */
  size_t len = 8u << 20, period = 2u << 20;
  unsigned char *data = malloc(len);
  if (!data) return die("malloc", -ENOMEM);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < len; i++) {
    if (i < period) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
      data[i] = (unsigned char)x;
    } else {
      data[i] = data[i - period];
    }
  }

  /* Back it up: one snapshot "app/demo/<now>", one archive "data.didx". */
  ckl_group_name group;
  ckl_group_name_parse("app/demo", &group);
  ckl_holder who = {0};
  ckl_backup_opts bo = {.busy_holder = &who};
  ckl_backup *b;
  if ((rc = ckl_backup_begin(st, &group, &bo, &b)) < 0) return die("backup", rc);
  ckl_backup_archive *a;
  ckl_cdc cdc;
  ckl_cdc_init(&cdc, ckl_store_get_config(st)->chunk_average_size);
  rc = ckl_backup_archive_open(b, "data.didx", 0, &a);
  if (rc == 0) {
    rc = ckl_cdc_split(&cdc, data, len, put_chunk, a);
    if (rc >= 0) rc = ckl_backup_archive_close(a);
    else ckl_backup_archive_abort(a);
  }
  ckl_snapshot_name snap = *ckl_backup_snapshot(b);
  if (rc < 0) {
    ckl_backup_abort(b);
    return die("write", rc);
  }
  if ((rc = ckl_backup_finish(b)) < 0) return die("finish", rc);

  /* Read it back and compare. */
  ckl_reader *r;
  ckl_reader_archive *ra;
  unsigned char *back = malloc(len);
  if (!back || (rc = ckl_reader_open(st, &snap, NULL, &r)) < 0) return die("read", rc);
  if ((rc = ckl_reader_archive_open(r, "data.didx", &ra)) < 0) return die("archive", rc);
  ssize_t n = ckl_reader_archive_read(ra, 0, back, len);
  ckl_reader_archive_close(ra);
  ckl_reader_close(r);
  if (n != (ssize_t)len || memcmp(back, data, len) != 0) return die("compare", CKL_ECORRUPT);

  /* Collect garbage: runs beside backups in any process; busy = another GC. */
  ckl_gc_opts go = {.busy_holder = &who};
  ckl_gc_result res;
  if ((rc = ckl_gc_run(st, &go, &res)) < 0) return die("gc", rc);
  char name[CKL_SNAP_NAME_MAX + 1];
  ckl_snapshot_name_format(&snap, name, sizeof name);
  printf("%s: %zu bytes in, %llu chunks on disk, gc removed %llu\n", name, len,
         (unsigned long long)res.disk_chunks, (unsigned long long)res.removed_chunks);
  free(back);
  free(data);
  ckl_store_close(st);
  return 0;
}
