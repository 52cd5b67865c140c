/*
 * datastore/proc_identity.h - who we are and whether another process lives.
 *
 * The roster records, for every holder, enough identity to decide later,
 * from any process, whether that holder is provably dead:
 *
 *   host id     /etc/machine-id (32 hex), or "host:<hostname>" without one
 *   boot id     /proc/sys/kernel/random/boot_id ("" when unreadable)
 *   pid ns      inode of /proc/self/ns/pid (0 when unknown)
 *   pid         the holder's process
 *   start time  field 22 of /proc/<pid>/stat (clock ticks after boot)
 *
 * A pid is only meaningful inside one pid namespace of one boot of one
 * machine, so "local" means all three match. Two containers on one kernel
 * share the boot id but not (usually) the machine id, and never the pid
 * namespace: their records are foreign to each other and wait for their
 * lease, rather than being judged by a pid that means something else here.
 *
 * Everything host-wide is read once and cached; the process's own start
 * time is cached per pid (a forked child has its own).
 */
#ifndef CKL_DATASTORE_PROC_IDENTITY_H
#define CKL_DATASTORE_PROC_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define CKL__HOST_ID_MAX 72 /* "host:" + a 63-byte host name fits */
#define CKL__BOOT_ID_MAX 40
#define CKL__HOSTNAME_MAX 63

typedef struct ckl__host_ident {
  char host_id[CKL__HOST_ID_MAX + 1];
  char boot_id[CKL__BOOT_ID_MAX + 1];
  char hostname[CKL__HOSTNAME_MAX + 1];
  uint64_t pidns;
} ckl__host_ident;

/* The cached identity of this host, boot and pid namespace. Never NULL,
 * never fails (unreadable parts are empty / 0, see above). */
const ckl__host_ident *ckl__host_identity(void);

/* Parse the contents of a /proc/<pid>/stat file: the state letter (field
 * 3) and the start time (field 22). The comm field (2) may contain spaces
 * and ')', so parsing starts after the LAST ')'. Bounded: never reads past
 * buf[len-1], needs no NUL. 0, or CKL_ECORRUPT when the text does not have
 * that shape. */
int ckl__proc_stat_parse(const char *buf, size_t len, char *state, uint64_t *starttime);

/* Read and parse /proc/<pid>/stat. 0; -ENOENT when there is no such
 * process (or it is hidden from us: see ckl__pid_liveness); CKL_ECORRUPT
 * when the file cannot be parsed; other -errno. */
int ckl__pid_stat(int64_t pid, char *state, uint64_t *starttime);

/* This process's start time, cached per pid. 0 or an error from
 * ckl__pid_stat (then *out is 0). */
int ckl__self_start_time(uint64_t *out);

typedef enum ckl__liveness {
  CKL__PID_DEAD = 0,        /* no such process, a zombie, or the pid was reused */
  CKL__PID_ALIVE = 1,       /* running, start time matches */
  CKL__PID_UNVERIFIED = 2,  /* exists but cannot be inspected: treated as alive */
} ckl__liveness;

/* Is the process (pid, starttime) of THIS host/boot/pid namespace still
 * running? Conservative: anything short of proof of death is not dead.
 * starttime 0 (the holder could not read its own) checks the pid only. */
ckl__liveness ckl__pid_liveness(int64_t pid, uint64_t starttime);

#endif
