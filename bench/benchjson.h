/*
 * bench/benchjson.h - what the figure programs of bench/ share: medians
 * over runs and the result records of the shared schema
 * (docs/benchmarks.md "Results file"). Header-only, static functions, so
 * each program stays one .c file.
 *
 *   {"figure", "name", "value", "unit", "floor", "ratio", "target",
 *    "target_cmp", "met", "min", "max", "runs", "peer", "note"?, "x"?,
 *    "series"?}
 *
 * ratio = value / floor (or chunklock / peer for peer records); the target
 * compares the ratio when there is a floor or a peer, else the value.
 */
#ifndef CKL_BENCH_BENCHJSON_H
#define CKL_BENCH_BENCHJSON_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_record.h"

typedef struct bj_stats {
  double median, min, max;
  int runs;
} bj_stats;

static inline int bj_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median (mean of the middle two for an even count), min and max of v[0..n). */
static inline bj_stats bj_stats_of(const double *v, int n) {
  bj_stats s = {0, 0, 0, n};
  if (n <= 0) return s;
  double *c = malloc(sizeof *c * (size_t)n);
  if (!c) abort();
  memcpy(c, v, sizeof *c * (size_t)n);
  qsort(c, (size_t)n, sizeof *c, bj_cmp_double);
  s.min = c[0];
  s.max = c[n - 1];
  s.median = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
  free(c);
  return s;
}

static inline double bj_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct bj_rec {
  int figure;
  const char *name;
  const char *unit;
  bj_stats s;        /* value = s.median */
  double floor;      /* NAN = none */
  double ratio;      /* NAN = none; computed from floor when NAN and floor set */
  double target;     /* NAN = none */
  const char *cmp;   /* ">=" or "<=" (with a target) */
  bool peer;
  const char *note;  /* NULL = none */
  double x;          /* NAN = none */
  const char *series; /* NULL = none */
} bj_rec;

/* A record with nothing optional set. */
static inline bj_rec bj_rec_init(int figure, const char *name, const char *unit, bj_stats s) {
  bj_rec r = {.figure = figure, .name = name, .unit = unit, .s = s, .floor = NAN,
              .ratio = NAN, .target = NAN, .cmp = NULL, .peer = false, .note = NULL,
              .x = NAN, .series = NULL};
  return r;
}

/* The JSON array writer: bj_open, bj_write per record, bj_close. One
 * writer for every figure program: this is bench_record.h's, fed from the
 * stats-carrying record above. */
typedef br_out bj_file;

static inline int bj_open(bj_file *j, const char *path) { return br_open(j, path) ? 0 : -1; }

static inline br_rec bj_to_br(const bj_rec *r) {
  br_rec b = BR_REC(r->figure, r->name, r->s.median, r->unit);
  b.floor = r->floor;
  b.ratio = r->ratio;
  b.target = r->target;
  b.cmp = r->cmp;
  b.min = r->s.min;
  b.max = r->s.max;
  b.runs = r->s.runs;
  b.peer = r->peer;
  b.note = r->note;
  b.x = r->x;
  b.series = r->series;
  return b;
}

/* Whether the record meets its target: -1 none, 0 no, 1 yes. */
static inline int bj_met(const bj_rec *r) {
  br_rec b = bj_to_br(r);
  return br_met(&b);
}

static inline void bj_write(bj_file *j, bj_rec r) {
  br_rec b = bj_to_br(&r);
  br_emit(j, &b);
}

static inline int bj_close(bj_file *j) { return br_close(j) == 0 ? 0 : -1; }

#endif
