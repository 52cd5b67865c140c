/* gc/digest_set.c - open-addressing set of SHA-256 digests (see header). */
#include "datastore/digest_set.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const ckl_digest zero_digest;

/* Digests are uniformly distributed already: the first 8 bytes are a hash. */
static size_t slot_of(const ckl_digest *d, size_t cap) {
  uint64_t h;
  memcpy(&h, d->b, sizeof h);
  return (size_t)h & (cap - 1);
}

static bool is_empty(const ckl_digest *slot) {
  return memcmp(slot, &zero_digest, sizeof *slot) == 0;
}

static void put(ckl_digest *slots, size_t cap, const ckl_digest *d) {
  size_t i = slot_of(d, cap);
  while (!is_empty(&slots[i])) i = (i + 1) & (cap - 1);
  slots[i] = *d;
}

static int grow(ckl__digest_set *s) {
  size_t ncap = s->cap ? s->cap * 2 : 1024;
  ckl_digest *n = calloc(ncap, sizeof *n);
  if (!n) return -ENOMEM;
  for (size_t i = 0; i < s->cap; i++)
    if (!is_empty(&s->slots[i])) put(n, ncap, &s->slots[i]);
  free(s->slots);
  s->slots = n;
  s->cap = ncap;
  return 0;
}

int ckl__digest_set_insert(ckl__digest_set *s, const ckl_digest *d) {
  if (is_empty(d)) {
    if (s->has_zero) return 0;
    s->has_zero = true;
    return 1;
  }
  if ((s->count + 1) * 4 > s->cap * 3) {
    int rc = grow(s);
    if (rc < 0) return rc;
  }
  size_t i = slot_of(d, s->cap);
  for (;;) {
    if (is_empty(&s->slots[i])) {
      s->slots[i] = *d;
      s->count++;
      return 1;
    }
    if (memcmp(&s->slots[i], d, sizeof *d) == 0) return 0;
    i = (i + 1) & (s->cap - 1);
  }
}

bool ckl__digest_set_contains(const ckl__digest_set *s, const ckl_digest *d) {
  if (is_empty(d)) return s->has_zero;
  if (s->cap == 0) return false;
  size_t i = slot_of(d, s->cap);
  while (!is_empty(&s->slots[i])) {
    if (memcmp(&s->slots[i], d, sizeof *d) == 0) return true;
    i = (i + 1) & (s->cap - 1);
  }
  return false;
}

size_t ckl__digest_set_count(const ckl__digest_set *s) { return s->count + (s->has_zero ? 1 : 0); }

size_t ckl__digest_set_bytes(const ckl__digest_set *s) { return s->cap * sizeof(ckl_digest); }

void ckl__digest_set_free(ckl__digest_set *s) {
  free(s->slots);
  memset(s, 0, sizeof *s);
}
