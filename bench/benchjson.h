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

static inline void bj_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static inline void bj_num(FILE *f, double v) {
  if (isnan(v) || isinf(v)) fputs("null", f);
  else fprintf(f, "%.6g", v);
}

/* The JSON array writer: bj_open, bj_write per record, bj_close. */
typedef struct bj_file {
  FILE *f;
  int n;
} bj_file;

static inline int bj_open(bj_file *j, const char *path) {
  j->n = 0;
  j->f = NULL;
  if (!path) return 0;
  j->f = fopen(path, "we");
  if (!j->f) return -1;
  fputs("[", j->f);
  return 0;
}

/* Whether the record meets its target: -1 none, 0 no, 1 yes. */
static inline int bj_met(const bj_rec *r) {
  if (isnan(r->target) || !r->cmp) return -1;
  double v = !isnan(r->ratio) ? r->ratio : r->s.median;
  if (isnan(v)) return 0;
  return strcmp(r->cmp, "<=") == 0 ? v <= r->target : v >= r->target;
}

static inline void bj_write(bj_file *j, bj_rec r) {
  if (isnan(r.ratio) && !isnan(r.floor) && r.floor != 0) r.ratio = r.s.median / r.floor;
  int met = bj_met(&r);
  /* Also on stdout, so a run shows its numbers as it goes. */
  printf("fig%d  %-58s %12.5g %-8s", r.figure, r.name, r.s.median, r.unit);
  if (!isnan(r.ratio)) printf(" ratio %.3f", r.ratio);
  if (met >= 0) printf(" target %s %g: %s", r.cmp, r.target, met ? "met" : "MISSED");
  printf("\n");
  fflush(stdout);
  if (!j->f) return;
  FILE *f = j->f;
  fprintf(f, "%s\n  {\"figure\": %d, \"name\": ", j->n++ ? "," : "", r.figure);
  bj_str(f, r.name);
  fputs(", \"value\": ", f);
  bj_num(f, r.s.median);
  fputs(", \"unit\": ", f);
  bj_str(f, r.unit);
  fputs(", \"floor\": ", f);
  bj_num(f, r.floor);
  fputs(", \"ratio\": ", f);
  bj_num(f, r.ratio);
  fputs(", \"target\": ", f);
  bj_num(f, r.target);
  fputs(", \"target_cmp\": ", f);
  if (met >= 0) bj_str(f, r.cmp);
  else fputs("null", f);
  fprintf(f, ", \"met\": %s", met < 0 ? "null" : met ? "true" : "false");
  fputs(", \"min\": ", f);
  bj_num(f, r.s.min);
  fputs(", \"max\": ", f);
  bj_num(f, r.s.max);
  fprintf(f, ", \"runs\": %d, \"peer\": %s", r.s.runs, r.peer ? "true" : "false");
  if (r.note) {
    fputs(", \"note\": ", f);
    bj_str(f, r.note);
  }
  if (!isnan(r.x)) {
    fputs(", \"x\": ", f);
    bj_num(f, r.x);
  }
  if (r.series) {
    fputs(", \"series\": ", f);
    bj_str(f, r.series);
  }
  fputs("}", f);
}

static inline int bj_close(bj_file *j) {
  if (!j->f) return 0;
  fputs("\n]\n", j->f);
  int rc = fclose(j->f);
  j->f = NULL;
  return rc == 0 ? 0 : -1;
}

#endif
