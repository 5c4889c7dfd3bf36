"""Markdown tables from ``texter plan --json`` files, for the docs.

    python bench/plan_report.py plan_a.json [plan_b.json ...] [--label before,after]

Every figure is the planner's: per device, the compiled programs' memory and the
compiler's cost model, a roofline ESTIMATE from published peaks (not a measurement).
"Largest batch" is predicted from the memory of the compiled batches (a line through
the two largest that fit), unless the file holds a compiled ``--max-batch`` row.
"""

from __future__ import annotations

import argparse
import json
import math

GIB = 2 ** 30


def largest(rows: list[dict], margin: float = 0.9) -> str:
    """The compiled --max-batch row if any, else a line through two compiled batches."""
    done = [r for r in rows if r.get("largest_that_fits")]
    if done:
        return f"{done[0]['batch_per_device']} (compiled)"
    ok = sorted((r for r in rows if r.get("fits") and "programs" in r),
                key=lambda r: r["batch_per_device"])
    if len(ok) < 2:
        return "-"
    a, b = ok[-2], ok[-1]
    budget = margin * b["memory_bytes"]
    best = math.inf
    for name in b["programs"]:
        pa = _peak(a["programs"][name])
        pb = _peak(b["programs"][name])
        slope = (pb - pa) / (b["batch_per_device"] - a["batch_per_device"])
        if slope > 0:
            best = min(best, b["batch_per_device"] + (budget - pb) / slope)
    return f"~{int(best)} (predicted)" if best < math.inf else "-"


def _peak(p: dict) -> int:
    return p["argument"] + p["output"] - p["alias"] + p["temp"] + p["code"]


def table(rows: list[dict], label: str) -> list[str]:
    out = [f"| {label} target | dtype | batch/device | GiB/device (fits) | GFLOP/image | "
           "GB/image | GB per image-step (MACO) | s/image | images/min/device | "
           "images/min, H100 roofline |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "programs" not in r:
            out.append(f"| {r['target']} | {r['dtype']} | {r['batch_per_device']} | "
                       f"does not fit | | | | | | |")
            continue
        b = r["batch_per_device"]
        step = r["maco_step"]["bytes"] / b / 1e9
        h100 = r.get("other_chips_images_per_minute", {}).get("h100")
        out.append(
            f"| {r['target']} | {r['dtype']} | {b} | {r['peak_bytes'] / GIB:.2f} "
            f"({'yes' if r['fits'] else 'no'}) | {r['per_image']['flops'] / 1e9:,.0f} | "
            f"{r['per_image']['bytes'] / 1e9:,.0f} | {step:.2f} | "
            f"{r['seconds_per_batch'] / b:.2f} | {r['images_per_minute_per_device']:.1f} | "
            f"{'-' if h100 is None else f'{h100:.1f}'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--label", default="", help="comma list, one per file")
    args = ap.parse_args()
    labels = args.label.split(",") if args.label else [""] * len(args.files)
    if len(labels) != len(args.files):
        ap.error(f"--label has {len(labels)} labels for {len(args.files)} files")
    for path, label in zip(args.files, labels, strict=True):
        rows = json.loads(open(path).read())
        print("\n".join(table(rows, label)))
        groups = {}
        for r in rows:
            groups.setdefault((r["target"], r["dtype"]), []).append(r)
        print()
        print("| target | dtype | largest batch per device (90 % of memory) |")
        print("|---|---|---|")
        for (t, d), rs in groups.items():
            print(f"| {t} | {d} | {largest(rs)} |")
        print()


if __name__ == "__main__":
    main()
