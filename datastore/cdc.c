/*
 * datastore/cdc.c - FastCDC content-defined chunking (see chunklock/cdc.h
 * for the algorithm and the references).
 *
 * Why these choices:
 *   - Normalization level 2 (mask_s = log2(avg) + 2 bits, mask_l =
 *     log2(avg) - 2 bits), as the paper recommends: most chunks end
 *     within a factor of two of the average, which keeps the index small
 *     without giving up the shift resistance of content boundaries.
 *   - The hash restarts at zero at min_size of every chunk (cut-point
 *     skipping): boundaries then depend on the chunk start for the first
 *     64 bytes after min_size, and on content alone after that. Every
 *     chunk boundary that two inputs share re-synchronises them, which is
 *     what limits an edit's damage to the chunks around it.
 *   - The table is a constant (SplitMix64 of the seed "ckl-gear",
 *     0x636b6c2d67656172, 256 draws), never computed at run time, so the
 *     chunking is part of the format and cannot drift.
 */
#include <errno.h>
#include <limits.h>

#include "chunklock/cdc.h"

static const uint64_t gear[256] = {
    0xb84461b9d3cd1875ull, 0x8b6664aed5de5145ull, 0x880f886f82e0c49cull,
    0x52d4bc56f70ef5e4ull, 0x7d9ebe0c50cd140eull, 0x43e350d899d68e7bull,
    0x228178885f0460d7ull, 0x49ff963cdd74e787ull, 0x006533746914c68cull,
    0x2ef97e9d4651a9d3ull, 0x8af7bc0659d797f2ull, 0x453d6e5cd9bf2d19ull,
    0x2ef0a64ae8bc60b9ull, 0x689c10ad2e918ad4ull, 0xb9ca59d89c125ed6ull,
    0x368435edb4b3947aull, 0x7359eabef3aba99cull, 0x4f68d27ecc3a9448ull,
    0xdc3fe4accf4aa56bull, 0xa53d12bfcd9c7baeull, 0xeb806502c93bc33eull,
    0xaab9750b53ef60c1ull, 0xeb3dd99284a61ba5ull, 0xa367abb9a12ff43aull,
    0xce13f2c8cf300ce6ull, 0x423a44eec099784aull, 0x346259111db9dd3aull,
    0x5f17255d47dd56f5ull, 0x094dbb7098e3c08bull, 0x5311c93e73cfe356ull,
    0xb6f698a044fdbfe7ull, 0x1338248a0a17010aull, 0x46e41dc8bb2a69edull,
    0xb544eb61082de5cbull, 0x0c2d5b321b1e6720ull, 0x7e9797e7bbb6930eull,
    0xaa05631c4367277dull, 0xb9141a44e92ed423ull, 0xb328d7d939a55ab1ull,
    0x0e91b1f912c9972dull, 0xefda403d64dd7e33ull, 0xff65d2b56882398dull,
    0x895abf4771d92447ull, 0x84ccbe3908cbaf42ull, 0x2f5ee12a2edf6c60ull,
    0x2a7b5370beaa9d1bull, 0xc39b6de8d94210e0ull, 0x082ba93c114e6cb2ull,
    0xa747a8823687afa0ull, 0xcb951268121458c8ull, 0xc77df426b4f77707ull,
    0xa17f91c1f45154cbull, 0x4abf5d4814197792ull, 0x54532a67a9c54ab5ull,
    0xfc44f3f6599035aeull, 0x6c6f5e4d0a55b2baull, 0xc85f5fdaa9054fc8ull,
    0x3cd07f2bea89a7f3ull, 0x543ec44abb10fa9cull, 0x1f59217ed01da606ull,
    0xb38f9c4c4c322b52ull, 0x9568834ee8e4d220ull, 0x20f4e529ca46d2f8ull,
    0x45e5836a7d457af8ull, 0x5328aa61c8dd7a18ull, 0x113756e866b3fe38ull,
    0xdc61e312b4e348b5ull, 0x96e53468bc9732d8ull, 0xcb7cd36cf16fd66cull,
    0x9913e3ebfdfda54full, 0x28fcaa5ea760ba0aull, 0x6c07b9510a11065cull,
    0xf5ad5e3fbbb3815full, 0xe6f8d668ef56bb9bull, 0x7eb8d51fc11165e1ull,
    0x38d6c99a7fe51c1dull, 0x77cd37102f02caeeull, 0xad32003d9b287c1dull,
    0x7967b5fd317ee5b6ull, 0x2fddf435f37d85f9ull, 0xd5dd482537b00597ull,
    0x8ee73ae8ff682a2bull, 0x8bb2e7408120d3bbull, 0x37beb675f9c6cdf4ull,
    0xd13cd989f81920abull, 0xd7a860d9099ea9bcull, 0x967b8f7f40b04ad5ull,
    0x42383b1f516d58f7ull, 0x4e197eb051be6c8bull, 0x347aa26d2c6f41feull,
    0x0d4ce6954244059aull, 0xa4be6e20684f072full, 0x8691df2b9ee4c3a5ull,
    0x1a1584b214767850ull, 0xc7efa92666ef87feull, 0x05d6b89cfb2354edull,
    0x8383d7462fbbd365ull, 0x52e59047c1cd7f7full, 0x9e6fffdb0e3e2e6cull,
    0xce05d2f56035ddd2ull, 0x6819336db2c2cf61ull, 0xa5e005a99e264d1bull,
    0x24910571dc0f8b98ull, 0xb897b9a7b3a165f5ull, 0x506253dbed9ad0bbull,
    0x634f59e6a5e4c817ull, 0x40094d20a9cdfe2bull, 0x80cd6e566c998f0full,
    0xb909ff8d034c0ed8ull, 0xb22ed261687df2e0ull, 0x132b4e755d82f3adull,
    0x1861d35861b72adcull, 0x7955a6bd5f22aa07ull, 0xbe908d2b73fd3f45ull,
    0x1065d302132b5978ull, 0x669d2ee9093d8d26ull, 0x9132e397a3ecadbcull,
    0x97f9f2c35a94bd31ull, 0x2fc5c9b78a22a7d6ull, 0x43597061229e8253ull,
    0x09bfec1281b93c75ull, 0x9bfb6570d174a2c5ull, 0x60d62059c9c6a28cull,
    0x05c6c820a10c3b23ull, 0x73d67748085a3752ull, 0x30f67a9eacaf4484ull,
    0xf2f6e4fe3ba907b6ull, 0x70d07e10b4811142ull, 0x8275d28a873dbb9dull,
    0x681346b525a4b874ull, 0x6d4170218433491full, 0x578961c760bfa9ecull,
    0x888cba0cfe0ff51eull, 0xb64d3faba87bd169ull, 0xbf53f26947bc4d77ull,
    0x5b8975ae6009a534ull, 0xb33bf72ea9316e59ull, 0xc6b8392cd094c7caull,
    0x3ed7dd1d2b883b42ull, 0x1f0e555bb7e073c8ull, 0x22d2dff92eadfd11ull,
    0xd6be6e73538f2be6ull, 0x78212b15e19e389cull, 0xdab6be4d8e2712bfull,
    0x2666ba03dc560a1bull, 0xd072c928488288efull, 0x330d7e416dbcc4a4ull,
    0x619264955d795d0aull, 0x5ff44f2317a46118ull, 0x04cefc7cdc479b60ull,
    0xbe23e9072ec467f2ull, 0x6a0700c49dc5414dull, 0x9c5f7b500bf8604dull,
    0xaa1aff375a655182ull, 0x2d6ef354b211eda3ull, 0x259a8faf9726a361ull,
    0xc344a44059e3f8a1ull, 0xdd742e866434af27ull, 0x7ab22f3e18229726ull,
    0x0f2a3a31503c24e3ull, 0xee6dd66cdc2f277cull, 0x80a419898995c98cull,
    0xd92e122600fb901full, 0xa1adcef37418d8acull, 0xb64a1744d555d28bull,
    0x884be0a4902522c9ull, 0x1b6d7de1d98f8147ull, 0xdec25236cd8d9180ull,
    0xe53ed2ca405eeb45ull, 0x884a6c271a862aeeull, 0x7182f583c90eba3dull,
    0x918928c43a8c5c9cull, 0x9d11632da2566a91ull, 0xc4294f7e3a2213c9ull,
    0xbebf07cf420729ceull, 0x981e923d62b09f6aull, 0x9491795af0e91b73ull,
    0x2a3397dbc5494a75ull, 0xab2cb5d6c341ff65ull, 0x5f76b62c85d9bd06ull,
    0x533e783938d131e0ull, 0xc5de775245e2fc4cull, 0xea9dba7ce52c5bf2ull,
    0xe0308696917b24d5ull, 0x62240d71a840ded7ull, 0x5b103c24f7543335ull,
    0xc376b29daf85aab6ull, 0xf0cd087b32548f79ull, 0xab35eda45c83708cull,
    0x079a1dbe839d6148ull, 0x2c9e0cea8ea6b0b9ull, 0x60b734994fb04a56ull,
    0x062ad3ed1f8afd79ull, 0xa1a3ae581fd658e2ull, 0xe1e9858b2133ca72ull,
    0x7889dfdd6f844d8bull, 0x049d9375c80f2e70ull, 0xeb1ae9140adbef36ull,
    0x2d0b8875ab661e58ull, 0xfcffa5d1e851cae7ull, 0x41aadd386e601aaeull,
    0x647f0de544dfae0cull, 0xba8ea139344b744bull, 0x36d0059ed5697019ull,
    0xd01535b0904f19d3ull, 0x909f986d3356fe1cull, 0x35e3b002d923dc2cull,
    0xddb2cccf0f53df99ull, 0x53f01c7c2e7ed198ull, 0x7be859839ed4dcbbull,
    0xd3a0a21d279e94baull, 0x5a5c9fedf8615445ull, 0x23543897d1ddba98ull,
    0xb68b99c78e01b97full, 0xc2560a8d814b1987ull, 0x1678aad333a54137ull,
    0xb632475493989828ull, 0x59a862b35d999ee2ull, 0x0e0fe228acff1ad8ull,
    0x4f99c1f52cce21caull, 0x75ae35eaab12ae1eull, 0x5bbf9308dff0c04cull,
    0x5a9314e4681b01cdull, 0x1b59720f4c9f45a5ull, 0x1e106b27f2ef75b1ull,
    0x3f78b8a7f381ca22ull, 0xa4e4301cabc15894ull, 0x72be4c3359e13ba0ull,
    0x194828bc0ee34620ull, 0x449b7df46b45cb33ull, 0x1f944ee949433fffull,
    0x3969b6dcb57cf3dbull, 0x4c8ae812440cc184ull, 0x03e9ee299074c094ull,
    0x40328214abf9bf80ull, 0xd4223f8834ecb252ull, 0x194c58a17947c7ffull,
    0xab33aff2223e9cb8ull, 0x684be7e5bde42166ull, 0x2b19c3a0e94b4ae3ull,
    0x12f7deae4cbedfdbull, 0x5d79186fca810a8dull, 0x6935270544442529ull,
    0xa71759c7baddac83ull, 0x9bcdbd7729b70c92ull, 0x392789bfba0c824full,
    0xf5458e2b6240b485ull, 0x71a42968612128b0ull, 0x7f0e1cfef98ccdc2ull,
    0xa9ce6a854c570309ull, 0xd6394f9eb1194a2full, 0x9cc9d84d649722b4ull,
    0x2104bf191695d7f8ull, 0x3b35c0db5d908d68ull, 0x0c8e5d62487c54f5ull,
    0x07ccbcc37386d983ull,
};

