/*
 * bench/bench_record.h - the shared result schema of issue 8 for the
 * figure 3-5 programs (insert_bench, gc_bench, writers_gc_bench): a JSON
 * array of records
 *   {"figure", "name", "value", "unit", "floor", "ratio", "target",
 *    "target_cmp", "met", "min", "max", "runs", "peer", "note"?,
 *    "x"?, "series"?}
 * plus the small statistics every program needs (median, min, max over
 * runs) and a monotonic clock. Header-only (static functions) so that
 * each bench program stays one translation unit.
 *
 * ratio = value / floor (null without a floor); the target compares the
 * ratio when there is a floor, else the value, with target_cmp; met is
 * null when there is no target. Names and notes must not contain '"' or
 * '\\' (they are written verbatim; br_emit replaces them with '\'').
 */
#ifndef CKL_BENCH_RECORD_H
#define CKL_BENCH_RECORD_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BR_MAX_RUNS 64

static inline int64_t br_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct br_series {
  double v[BR_MAX_RUNS];
  int n;
} br_series;

static inline void br_add(br_series *s, double v) {
  if (s->n < BR_MAX_RUNS) s->v[s->n++] = v;
}

static inline int br_cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static inline double br_med(const br_series *s) {
  if (s->n == 0) return NAN;
  double t[BR_MAX_RUNS];
  memcpy(t, s->v, sizeof(double) * (size_t)s->n);
  qsort(t, (size_t)s->n, sizeof *t, br_cmp_d);
  return s->n % 2 ? t[s->n / 2] : (t[s->n / 2 - 1] + t[s->n / 2]) / 2;
}

static inline double br_min(const br_series *s) {
  double m = s->n ? s->v[0] : NAN;
  for (int i = 1; i < s->n; i++) m = s->v[i] < m ? s->v[i] : m;
  return m;
}

static inline double br_max(const br_series *s) {
  double m = s->n ? s->v[0] : NAN;
  for (int i = 1; i < s->n; i++) m = s->v[i] > m ? s->v[i] : m;
  return m;
}

/* One record. Unset doubles are NAN (written as null). */
typedef struct br_rec {
  int figure;
  const char *name, *unit, *note, *series;
  double value, floor, target, min, max, x;
  double ratio; /* NAN: value / floor when there is a floor (a peer record
                 * sets chunklock / peer here, with no floor) */
  const char *cmp; /* ">=" or "<=" (NULL when target is NAN) */
  int runs;
  bool peer;
} br_rec;

/* A record with every optional field unset. */
#define BR_REC(fig, nm, val, un)                                                           \
  ((br_rec){.figure = (fig), .name = (nm), .value = (val), .unit = (un), .floor = NAN,    \
            .target = NAN, .min = NAN, .max = NAN, .x = NAN, .ratio = NAN, .runs = 1})

typedef struct br_out {
  FILE *f;
  int count;
} br_out;

static inline bool br_open(br_out *o, const char *path) {
  o->count = 0;
  o->f = NULL;
  if (!path) return true;
  o->f = fopen(path, "we");
  if (!o->f) return false;
  fputs("[", o->f);
  return true;
}

static inline void br_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static inline void br_num(FILE *f, double v) {
  if (isnan(v) || isinf(v)) fputs("null", f);
  else fprintf(f, "%.6g", v);
}

/* Whether the record meets its target: 1, 0, or -1 (no target). */
static inline double br_ratio(const br_rec *r) {
  if (!isnan(r->ratio)) return r->ratio;
  return isnan(r->floor) || r->floor == 0 ? NAN : r->value / r->floor;
}

static inline int br_met(const br_rec *r) {
  if (isnan(r->target) || !r->cmp) return -1;
  double v = isnan(br_ratio(r)) ? r->value : br_ratio(r);
  if (isnan(v)) return 0;
  return strcmp(r->cmp, "<=") == 0 ? v <= r->target : v >= r->target;
}

/* Write r (and echo a one-line summary on stderr). */
static inline void br_emit(br_out *o, const br_rec *r) {
  double ratio = br_ratio(r);
  int met = br_met(r);
  fprintf(stderr, "  %-58s %12.4g %-8s", r->name, r->value, r->unit);
  if (!isnan(r->floor)) fprintf(stderr, " floor %.4g", r->floor);
  if (!isnan(ratio)) fprintf(stderr, " ratio %.3f", ratio);
  if (met >= 0) fprintf(stderr, " target %s%g %s", r->cmp, r->target, met ? "met" : "MISSED");
  fputc('\n', stderr);
  FILE *f = o->f;
  if (!f) return;
  fprintf(f, "%s\n  {\"figure\": %d, \"name\": ", o->count ? "," : "", r->figure);
  br_str(f, r->name);
  fputs(", \"value\": ", f);
  br_num(f, r->value);
  fputs(", \"unit\": ", f);
  br_str(f, r->unit);
  fputs(", \"floor\": ", f);
  br_num(f, r->floor);
  fputs(", \"ratio\": ", f);
  br_num(f, ratio);
  fputs(", \"target\": ", f);
  br_num(f, met >= 0 ? r->target : NAN);
  fputs(", \"target_cmp\": ", f);
  if (met >= 0) br_str(f, r->cmp);
  else fputs("null", f);
  /* a single measurement (no series) is its own min and max */
  fprintf(f, ", \"met\": %s, \"min\": ", met < 0 ? "null" : met ? "true" : "false");
  br_num(f, isnan(r->min) ? r->value : r->min);
  fputs(", \"max\": ", f);
  br_num(f, isnan(r->max) ? r->value : r->max);
  fprintf(f, ", \"runs\": %d, \"peer\": %s", r->runs, r->peer ? "true" : "false");
  if (r->note) {
    fputs(", \"note\": ", f);
    br_str(f, r->note);
  }
  if (!isnan(r->x)) {
    fputs(", \"x\": ", f);
    br_num(f, r->x);
    fputs(", \"series\": ", f);
    br_str(f, r->series ? r->series : "chunklock");
  }
  fputs("}", f);
  fflush(f);
  o->count++;
}

static inline int br_close(br_out *o) {
  if (!o->f) return 0;
  fputs("\n]\n", o->f);
  int rc = fclose(o->f);
  o->f = NULL;
  return rc;
}

#endif
