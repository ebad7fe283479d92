#!/usr/bin/env python3
"""The markdown table of `benches/peer_steps.sh` output: images/s both ways, the ratio, and
peak memory both ways.  python3 benches/peer_table.py steps.jsonl"""
import json
import sys

rows = {}
for line in open(sys.argv[1]):
    if line.strip():
        v = json.loads(line)
        rows.setdefault(v["row"], {})[v["side"]] = v
print("| row | ours img/s | PyTorch img/s | ratio | ours peak MiB | PyTorch peak MiB |")
print("|---|---:|---:|---:|---:|---:|")
for row, s in rows.items():
    o, p = s.get("selfsup"), s.get("pytorch")
    if not (o and p):
        continue
    print(f"| {row} | {o['images_per_sec']:.1f} | {p['images_per_sec']:.1f} | "
          f"{o['images_per_sec'] / p['images_per_sec']:.2f} | {o['peak_rss_mib']:.0f} | "
          f"{p['peak_rss_mib']:.0f} |")
