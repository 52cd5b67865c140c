#!/usr/bin/python3
"""bench/check_results.py FILE - validate a results file against the shared schema.

Exit 0 if every record is well formed, 1 (listing every problem) otherwise.
Checked: the file is a JSON array of objects; required keys and their types;
target_cmp is ">=" / "<=" exactly when there is a target; met is null
without a target and otherwise equals the comparison of ratio (if not null)
or value against the target; ratio = value / floor when there is a floor
and the record is not a peer; min <= value <= max; runs >= 1; optional
note (string), x (number) and series (string).
"""
import json
import math
import sys

NUM = (int, float)
REQUIRED = {
    "figure": int, "name": str, "value": NUM, "unit": str, "floor": NUM + (type(None),),
    "ratio": NUM + (type(None),), "target": NUM + (type(None),),
    "target_cmp": (str, type(None)), "met": (bool, type(None)), "min": NUM, "max": NUM,
    "runs": int, "peer": bool,
}
OPTIONAL = {"note": str, "x": NUM, "series": str, "program": str}  # program: set by bench/run


def check(rec, i):
    errs = []
    where = "record %d (%s)" % (i, rec.get("name", "?") if isinstance(rec, dict) else "?")
    if not isinstance(rec, dict):
        return [where + ": not an object"]
    for k, t in REQUIRED.items():
        if k not in rec:
            errs.append("%s: missing key %r" % (where, k))
        elif isinstance(rec[k], bool) and t is not bool and bool not in (t if isinstance(t, tuple) else (t,)):
            errs.append("%s: %r is a boolean" % (where, k))
        elif not isinstance(rec[k], t):
            errs.append("%s: %r has type %s" % (where, k, type(rec[k]).__name__))
    for k, t in OPTIONAL.items():
        if k in rec and (not isinstance(rec[k], t) or isinstance(rec[k], bool)):
            errs.append("%s: %r has type %s" % (where, k, type(rec[k]).__name__))
    for k in rec:
        if k not in REQUIRED and k not in OPTIONAL:
            errs.append("%s: unknown key %r" % (where, k))
    if errs:
        return errs
    for k in ("value", "min", "max", "floor", "ratio", "target"):
        v = rec[k]
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            errs.append("%s: %r is not finite" % (where, k))
    if rec["runs"] < 1:
        errs.append("%s: runs < 1" % where)
    tol = 1e-6 * max(1.0, abs(rec["value"]))
    if not (rec["min"] - tol <= rec["value"] <= rec["max"] + tol):
        errs.append("%s: value %g outside min-max %g-%g" % (where, rec["value"], rec["min"], rec["max"]))
    target, cmp_, met, ratio = rec["target"], rec["target_cmp"], rec["met"], rec["ratio"]
    if target is None:
        if cmp_ is not None or met is not None:
            errs.append("%s: no target but target_cmp/met set" % where)
    else:
        if cmp_ not in (">=", "<="):
            errs.append("%s: target_cmp %r is not '>=' or '<='" % (where, cmp_))
        else:
            v = ratio if ratio is not None else rec["value"]
            want = v >= target if cmp_ == ">=" else v <= target
            if met is not want:
                errs.append("%s: met is %r but %g %s %g is %r" % (where, met, v, cmp_, target, want))
    if rec["floor"] is not None and not rec["peer"] and ratio is not None and rec["floor"] != 0:
        r = rec["value"] / rec["floor"]
        if abs(r - ratio) > 0.01 * max(abs(r), 1e-9) + 1e-3:
            errs.append("%s: ratio %g is not value/floor %g" % (where, ratio, r))
    # A peer that could not do the job at all (value 0: figure 5's backups
    # during restic prune / borg compact) has no finite ratio.
    if rec["peer"] and ratio is None and rec["value"] != 0:
        errs.append("%s: a peer record needs ratio = chunklock / peer (or value 0)" % where)
    return errs


def main():
    if len(sys.argv) != 2:
        print("usage: check_results.py FILE", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        print("%s: %s" % (sys.argv[1], e), file=sys.stderr)
        return 1
    if not isinstance(data, list):
        print("%s: not a JSON array" % sys.argv[1], file=sys.stderr)
        return 1
    errs = []
    for i, rec in enumerate(data):
        errs.extend(check(rec, i))
    for e in errs:
        print("%s: %s" % (sys.argv[1], e), file=sys.stderr)
    if not errs:
        print("%s: %d records, schema ok" % (sys.argv[1], len(data)))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
