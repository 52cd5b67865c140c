/*
 * tests/fuzz/fuzz_snapshot_name.c - the name parsers: snapshot names
 * ("type/id/time"), group names ("type/id"), snapshot times, archive
 * names and chunk file names, all on the same input. Names come from
 * clients and directory listings and become path components.
 *
 * What an accepted name must satisfy: it is the one spelling of what was
 * parsed (formatting the result gives back the input byte for byte), the
 * parts pass the validity checks the lock and path code uses, and
 * ckl_snapshot_name_make rebuilds the same name from its parts. A rejected
 * name is -EINVAL with the output zeroed.
 */
#include <string.h>

#include "chunklock/error.h"
#include "chunklock/index.h"
#include "chunklock/snapshot.h"
#include "datastore/chunk_internal.h"
#include "datastore/digest.h"
#include "datastore/store_internal.h"
#include "fuzz.h"

static bool all_zero(const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

static bool snapshot_name(const char *s, size_t len) {
  ckl_snapshot_name n;
  memset(&n, 0xa5, sizeof n);
  int rc = ckl_snapshot_name_parsen(s, len, &n);
  if (rc < 0) {
    FUZZ_CHECK(rc == -EINVAL && all_zero(&n, sizeof n));
    return false;
  }
  FUZZ_CHECK(ckl__snapshot_name_ok(&n));
  char buf[CKL_SNAP_NAME_MAX + 1];
  FUZZ_CHECK(ckl_snapshot_name_format(&n, buf, sizeof buf) == (int)len);
  FUZZ_CHECK(memcmp(buf, s, len) == 0);
  ckl_snapshot_name m;
  FUZZ_CHECK(ckl_snapshot_name_make(n.type, n.id, n.time_s, &m) == 0);
  FUZZ_CHECK(strcmp(m.type, n.type) == 0 && strcmp(m.id, n.id) == 0 &&
             strcmp(m.time, n.time) == 0 && m.time_s == n.time_s);
  ckl_group_name g;
  ckl_snapshot_group(&n, &g);
  FUZZ_CHECK(ckl__group_name_ok(&g));
  return true;
}

static bool group_name(const char *s, size_t len) {
  ckl_group_name g;
  memset(&g, 0xa5, sizeof g);
  int rc = ckl_group_name_parsen(s, len, &g);
  if (rc < 0) {
    FUZZ_CHECK(rc == -EINVAL && all_zero(&g, sizeof g));
    return false;
  }
  FUZZ_CHECK(ckl__group_name_ok(&g));
  size_t tl = strlen(g.type), il = strlen(g.id);
  FUZZ_CHECK(tl + 1 + il == len && memcmp(s, g.type, tl) == 0 && s[tl] == '/' &&
             memcmp(s + tl + 1, g.id, il) == 0);
  return true;
}

static bool snapshot_time(const char *s, size_t len) {
  int64_t t;
  if (ckl_snapshot_time_parse(s, len, &t) < 0) return false;
  char out[CKL_SNAP_TIME_LEN + 1];
  FUZZ_CHECK(ckl_snapshot_time_format(t, out) == 0);
  FUZZ_CHECK(len == CKL_SNAP_TIME_LEN && memcmp(out, s, len) == 0);
  return true;
}

static bool archive_name(const char *s, size_t len) {
  ckl_archive_kind k = ckl_archive_name_kind(s, len);
  if (k == CKL_ARCHIVE_NONE) return false;
  FUZZ_CHECK(len > 5 && len <= CKL_ARCHIVE_NAME_MAX && s[0] != '.');
  FUZZ_CHECK(memcmp(s + len - 5, k == CKL_ARCHIVE_DIDX ? ".didx" : ".fidx", 5) == 0);
  FUZZ_CHECK(memchr(s, '/', len) == NULL && memchr(s, '\0', len) == NULL);
  /* The name as a C string (how directory listings hand it over). */
  char *z = malloc(len + 1);
  FUZZ_CHECK(z != NULL);
  memcpy(z, s, len);
  z[len] = '\0';
  FUZZ_CHECK(ckl_index_kind_from_name(z) == (int)k);
  free(z);
  return true;
}

static bool chunk_name(const char *s, size_t len) {
  if (memchr(s, '\0', len)) return false; /* directory entries have no NUL */
  char *z = malloc(len + 1);
  FUZZ_CHECK(z != NULL);
  memcpy(z, s, len);
  z[len] = '\0';
  ckl_digest d;
  ckl__chunk_name k = ckl__chunk_name_kind(z, &d);
  if (k == CKL__CHUNK_NAME_CHUNK) {
    char hex[CKL_DIGEST_HEX_LEN + 1];
    ckl_digest_to_hex(&d, hex);
    FUZZ_CHECK(len == CKL_DIGEST_HEX_LEN && strcmp(hex, z) == 0);
  } else if (k == CKL__CHUNK_NAME_TMP || k == CKL__CHUNK_NAME_BAD) {
    char hex[CKL_DIGEST_HEX_LEN + 1];
    ckl_digest_to_hex(&d, hex);
    FUZZ_CHECK(strstr(z, hex) != NULL);
  }
  free(z);
  return k != CKL__CHUNK_NAME_OTHER;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  bool ok = snapshot_name(s, size);
  ok |= group_name(s, size);
  ok |= snapshot_time(s, size);
  ok |= archive_name(s, size);
  ok |= chunk_name(s, size);
  fuzz_accepted = ok;
  return 0;
}
