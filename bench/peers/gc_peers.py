#!/usr/bin/python3
"""bench/peers/gc_peers.py - figure 4 peers: chunklock's GC next to
`restic prune`, `borg compact` and `casync gc` on the same generated data,
"for context (different work, same user job)".

    gc_peers.py --json FILE [--quick] [--dir DIR] [--build BUILD]
                [--chunks 100k] [--runs 5] [--seed 1]

Data: `gen_store --export` writes the payloads of the N chunks of the
figure-4 store as plain files, the referenced half under src/live and the
garbage half under src/garbage (40 files each). chunklock gets the store
itself (gen_store, half garbage); each peer gets a repository holding a
backup of src/live (made once) and, before each run, a backup of
src/garbage that is then forgotten (restic forget / borg delete / the
casync index removed): the same user job, "drop half the data and reclaim
the space". Timed: only the space-reclaiming command (restic prune, borg
compact, casync gc --store S live.caidx) and chunklock's ckl_gc_run
(gc_bench --child-gc), interleaved run by run, wall time from spawn to
exit, peak RSS from wait4. Peers cut their own chunks (restic ~1 MiB
average, borg ~2 MiB, casync 64 KiB), so they handle far fewer chunks than
chunklock's N: not the same work. borg and casync therefore also run a
second time with their chunk size set to chunklock's 1-4 KiB (borg
buzhash,10,12,11,63; casync --chunk-size=2560), which gives them about as
many chunks as chunklock; restic's chunk size cannot be set.

Records (figure 4, peer: true): value = chunklock's median wall time,
floor = the peer's median, ratio = chunklock / peer. Needs the Debian
packages restic, borgbackup, casync (bench/run installs them); a missing
peer gives a record with value null and a note. Run with /usr/bin/python3.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

FIG = 4


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(argv, env=None, cwd=None, check=True):
    """Run argv; (wall seconds, peak RSS MiB, stdout text)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   err.decode(errors="replace")[-500:]))
    return wall, ru.ru_maxrss / 1024.0, out.decode(errors="replace")


def count(s):
    s = s.strip().lower()
    mult = {"k": 1000, "m": 1000000}.get(s[-1:], 1)
    return int(float(s[:-1] if mult != 1 else s) * mult)


class Restic:
    name = "restic prune"
    tool = "restic"

    def __init__(self, root, src):
        self.repo, self.src = os.path.join(root, "restic-repo"), src
        self.env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=self.repo)

    def setup(self):
        run(["restic", "init"], env=self.env)
        run(["restic", "backup", "--tag", "live", "."], env=self.env,
            cwd=os.path.join(self.src, "live"))

    def add_garbage(self):
        run(["restic", "backup", "--tag", "garbage", "."], env=self.env,
            cwd=os.path.join(self.src, "garbage"))
        _, _, out = run(["restic", "snapshots", "--tag", "garbage", "--json"], env=self.env)
        ids = [s["id"] for s in json.loads(out)]
        run(["restic", "forget"] + ids, env=self.env)

    def gc(self):
        return run(["restic", "prune"], env=self.env)


class Borg:
    name = "borg compact"
    tool = "borg"
    # chunklock's chunks are 1-4 KiB: buzhash with min 1 KiB, max 4 KiB,
    # ~2 KiB average (borg requires max > the 63-byte window here).
    small = ["--chunker-params", "buzhash,10,12,11,63"]

    def __init__(self, root, src, small=False):
        self.small = small
        if small:
            self.name = "borg compact (~2 KiB chunks, like chunklock's)"
        tag = "borg-small" if small else "borg"
        self.repo, self.src, self.n = os.path.join(root, tag + "-repo"), src, 0
        self.env = dict(os.environ, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_BASE_DIR=os.path.join(root, tag + "-home"))

    def params(self):
        return Borg.small if self.small else []

    def setup(self):
        run(["borg", "init", "-e", "none", self.repo], env=self.env)
        run(["borg", "create"] + self.params() + [self.repo + "::live", "."], env=self.env,
            cwd=os.path.join(self.src, "live"))

    def add_garbage(self):
        self.n += 1
        a = "%s::garbage-%d" % (self.repo, self.n)
        run(["borg", "create"] + self.params() + [a, "."], env=self.env,
            cwd=os.path.join(self.src, "garbage"))
        run(["borg", "delete", a], env=self.env)

    def gc(self):
        return run(["borg", "compact", self.repo], env=self.env)


