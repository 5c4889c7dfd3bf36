"""The reader-control sections of the world demo's report: the plain-words summary that
opens it (which rows are measurements of TEXTER), the controls table, and where a failing
control fails (:mod:`texter_jax.world.reader_controls` computes every number)."""

from __future__ import annotations

from texter_jax.world.reader_controls import CONTROL_BAR, control_passed


def ci_text(h: dict) -> str:
    """A rate with its 95 % CI: ``0.41 [0.25, 0.56]``."""
    return f"{h['rate']:.2f} [{h['low']:.2f}, {h['high']:.2f}]"


def plain_words(results: dict) -> list[str]:
    """The first screen: which rows are measurements of TEXTER, and what they say."""
    lines = ["## In plain words (read this first)", "",
             "Every number in this report was measured in this run. A TEXTER hit rate is a "
             "measurement of TEXTER only for a classifier whose two reader controls pass "
             f"(hit@3 >= {CONTROL_BAR}): they check that stage 3's reader (crops, "
             "classifier, aligner, the world's CLIP) names the truth on canvases that "
             "plainly show it. Where a control fails, the row's numbers are still measured, "
             "but they may be limits of the reader, not of TEXTER.", ""]
    for name, r in results.items():
        crit = r["info"]["critical"]
        ctl = r["controls"]
        tiled = ctl["tiled"]["hit@3"]["rate"]
        vals = "none exists" if ctl["values"] is None else f"{ctl['values']['hit@3']['rate']:.2f}"
        t1 = r["methods"]["texter"]["hits"]["hit@1"]
        c1 = r["methods"]["text2concept"]["hits"]["hit@1"]
        said = (f"TEXTER names the {crit} first in {t1['rate']:.2f} of {t1['n']} images "
                f"[{t1['low']:.2f}, {t1['high']:.2f}], Text-to-Concept in {c1['rate']:.2f}")
        if control_passed(ctl):
            lines.append(f"- **{name}** (decides on {crit}): controls passed (tiled input "
                         f"{tiled:.2f}, value canvases {vals}), so this row is a "
                         f"measurement: {said}.")
        else:
            lines.append(f"- **{name}** (decides on {crit}): controls **failed** (tiled "
                         f"input {tiled:.2f}, value canvases {vals}; bar {CONTROL_BAR}), so "
                         f"this row is not a measurement of TEXTER: {said}."
                         + _why_failed(ctl, crit))
    return lines + [""]


def _why_failed(ctl: dict, crit: str) -> str:
    """Where the failing controls fail, from their diagnostics ("" without them)."""
    if "clip_tiled" not in ctl:
        return ""
    out = ""
    if ctl["tiled"]["hit@3"]["rate"] < CONTROL_BAR:
        out += (f" On the tiled inputs the reader picks the right {crit} among the {crit} "
                f"values in {ctl['tiled_value_read']['rate']:.2f} of images, but other "
                f"attributes outrank it; the world CLIP itself has the {crit} in its top 3 "
                f"on {ctl['clip_tiled']['hit@3']['rate']:.2f} of the same crops and on "
                f"{ctl['clip_whole']['hit@3']['rate']:.2f} of the whole images.")
        if "tiled_crops_show" in ctl:
            out += (f" By the rules the world's captions follow, "
                    f"{ctl['tiled_crops_show']['rate']:.2f} of those crops show the {crit} "
                    f"at all.")
    if ctl["values"] is not None and ctl["values"]["hit@3"]["rate"] < CONTROL_BAR:
        low = [v for v, x in ctl["per_value"].items() if x < CONTROL_BAR]
        out += (f" On the value canvases the world CLIP itself reaches "
                f"{ctl['clip_values']['hit@3']['rate']:.2f} on the same crops; the reader "
                f"misses most on {', '.join(low)}.")
    return out


