/*
 * datastore/digest.c - SHA-256 (chunk names, index checksums) and hex.
 *
 * OpenSSL 3 makes EVP_get_digestbyname()/EVP_sha256() do a provider lookup
 * (locks, string compares) on every EVP_DigestInit; fetching the EVP_MD
 * once per process and reusing it avoids that. The EVP_MD_CTX is kept per
 * thread so a digest costs no allocation; a pthread key frees it when the
 * thread exits.
 *
 * ckl_digest_compute() returns void: with the algorithm fetched and the
 * context allocated, SHA-256 cannot fail. If OpenSSL cannot provide
 * SHA-256 at all (broken installation) or the first per-thread allocation
 * fails, nothing in a content-addressed store can work, and a wrong name
 * would be worse than no name: the process aborts after logging.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>

#include "chunklock/chunk.h"
#include "common/internal.h"
#include "digest.h"

static EVP_MD *sha256_md;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key;
static __thread EVP_MD_CTX *tl_ctx;

static void ctx_destroy(void *p) {
  tl_ctx = NULL;
  EVP_MD_CTX_free(p);
}

static void md_init(void) {
  sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (pthread_key_create(&ctx_key, ctx_destroy) != 0) {
    ckl__log_error("digest: pthread_key_create failed");
    abort();
  }
}

static void fatal(const char *what) {
  ckl__log_error("digest: OpenSSL SHA-256 unavailable (%s); cannot name chunks", what);
  abort();
}

void ckl_digest_compute(const void *data, size_t len, ckl_digest *out) {
  pthread_once(&md_once, md_init);
  if (CKL__UNLIKELY(!sha256_md)) fatal("EVP_MD_fetch");
  EVP_MD_CTX *ctx = tl_ctx;
  if (CKL__UNLIKELY(!ctx)) {
    ctx = EVP_MD_CTX_new();
    if (!ctx) fatal("EVP_MD_CTX_new");
    tl_ctx = ctx;
    pthread_setspecific(ctx_key, ctx);
  }
  if (EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
      EVP_DigestFinal_ex(ctx, out->b, NULL) != 1)
    fatal("EVP_Digest");
}

static const char hexdig[] = "0123456789abcdef";

void ckl__hex_encode(const void *buf, size_t len, char *out) {
  const uint8_t *p = buf;
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = hexdig[p[i] >> 4];
    out[2 * i + 1] = hexdig[p[i] & 15];
  }
}

void ckl_digest_to_hex(const ckl_digest *d, char out[CKL_DIGEST_HEX_LEN + 1]) {
  ckl__hex_encode(d->b, CKL_DIGEST_LEN, out);
  out[CKL_DIGEST_HEX_LEN] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Reads at most 65 bytes of hex: stops at the first non-hex byte, so a
 * short string never reads past its NUL. */
int ckl_digest_from_hex(const char *hex, ckl_digest *out) {
  if (!hex || !out) return -EINVAL;
  ckl_digest d;
  for (size_t i = 0; i < CKL_DIGEST_LEN; i++) {
    int hi = hexval(hex[2 * i]);
    if (hi < 0) return -EINVAL;
    int lo = hexval(hex[2 * i + 1]);
    if (lo < 0) return -EINVAL;
    d.b[i] = (uint8_t)(hi << 4 | lo);
  }
  if (hex[CKL_DIGEST_HEX_LEN] != '\0') return -EINVAL;
  *out = d;
  return 0;
}
