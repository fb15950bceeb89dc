#!/usr/bin/env python3
"""Reads `cargo metadata --format-version 1` on stdin; prints the
workspace's rust-version, or exits non-zero naming every package in the
lock file that declares a newer one."""
import json
import sys


def ver(s):
    parts = [int(x) for x in (s or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


m = json.load(sys.stdin)
members = set(m["workspace_members"])
ours = {p["rust_version"] for p in m["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"check-msrv: workspace members disagree on rust-version: {ours}")
msrv = ours.pop()
deps = [p for p in m["packages"] if p["id"] not in members]
newer = sorted(
    f"{p['name']} {p['version']} needs {p['rust_version']}"
    for p in deps
    if ver(p.get("rust_version")) > ver(msrv)
)
if newer:
    sys.exit(f"check-msrv: rust-version = {msrv}, but: " + "; ".join(newer))
top = max(deps, key=lambda p: ver(p.get("rust_version")))
print(
    f"check-msrv: rust-version {msrv} covers all {len(deps)} dependencies "
    f"(the highest: {top['name']} {top['version']} needs {top['rust_version']})",
    file=sys.stderr,
)
print(msrv)