def _why_section(results: dict) -> list[str]:
    """Diagnostics of the controls: which part of the reader fails (none is a gate)."""
    if not all("clip_tiled" in r["controls"] for r in results.values()):
        return []
    lines = ["### Where a control fails (diagnostics)", "",
             "The same crops read three more ways: the reader's best phrase among the "
             "critical attribute's values only (can it read the value at all?), and the "
             "world CLIP itself, the aligner's target, on the very same crops and on the "
             "whole, plain images (how highly CLIP ranks that attribute among everything an "
             "image shows). Text-to-Concept is the reader on the whole images. All hit@3 "
             "but the value read and the share of (a)'s crops that show the attribute at "
             "all, by the rules the world's captions follow (a shape only when one copy of "
             "the object is 90 % inside the crop).", "",
             "| classifier | (a) reader | (a) value read | (a) crops that show it | "
             "(a) world CLIP, same crops | world CLIP, whole images | Text-to-Concept | "
             "(b) reader | (b) world CLIP, same crops |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ctl = r["controls"]
        b = ctl["values"]
        b_clip = ctl["clip_values"]
        shows = ctl.get("tiled_crops_show")
        lines.append(f"| {name} | {ci_text(ctl['tiled']['hit@3'])} | "
                     f"{ci_text(ctl['tiled_value_read'])} | "
                     f"{ci_text(shows) if shows else '-'} | "
                     f"{ci_text(ctl['clip_tiled']['hit@3'])} | "
                     f"{ci_text(ctl['clip_whole']['hit@3'])} | "
                     f"{ci_text(r['methods']['text2concept']['hits']['hit@3'])} | "
                     f"{ci_text(b['hit@3']) if b else '-'} | "
                     f"{ci_text(b_clip['hit@3']) if b_clip else '-'} |")
    return lines + [""]


def controls_section(results: dict) -> list[str]:
    lines = ["## Reader controls", "",
             "Stage 3 reads random crops of a canvas through the classifier, the aligner and "
             "the concept bank. The same reader, with no MACO, reads (a) each explained image "
             "tiled at crop scale over the canvas (each tile the size of a stage-3 crop, the "
             "grid at a random offset) and (b) for every value of the critical attribute, "
             "canvases showing only that value at crop scale. A TEXTER row is interpretable "
             f"only if both reach hit@3 >= {CONTROL_BAR}. The last column, the image "
             "upsampled to the canvas (the first control (a)), is a diagnostic, not a gate: "
             "its crops show part of the object and miss the badge by construction.", "",
             "| classifier | critical attribute | (a) tiled input hit@1 | (a) hit@3 | "
             "(b) value canvases hit@1 | (b) hit@3 | (b) hit@3 per value | verdict | "
             "upsampled input hit@3 (diagnostic) |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, r in results.items():
        ctl = r["controls"]
        tiled, vals, up = ctl["tiled"], ctl["values"], ctl["upsampled"]
        crit = r["info"]["critical"]
        ok = control_passed(ctl)
        per_value = ", ".join(f"{v} {x:.2f}" for v, x in ctl["per_value"].items()) or "-"
        b1 = ci_text(vals["hit@1"]) if vals else "no control"
        b3 = ci_text(vals["hit@3"]) if vals else "no control"
        lines.append(f"| {name} | {crit} | {ci_text(tiled['hit@1'])} | {ci_text(tiled['hit@3'])} | "
                     f"{b1} | {b3} | {per_value} | {'passed' if ok else '**failed**'} | "
                     f"{ci_text(up['hit@3'])} |")
        if not ok:
            failed = []
            if tiled["hit@3"]["rate"] < CONTROL_BAR:
                failed.append(f"(a) tiled input at hit@3 {tiled['hit@3']['rate']:.2f}")
            if vals is None:
                failed.append(f"(b) no value canvas exists for {crit!r}")
            elif vals["hit@3"]["rate"] < CONTROL_BAR:
                failed.append(f"(b) value canvases at hit@3 {vals['hit@3']['rate']:.2f}")
            verdicts.append(f"- **{name}: TEXTER's row cannot be interpreted**: the reader "
                            f"fails " + " and ".join(failed) + f" (bar {CONTROL_BAR}).")
    return (lines + [""] + (verdicts or ["All reader controls passed."]) + [""]
            + _why_section(results))