class Casync:
    name = "casync gc"
    tool = "casync"

    def __init__(self, root, src, small=False):
        tag = "casync-small" if small else "casync"
        # 2.5 KiB average (casync: min avg/4, max 4 x avg), like chunklock's 1-4 KiB
        self.opts = ["--chunk-size=2560"] if small else []
        if small:
            self.name = "casync gc (~2.5 KiB chunks, like chunklock's)"
        self.store, self.src, self.root = os.path.join(root, tag + "-store"), src, root
        self.tag = tag

    def idx(self, part):
        return os.path.join(self.root, "%s-%s.caidx" % (self.tag, part))

    def setup(self):
        run(["casync", "make"] + self.opts + ["--store=" + self.store, self.idx("live"),
             os.path.join(self.src, "live")])

    def add_garbage(self):
        run(["casync", "make"] + self.opts + ["--store=" + self.store, self.idx("garbage"),
             os.path.join(self.src, "garbage")])
        os.unlink(self.idx("garbage"))

    def gc(self):
        return run(["casync", "gc", "--store=" + self.store, self.idx("live")])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default="/var/tmp/ckl-bench")
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "build"))
    ap.add_argument("--chunks", default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seed", default="1")
    a = ap.parse_args()
    n = count(a.chunks or ("5k" if a.quick else "100k"))
    runs = a.runs or (1 if a.quick else 5)
    gen = os.path.join(a.build, "bench", "gen_store")
    gcb = os.path.join(a.build, "bench", "gc_bench")
    root = os.path.join(a.dir, "gc-peers")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    src, store = os.path.join(root, "src"), os.path.join(root, "store")
    log("== gc_peers: %d chunks, %d runs, in %s" % (n, runs, root))
    _, _, out = run([gen, "--export", src, "-n", str(n), "--seed", a.seed])
    src_bytes = json.loads(out)["export_bytes"]
    run([gen, "-n", str(n), "--seed", a.seed, store])
    peers, missing = [], []
    for cls, small in ((Restic, False), (Borg, False), (Casync, False), (Borg, True),
                       (Casync, True)):
        if shutil.which(cls.tool) is None:
            if not small:
                missing.append(cls)
            continue
        p = cls(root, src, small) if small else cls(root, src)
        t, _, _ = run_timed_setup(p)
        log("   %s: live backup in %.1f s" % (cls.name, t))
        peers.append(p)
    ck, pw, prss = [], {p.name: [] for p in peers}, {p.name: [] for p in peers}
    for r in range(runs):
        run([gen, "--reset", "-n", str(n), "--seed", a.seed, store])
        os.sync()
        w, rss, out = run([gcb, "--child-gc", store])
        res = json.loads(out)
        if res["removed_chunks"] != n - n // 2:
            raise RuntimeError("chunklock removed %d chunks, expected %d" %
                               (res["removed_chunks"], n - n // 2))
        ck.append(w)
        line = "   run %d: chunklock %.2f s" % (r + 1, w)
        for p in peers:
            p.add_garbage()
            os.sync()
            w, rss, _ = p.gc()
            pw[p.name].append(w)
            prss[p.name].append(rss)
            line += ", %s %.2f s" % (p.name, w)
        log(line)
    recs = []
    ckm = statistics.median(ck)
    for p in peers:
        v = pw[p.name]
        recs.append({
            "figure": FIG, "name": "GC vs %s, %s chunks of data (half forgotten)" % (p.name, a.chunks or ("5k" if a.quick else "100k")),
            "value": ckm, "unit": "s", "floor": statistics.median(v),
            "ratio": ckm / statistics.median(v), "target": None, "target_cmp": None,
            "met": None, "min": min(ck), "max": max(ck), "runs": len(v), "peer": True,
            "note": "for context (different work, same user job): chunklock ckl_gc_run on the "
                    "%d-chunk store vs `%s` after forgetting a backup of the garbage half of the "
                    "same %.0f MB of payloads (src/garbage); %s min-max %.2f-%.2f s, peak RSS "
                    "%.0f MiB; %s" %
                    (n, p.name, src_bytes / 1e6, p.name, min(v), max(v), max(prss[p.name]),
                     "chunk sizes set to match chunklock's 1-4 KiB" if "like chunklock" in p.name
                     else "the peer cuts its own, larger chunks (restic ~1 MiB, borg ~2 MiB, "
                          "casync ~64 KiB average): far fewer of them")})
    for cls in missing:
        recs.append({"figure": FIG, "name": "GC vs %s" % cls.name, "value": None, "unit": "s",
                     "floor": None, "ratio": None, "target": None, "target_cmp": None,
                     "met": None, "min": None, "max": None, "runs": 0, "peer": True,
                     "note": "not run: %s is not installed (Debian package)" % cls.tool})
    with open(a.json, "w") as f:
        json.dump(recs, f, indent=1)
        f.write("\n")
    for r in recs:
        log("  %s: %s" % (r["name"], r["ratio"]))
    shutil.rmtree(root, ignore_errors=True)


def run_timed_setup(p):
    t0 = time.monotonic()
    p.setup()
    return time.monotonic() - t0, 0, ""


if __name__ == "__main__":
    main()
