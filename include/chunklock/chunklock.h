/*
 * chunklock/chunklock.h - umbrella header: include this one.
 *
 * chunklock lets garbage collection, forget/prune, backups, verification
 * and readers run on one content-addressed chunk store at the same time, in
 * threads and processes, without losing a referenced chunk and without
 * blocking writers. See docs/design.md for the architecture and
 * docs/locking.md for which lock makes each pair of operations safe.
 */
#ifndef CHUNKLOCK_H
#define CHUNKLOCK_H

#include "common.h"
#include "error.h"
#include "failpoint.h"
#include "log.h"

#if __has_include("lock.h")
#include "lock.h"
#endif
#if __has_include("proclock.h")
#include "proclock.h"
#endif
#if __has_include("softlock.h")
#include "softlock.h"
#endif
#if __has_include("atomic_file.h")
#include "atomic_file.h"
#endif
#if __has_include("store.h")
#include "store.h"
#endif
#if __has_include("chunk.h")
#include "chunk.h"
#endif
#if __has_include("index.h")
#include "index.h"
#endif
#if __has_include("snapshot.h")
#include "snapshot.h"
#endif
#if __has_include("manifest.h")
#include "manifest.h"
#endif
#if __has_include("backup.h")
#include "backup.h"
#endif
#if __has_include("roster.h")
#include "roster.h"
#endif
#if __has_include("maintenance.h")
#include "maintenance.h"
#endif
#if __has_include("gc.h")
#include "gc.h"
#endif
#if __has_include("cdc.h")
#include "cdc.h"
#endif
#if __has_include("freeze.h")
#include "freeze.h"
#endif
#if __has_include("runtime.h")
#include "runtime.h"
#endif

#endif
