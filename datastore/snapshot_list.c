/*
 * datastore/snapshot_list.c - listing groups and snapshots.
 *
 * Listing runs without locks, concurrently with backups creating and
 * forgets removing snapshots. What it returns is therefore a view that may
 * be stale by the time the caller looks at it; each entry was a valid
 * snapshot directory at the moment it was read. An entry that disappears
 * between readdir and open (a forget moved it to the trash) is skipped,
 * not an error. Nothing here follows a symlink: every directory is opened
 * with O_NOFOLLOW relative to its parent, every other entry is classified
 * with fstatat(AT_SYMLINK_NOFOLLOW) when readdir does not say its type.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/store_internal.h"

/* The type of dirfd/e without following a symlink: DT_DIR, DT_REG, ... or
 * DT_UNKNOWN when the entry is gone. */
static unsigned char entry_type(int dirfd, const struct dirent *e) {
  if (e->d_type != DT_UNKNOWN) return e->d_type;
  struct stat st;
  if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return DT_UNKNOWN;
  if (S_ISDIR(st.st_mode)) return DT_DIR;
  if (S_ISREG(st.st_mode)) return DT_REG;
  if (S_ISLNK(st.st_mode)) return DT_LNK;
  return DT_UNKNOWN;
}

/* readdir over a dup of dirfd (the caller keeps its fd). */
static DIR *open_dir(int dirfd) {
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return NULL;
  DIR *d = fdopendir(fd);
  if (!d) ckl__close(fd);
  return d;
}

static bool dot_entry(const char *n) { return !strcmp(n, ".") || !strcmp(n, ".."); }

/* Growable array of fixed-size elements. */
typedef struct vec {
  void *data;
  size_t n, cap, elem;
} vec;

static void *vec_push(vec *v) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    void *nd = realloc(v->data, cap * v->elem);
    if (!nd) return NULL;
    v->data = nd;
    v->cap = cap;
  }
  void *slot = (char *)v->data + v->n * v->elem;
  memset(slot, 0, v->elem);
  v->n++;
  return slot;
}

static int cmp_group(const void *a, const void *b) {
  const ckl_group_name *x = a, *y = b;
  int c = strcmp(x->type, y->type);
  return c ? c : strcmp(x->id, y->id);
}

/* Append the groups of one type directory. */
static int list_type(int typefd, const char *type, vec *out) {
  DIR *d = open_dir(typefd);
  if (!d) return -errno;
  int rc = 0;
  struct dirent *e;
  while ((errno = 0, e = readdir(d))) {
    if (dot_entry(e->d_name)) continue;
    size_t len = strlen(e->d_name);
    if (!ckl_snapshot_id_valid(e->d_name, len)) {
      ckl__log_debug("skipping %s/%s: not a valid backup id", type, e->d_name);
      continue;
    }
    if (entry_type(typefd, e) != DT_DIR) {
      ckl__log_debug("skipping %s/%s: not a directory", type, e->d_name);
      continue;
    }
    ckl_group_name *g = vec_push(out);
    if (!g) {
      rc = -ENOMEM;
      break;
    }
    memcpy(g->type, type, strlen(type));
    memcpy(g->id, e->d_name, len);
  }
  if (rc == 0 && errno != 0) rc = -errno;
  closedir(d);
  return rc;
}

int ckl_group_list(ckl_store *st, ckl_group_name **out, size_t *count) {
  if (!st || !out || !count) return -EINVAL;
  *out = NULL;
  *count = 0;
  DIR *d = open_dir(st->dirfd);
  if (!d) return -errno;
  vec v = {.elem = sizeof(ckl_group_name)};
  int rc = 0;
  struct dirent *e;
  while ((errno = 0, e = readdir(d))) {
    const char *name = e->d_name;
    /* The store's own entries all start with '.', or are the config. */
    if (name[0] == '.' || !strcmp(name, CKL_STORE_CONFIG_NAME)) continue;
    if (!ckl_snapshot_type_valid(name, strlen(name))) {
      ckl__log_debug("%s: skipping %s: not a valid backup type", st->path, name);
      continue;
    }
    int fd = openat(st->dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) continue; /* removed while we listed */
      ckl__log_debug("%s: skipping %s: %s", st->path, name, ckl_strerror(-errno));
      continue;
    }
    rc = list_type(fd, name, &v);
    ckl__close(fd);
    if (rc < 0) break;
  }
  if (rc == 0 && errno != 0) rc = -errno;
  closedir(d);
  if (rc < 0) {
    free(v.data);
    return rc;
  }
  if (v.n) qsort(v.data, v.n, v.elem, cmp_group);
  *out = v.data;
  *count = v.n;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fill state and files of one snapshot directory. */
