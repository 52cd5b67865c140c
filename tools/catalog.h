/*
 * tools/catalog.h - the file catalog of a snapshot made by `chunklock
 * backup`: what was backed up (directories, regular files, symlinks, with
 * modes and mtimes) and which archive holds each file's bytes.
 *
 * On disk the catalog is the archive "catalog.didx" of the snapshot: a
 * dynamic index, like every file's, over the bytes of one JSON document
 * (compact, keys sorted), chunked and deduplicated like file data, so GC,
 * verify and fsck need to know nothing about it. docs/design.md
 * ("The file catalog") describes the document:
 *
 *   {"format": 1, "kind": "chunklock-catalog",
 *    "chunker": {"algorithm": "fastcdc", "avg": N, "min": N, "max": N},
 *    "created_ns": N, "roots": [{"name": "etc"}, ...],
 *    "entries": [{"path": "etc", "type": "dir", "mode": 493,
 *                 "mtime_ns": N}, ...]}
 *
 * Entries are in pre-order (a directory before its contents). Files:
 * "size", "archive" ("f00000001.didx"; absent for an empty file), and the
 * "ino" and "ctime_ns" the next backup compares to reuse chunks of an
 * unchanged file without reading it. Symlinks: "target". A path or target
 * that is not valid UTF-8 is stored as "path_hex" / "target_hex" instead
 * (file names are bytes; JSON strings are UTF-8).
 */
#ifndef CKL_TOOLS_CATALOG_H
#define CKL_TOOLS_CATALOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CAT_ARCHIVE "catalog.didx"
#define CAT_FORMAT 1

typedef enum cat_type { CAT_DIR = 1, CAT_FILE = 2, CAT_SYMLINK = 3 } cat_type;

typedef struct cat_entry {
  char *path;       /* relative, '/'-separated; validated by cat_path_ok */
  cat_type type;
  uint32_t mode;    /* permission bits (07777) */
  int64_t mtime_ns;
  uint64_t size;    /* files */
  char *archive;    /* files with data, else NULL */
  char *target;     /* symlinks */
  uint64_t ino;     /* change detection only */
  int64_t ctime_ns;
} cat_entry;

typedef struct catalog {
  cat_entry *v;
  size_t n, cap;
  uint32_t avg, min, max; /* the chunker's parameters */
  int64_t created_ns;
  char **roots;
  size_t nroots;
  cat_entry **sorted; /* by path, for cat_find; built on demand */
} catalog;

/* Append a copy of e (strings duplicated). 0 or -ENOMEM. */
int cat_add(catalog *c, const cat_entry *e);
int cat_add_root(catalog *c, const char *name);
void cat_free(catalog *c);

/* Is p a safe relative path: non-empty components, none "." or "..", no
 * leading or trailing '/', no "//"? */
int cat_path_ok(const char *p);

json_t *cat_to_json(const catalog *c);
/* Parse and validate (paths safe, each entry's parent listed before it as
 * a directory, archive names valid, types known). 0, or CKL_ECORRUPT with
 * *why set (static or in buf), CKL_EVERSION, -ENOMEM. */
int cat_from_json(const json_t *j, catalog *c, char *why, size_t whylen);

/* The entry for path, or NULL. */
const cat_entry *cat_find(catalog *c, const char *path);

#endif
