/* tools/demo_view.c - the demo's live view, its event lines and its
 * summary (see cmd_demo.c). All on the loop thread. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/demo.h"

static unsigned alive_snaps(const demo *d) {
  unsigned n = 0;
  for (size_t i = 0; i < d->nsnaps; i++) n += !d->snaps[i].gone;
  return n;
}

/* On a terminal the view is redrawn in place: the cursor goes back up over
 * the lines drawn last time. */
static int line(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int line(demo *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (d->tty) fputs("\033[K", d->out);
  vfprintf(d->out, fmt, ap);
  va_end(ap);
  fputc('\n', d->out);
  return 1;
}

static void erase(demo *d) {
  if (d->tty && d->view_lines > 0) fprintf(d->out, "\033[%dF\033[J", d->view_lines);
  d->view_lines = 0;
}

void demo_event(demo *d, const char *fmt, ...) {
  erase(d);
  double t = d->start_ns ? (double)(cli_now_ns() - d->start_ns) / 1e9 : 0;
  fprintf(d->out, "[%5.1fs] ", t);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(d->out, fmt, ap);
  va_end(ap);
  fputc('\n', d->out);
  fflush(d->out);
}

static void bar(char *out, size_t len, uint64_t done, uint64_t total) {
  if (!total) {
    snprintf(out, len, "%s", "");
    return;
  }
  int w = 16, fill = (int)((double)(done > total ? total : done) / (double)total * w);
  char b[17];
  for (int i = 0; i < w; i++) b[i] = i < fill ? '#' : '.';
  b[w] = '\0';
  snprintf(out, len, "[%s] %3d%%", b, (int)(done * 100 / total));
}

void demo_view(demo *d, bool final) {
  double t = (double)(cli_now_ns() - d->start_ns) / 1e9;
  char freed[32];
  cli_format_bytes(d->gc_removed_bytes, freed, sizeof freed);
  if (!d->tty) {
    if (final) return;
    fprintf(d->out, "[%5.1fs] snapshots %u (%u kept) | gc %u runs, %s freed | prunes %u (-%u) | "
           "forgets %u | verifies %u | restores %u/%u ok | lock waits %u, resolved %u\n",
           t, d->backups, alive_snaps(d), d->gc_runs, freed, d->prunes, d->pruned, d->forgot,
           d->verifies, d->reads_matched, d->reads, d->lock_waits, d->resolved);
    fflush(d->out);
    return;
  }
  erase(d);
  if (final) {
    fflush(d->out);
    return;
  }
  int n = 0;
  n += line(d, "\033[1mchunklock demo\033[0m  %.1f / %d s   %s", t, d->seconds,
            d->stopping ? "(finishing)" : "");
  n += line(d, "snapshots %u written, %u kept | gc %u runs, %s freed | prunes %u (-%u) | "
               "forgets %u", d->backups, alive_snaps(d), d->gc_runs, freed, d->prunes,
            d->pruned, d->forgot);
  n += line(d, "verifies %u | restores %u (%u matched) | lock waits %u | conflicts resolved "
               "%u | gave up %u | retries %u", d->verifies, d->reads, d->reads_matched,
            d->lock_waits, d->resolved, d->gave_up, d->backup_retries);
  n += line(d, "%s", "");
  n += line(d, "\033[1m%-44s %-8s %-24s\033[0m", "TASK", "PHASE", "PROGRESS / WAITING FOR");
  int shown = 0;
  for (demo_job *j = d->jobs; j && shown < 12; j = j->next) {
    if (j->finished || j->label[0] == '(') continue;
    char p[128];
    if (!strcmp(j->phase, "wait"))
      snprintf(p, sizeof p, "held by %s", j->waiting_for[0] ? j->waiting_for : "?");
    else
      bar(p, sizeof p, j->done, j->total);
    n += line(d, "%-44.44s %-8s %s", j->label, j->phase, p);
    shown++;
  }
  n += line(d, "%s", "");
  n += line(d, "\033[1mLOCK HOLDERS\033[0m (roster: every process; refreshed off the loop)");
  const char *s = d->locks_text;
  int k = 0;
  while (*s && k < 12) {
    const char *nl = strchr(s, '\n');
    int len = nl ? (int)(nl - s) : (int)strlen(s);
    n += line(d, "%.*s", len, s);
    k++;
    s = nl ? nl + 1 : s + len;
  }
  if (!d->locks_text[0]) n += line(d, "  (none)");
  d->view_lines = n;
  fflush(d->out);
}

static void fsck_problem(const ckl_fsck_problem *p, void *arg) {
  demo *d = arg;
  fprintf(d->out, "  fsck: %s %s: %s\n", ckl_fsck_kind_name(p->kind), p->path, p->detail);
}

static json_t *summary_json(const demo *d, const cli_stats *s, int frc,
                            const ckl_fsck_summary *fs) {
  json_t *o = json_object();
  cli_json_set(o, "seconds", json_integer(d->seconds));
  cli_json_set(o, "snapshots_written", json_integer(d->backups));
  cli_json_set(o, "snapshots", json_integer((json_int_t)s->snapshots));
  cli_json_set(o, "pruned", json_integer(d->pruned));
  cli_json_set(o, "forgotten", json_integer(d->forgot));
  cli_json_set(o, "chunks", json_integer((json_int_t)s->chunks));
  cli_json_set(o, "bytes", json_integer((json_int_t)s->stored_bytes));
  cli_json_set(o, "logical_bytes", json_integer((json_int_t)s->logical_bytes));
  cli_json_set(o, "dedup_factor", json_real(s->dedup_factor));
  cli_json_set(o, "gc_runs", json_integer(d->gc_runs));
  cli_json_set(o, "gc_removed_chunks", json_integer((json_int_t)d->gc_removed_chunks));
  cli_json_set(o, "gc_removed_bytes", json_integer((json_int_t)d->gc_removed_bytes));
  cli_json_set(o, "lock_waits", json_integer(d->lock_waits));
  cli_json_set(o, "conflicts_resolved", json_integer(d->resolved));
  cli_json_set(o, "backup_retries", json_integer(d->backup_retries));
  cli_json_set(o, "gave_up", json_integer(d->gave_up));
  cli_json_set(o, "restores", json_integer(d->reads));
  cli_json_set(o, "restores_matched", json_integer(d->reads_matched));
  cli_json_set(o, "verifies", json_integer(d->verifies));
  cli_json_set(o, "freezes", json_integer(d->freezes));
  cli_json_set(o, "failures", json_integer(d->failures));
  cli_json_set(o, "fsck_clean", json_boolean(frc == 0));
  cli_json_set(o, "fsck_problems", json_integer(frc < 0 ? -1 : (json_int_t)fs->problems));
  return o;
}

int demo_summary(demo *d) {
  cli_stats s;
  int rc = cli_store_stats(d->st, &s, NULL);
  ckl_fsck_summary fs = {0};
  int frc = ckl_fsck(d->st, NULL, fsck_problem, d, &fs);
  if (rc < 0) {
    memset(&s, 0, sizeof s);
    fprintf(d->out, "  cannot read the store's chunks: %s\n", ckl_strerror(rc));
  }
  bool ok = frc == 0 && d->failures == 0;
  if (d->json) {
    cli_json_print(summary_json(d, &s, frc, &fs));
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAILED;
  }
  char freed[32], disk[32], logical[32];
  cli_format_bytes(d->gc_removed_bytes, freed, sizeof freed);
  cli_format_bytes(s.stored_bytes, disk, sizeof disk);
  cli_format_bytes(s.logical_bytes, logical, sizeof logical);
  printf("\nsummary after %d s\n", d->seconds);
  printf("  snapshots    %u written, %" PRIu64 " in the store (%u pruned, %u forgotten)\n",
         d->backups, s.snapshots, d->pruned, d->forgot);
  printf("  chunks       %" PRIu64 " on disk (%s) for %s referenced: dedup %.1fx, "
         "compression %.1fx\n", s.chunks, disk, logical,
         s.dedup_factor, s.compression_factor);
  printf("  gc           %u runs beside the backups, %" PRIu64 " chunks freed (%s)\n",
         d->gc_runs, d->gc_removed_chunks, freed);
  printf("  lock waits   %u tasks found a lock busy and waited on the loop (it never blocked)\n",
         d->lock_waits);
  printf("  conflicts    %u resolved (waited or retried, then succeeded); %u backup retries; "
         "%u gave up at their deadline\n", d->resolved, d->backup_retries, d->gave_up);
  printf("  restores     %u, %u read back exactly the bytes written; %u verifies ok; %u "
         "targets pruned first\n", d->reads, d->reads_matched, d->verifies, d->gone);
  printf("  freeze       %u (with-lock --shared): deletions waited, backups went on\n",
         d->freezes);
  if (frc < 0) printf("  fsck         stopped: %s\n", ckl_strerror(frc));
  else if (frc == 0)
    printf("  fsck         clean (%zu snapshots, %zu indexes, %zu chunks checked)\n",
           fs.snapshots, fs.indexes, fs.chunks);
  else printf("  fsck         %zu problems\n", fs.problems);
  if (d->failures) printf("  failures     %u (see above)\n", d->failures);
  fflush(stdout);
  return ok ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}
