/*
 * datastore/crc32c.h - CRC-32C (Castagnoli), the checksum of chunk headers,
 * chunk payloads and index headers. Not installed.
 *
 * Standard parameters (reflected polynomial 0x82F63B78, init and final
 * xor 0xFFFFFFFF): ckl__crc32c(0, "123456789", 9) == 0xE3069283.
 * Chain calls by passing the previous result as `crc`.
 */
#ifndef CKL_DATASTORE_CRC32C_H
#define CKL_DATASTORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Fastest available implementation (SSE4.2 crc32 instruction when the CPU
 * has it, chosen once per process; slicing-by-8 tables otherwise). */
uint32_t ckl__crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable slicing-by-8 implementation, always; tests compare it with
 * the hardware one. */
uint32_t ckl__crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* 1 if ckl__crc32c uses the CPU instruction. */
int ckl__crc32c_hw(void);

#endif
