#!/usr/bin/python3
"""bench/peers/lock_peers.py - the peers of figures 1 and 2 (docs/benchmarks.md).

Run by bench/lock_bench (one process per measurement, interleaved with
chunklock's and the floor's runs) with Debian's /usr/bin/python3, which can
import the Debian packages borgbackup (borg.locking.Lock) and
python3-filelock (FileLock, SoftFileLock):

    lock_peers.py --figure 1|2 --case borg_excl|borg_shared|filelock|softfilelock
                  --seconds S --dir DIR

Prints "rate <per second>" or, when the peer cannot be imported,
"unavailable: <why>" (exit 0: a missing peer is a gap in the figure, not a
failure of the run).

Figure 1: acquire+release pairs per second, one thread, uncontended, each
pair on a fresh lock object the way the tool uses it (borg makes a Lock per
repository open; filelock objects are cheap to make but reused here, which
favours the peer).
Figure 2: two processes pass the exclusive lock back and forth with the
same handoff protocol as lock_bench (shared memory flags: release only when
the other contender is trying, try again only after it got the lock);
ops/s over both. Each peer waits the way it does by default: borg's
ExclusiveLock sleeps timeout/10 between attempts (borg's default
--lock-wait of 1 s gives 0.1 s), filelock polls every 0.05 s.
"""
import argparse
import multiprocessing as mp
import os
import sys
import time


def make(case, path):
    if case.startswith("borg"):
        from borg.locking import Lock
        excl = case == "borg_excl"
        # borg's default --lock-wait is 1 s
        return (lambda: Lock(path, exclusive=excl, timeout=1.0).acquire()), (lambda lk: lk.release())
    if case == "filelock":
        from filelock import FileLock
        lk = FileLock(path + ".lock")
        return (lambda: (lk.acquire(), lk)[1]), (lambda l: l.release())
    if case == "softfilelock":
        from filelock import SoftFileLock
        lk = SoftFileLock(path + ".softlock")
        return (lambda: (lk.acquire(), lk)[1]), (lambda l: l.release())
    raise SystemExit("unknown case " + case)


def fig1(case, seconds, d):
    acquire, release = make(case, os.path.join(d, "peer-" + case))
    for _ in range(8):
        release(acquire())
    n = 0
    t0 = time.monotonic()
    while True:
        for _ in range(16):
            release(acquire())
        n += 16
        t = time.monotonic()
        if t - t0 >= seconds:
            return n / (t - t0)


def run_contender(me, case, path, shm):
    # shm: [go, stop, waiting0, waiting1, count0, count1, failed]
    GO, STOP, W, C, FAILED = 0, 1, 2, 4, 6
    other = 1 - me
    if case == "borg_excl":
        from borg.locking import Lock, LockTimeout

        def acquire():
            while not shm[STOP]:
                try:
                    return Lock(path, exclusive=True, timeout=1.0).acquire()
                except LockTimeout:
                    continue
            return None
        release = lambda lk: lk.release()
    else:
        from filelock import FileLock
        fl = FileLock(path + ".lock")

        def acquire():
            fl.acquire()
            return fl
        release = lambda lk: lk.release()
    while not shm[GO]:
        time.sleep(0.001)
    while not shm[STOP]:
        shm[W + me] = 1
        lk = acquire()
        shm[W + me] = 0
        if lk is None:
            break
        shm[C + me] += 1
        seen = shm[C + other]
        while not shm[W + other] and not shm[STOP]:
            time.sleep(0.0001)
        release(lk)
        while shm[C + other] == seen and not shm[STOP]:
            time.sleep(0.0001)


def fig2(case, seconds, d):
    path = os.path.join(d, "peer2-" + case)
    shm = mp.Array("i", 7, lock=False)
    procs = [mp.Process(target=run_contender, args=(i, case, path, shm)) for i in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    shm[0] = 1
    time.sleep(seconds)
    n = shm[4] + shm[5]
    t = time.monotonic()
    shm[1] = 1
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    return n / (t - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--figure", type=int, required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    try:
        if a.case.startswith("borg"):
            import borg.locking  # noqa: F401
        else:
            import filelock  # noqa: F401
    except ImportError as e:
        print("unavailable: %s (install the Debian package)" % e)
        return 0
    if a.figure == 1:
        rate = fig1(a.case, a.seconds, a.dir)
    else:
        # The peers poll every 0.05-0.1 s: give them enough handoffs to count.
        rate = fig2(a.case, max(a.seconds, 3.0), a.dir)
    print("rate %.6g" % rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