static int read_snapshot(int snapfd, ckl_snapshot_info *si) {
  struct stat sb;
  si->state = CKL_SNAP_IN_PROGRESS;
  if (fstatat(snapfd, CKL_MANIFEST_NAME, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISREG(sb.st_mode)) si->state = CKL_SNAP_COMPLETE;
    else ckl__log_warn("%s/%s/%s/" CKL_MANIFEST_NAME ": not a regular file, ignored",
                       si->name.type, si->name.id, si->name.time);
  } else if (errno != ENOENT) {
    return -errno;
  }
  DIR *d = open_dir(snapfd);
  if (!d) return -errno;
  vec v = {.elem = sizeof(char *)};
  int rc = 0;
  struct dirent *e;
  while ((errno = 0, e = readdir(d))) {
    if (ckl_archive_name_kind(e->d_name, strlen(e->d_name)) == CKL_ARCHIVE_NONE) continue;
    if (entry_type(snapfd, e) != DT_REG) {
      ckl__log_debug("%s/%s/%s: skipping %s: not a regular file", si->name.type, si->name.id,
                     si->name.time, e->d_name);
      continue;
    }
    char **slot = vec_push(&v);
    if (!slot || !(*slot = strdup(e->d_name))) {
      if (slot) v.n--;
      rc = -ENOMEM;
      break;
    }
  }
  if (rc == 0 && errno != 0) rc = -errno;
  closedir(d);
  if (v.n) qsort(v.data, v.n, v.elem, cmp_str);
  si->files = v.data;
  si->nfiles = v.n;
  return rc;
}

static int cmp_newest_first(const void *a, const void *b) {
  const ckl_snapshot_info *x = a, *y = b;
  return x->name.time_s < y->name.time_s ? 1 : x->name.time_s > y->name.time_s ? -1 : 0;
}

void ckl_snapshot_list_free(ckl_snapshot_info *list, size_t count) {
  if (!list) return;
  for (size_t i = 0; i < count; i++) {
    for (size_t j = 0; j < list[i].nfiles; j++) free(list[i].files[j]);
    free(list[i].files);
  }
  free(list);
}

int ckl_snapshot_list(ckl_store *st, const ckl_group_name *g, ckl_snapshot_info **out,
                      size_t *count) {
  if (!st || !out || !count) return -EINVAL;
  *out = NULL;
  *count = 0;
  if (!ckl__group_name_ok(g)) return -EINVAL;
  int typefd = openat(st->dirfd, g->type, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (typefd < 0) return errno == ELOOP || errno == ENOTDIR ? -ENOENT : -errno;
  int idfd = openat(typefd, g->id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int err = errno;
  ckl__close(typefd);
  if (idfd < 0) return err == ELOOP || err == ENOTDIR ? -ENOENT : -err;
  DIR *d = open_dir(idfd);
  if (!d) {
    int rc = -errno;
    ckl__close(idfd);
    return rc;
  }
  vec v = {.elem = sizeof(ckl_snapshot_info)};
  int rc = 0;
  struct dirent *e;
  while ((errno = 0, e = readdir(d))) {
    if (dot_entry(e->d_name)) continue;
    int64_t t;
    size_t len = strlen(e->d_name);
    if (len != CKL_SNAP_TIME_LEN || ckl_snapshot_time_parse(e->d_name, len, &t) < 0) {
      ckl__log_debug("%s/%s: skipping %s: not a snapshot time", g->type, g->id, e->d_name);
      continue;
    }
    int sfd = openat(idfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sfd < 0) {
      if (errno != ENOENT) /* ENOENT: forgotten while we listed */
        ckl__log_debug("%s/%s: skipping %s: %s", g->type, g->id, e->d_name, ckl_strerror(-errno));
      continue;
    }
    ckl_snapshot_info *si = vec_push(&v);
    if (!si) {
      ckl__close(sfd);
      rc = -ENOMEM;
      break;
    }
    memcpy(si->name.type, g->type, sizeof g->type);
    memcpy(si->name.id, g->id, sizeof g->id);
    memcpy(si->name.time, e->d_name, CKL_SNAP_TIME_LEN);
    si->name.time_s = t;
    int r = read_snapshot(sfd, si);
    ckl__close(sfd);
    if (r == -ENOENT) { /* removed under us */
      for (size_t j = 0; j < si->nfiles; j++) free(si->files[j]);
      free(si->files);
      v.n--;
      continue;
    }
    if (r < 0) {
      rc = r;
      break;
    }
  }
  if (rc == 0 && errno != 0) rc = -errno;
  closedir(d);
  ckl__close(idfd);
  if (rc < 0) {
    ckl_snapshot_list_free(v.data, v.n);
    return rc;
  }
  if (v.n) qsort(v.data, v.n, v.elem, cmp_newest_first);
  *out = v.data;
  *count = v.n;
  return 0;
}