static int log2_exact(uint32_t v) {
  if (v == 0 || (v & (v - 1)) != 0) return -1;
  return __builtin_ctz(v);
}

/* The `bits` highest bits of a 64-bit word. */
static uint64_t high_mask(int bits) { return ~(uint64_t)0 << (64 - bits); }

int ckl_cdc_init(ckl_cdc *c, uint32_t avg_size) {
  if (!c) return -EINVAL;
  if (avg_size == 0) avg_size = CKL_CDC_DEFAULT_AVG;
  int k = log2_exact(avg_size);
  if (k < 0 || avg_size < CKL_CDC_MIN_AVG || avg_size > CKL_CDC_MAX_AVG) return -EINVAL;
  c->avg_size = avg_size;
  c->min_size = avg_size / 4;
  c->max_size = avg_size * 4;
  c->mask_s = high_mask(k + 2);
  c->mask_l = high_mask(k - 2);
  return 0;
}

size_t ckl_cdc_next(const ckl_cdc *c, const void *data, size_t len) {
  if (!c || !data || len == 0) return 0;
  if (len <= c->min_size) return len;
  const uint8_t *p = data;
  size_t end = len < c->max_size ? len : c->max_size;
  size_t normal = end < c->avg_size ? end : c->avg_size;
  uint64_t fp = 0;
  size_t i = c->min_size;
  for (; i < normal; i++) {
    fp = (fp << 1) + gear[p[i]];
    if (!(fp & c->mask_s)) return i + 1;
  }
  for (; i < end; i++) {
    fp = (fp << 1) + gear[p[i]];
    if (!(fp & c->mask_l)) return i + 1;
  }
  return end;
}

int ckl_cdc_split(const ckl_cdc *c, const void *data, size_t len, ckl_cdc_cb cb, void *arg) {
  if (!c || !cb || (!data && len > 0)) return -EINVAL;
  const uint8_t *p = data;
  size_t off = 0;
  int n = 0;
  while (off < len) {
    size_t cut = ckl_cdc_next(c, p + off, len - off);
    int rc = cb(p + off, cut, arg);
    if (rc < 0) return rc;
    off += cut;
    if (n < INT_MAX) n++;
  }
  return n;
}
