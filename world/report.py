"""The world demo's outputs: ``report.md``, ``results.json`` and ``examples.png``.

The report opens with a plain-words summary (which rows are measurements of TEXTER and
what they say), then the reader controls: a TEXTER hit rate is only interpreted when
stage 3's reader names the truth on canvases that plainly show it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from texter_jax.io.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from texter_jax.mapping import concept_alpha, normalize_concept_image
from texter_jax.world.reader_controls import control_passed
from texter_jax.world.report_controls import ci_text as _ci
from texter_jax.world.report_controls import controls_section, plain_words

MAIN_METHODS = ("texter", "texter-nosae", "text2concept")
ABLATION = "texter-logit"


def _hits_section(results: dict) -> list[str]:
    lines = ["## Hit rates", "",
             "| classifier | measured critical attribute | method | n | hit@1 [95% CI] | "
             "hit@3 [95% CI] | reader controls |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        crit = r["info"]["critical"]
        drop = next((row["mean_drop"] for row in r["info"]["interventions"]["rows"]
                     if row["attribute"] == crit), float("nan"))
        ok = "passed" if control_passed(r["controls"]) else "failed"
        for method in MAIN_METHODS:
            h = r["methods"][method]["hits"]
            lines.append(f"| {name} | {crit} (drop {drop:.2f}) | {method} | {h['hit@1']['n']} "
                         f"| {_ci(h['hit@1'])} | {_ci(h['hit@3'])} | {ok} |")
    return lines + [""]


def _diagnostics_section(results: dict) -> list[str]:
    lines = ["## Diagnostics", "",
             "*Class consistency*: the share of a concept image's stage-3 crops that the "
             "classifier itself assigns to the explained class. *Ablation "
             f"`{ABLATION}`* (not TEXTER): stage 2 maximises the predicted class's logit "
             "instead of the IG-selected units; stage 3 is unchanged.", "",
             "| classifier | method | class consistency [95% CI] | hit@1 [95% CI] | "
             "hit@3 [95% CI] |", "|---|---|---|---|---|"]
    for name, r in results.items():
        for method in ("texter", "texter-nosae", ABLATION):
            m = r["methods"][method]
            label = f"{method} (ablation)" if method == ABLATION else method
            lines.append(f"| {name} | {label} | {_ci(m['class_consistency'])} | "
                         f"{_ci(m['hits']['hit@1'])} | {_ci(m['hits']['hit@3'])} |")
    return lines + [""]


def _bf16_section(results: dict) -> list[str]:
    """TEXTER with MACO's classifier pass in bfloat16 next to float32 (``--bf16``)."""
    if not any("texter-bf16" in r["methods"] for r in results.values()):
        return []
    lines = ["## bfloat16 against float32 (same images, same keys)", "",
             "`texter-bf16`: MACO's classifier forward and backward in bfloat16 (weights and "
             "crops cast inside; stage 1, the SAE and stage 3 stay float32).", "",
             "| classifier | float32 hit@1 | bfloat16 hit@1 | float32 hit@3 | bfloat16 hit@3 |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        f32, b16 = r["methods"]["texter"]["hits"], r["methods"]["texter-bf16"]["hits"]
        lines.append(f"| {name} | {_ci(f32['hit@1'])} | {_ci(b16['hit@1'])} | "
                     f"{_ci(f32['hit@3'])} | {_ci(b16['hit@3'])} |")
    return lines + [""]


def _models_section(results: dict, clip_metrics: dict) -> list[str]:
    zs, zv = clip_metrics.get("zero_shot", {}), clip_metrics.get("zero_shot_views", {})
    zm = clip_metrics.get("zero_shot_mosaics", {})
    nan = float("nan")
    lines = ["## The world's CLIP: zero-shot accuracy per attribute (held out)", "",
             "Zoomed: close-up, partial and wide views; mosaics: several small renders "
             "sharing one value; each attribute scored only on the views that show it (on "
             "mosaics: only where every tile shares it; size is never shown).", "",
             "| attribute | whole images | zoomed views | mosaics |", "|---|---|---|---|"]
    for a, v in zs.items():
        lines.append(f"| {a} | {v:.3f} | {zv.get(a, nan):.3f} | {zm.get(a, nan):.3f} |")
    lines += ["", "## Classifiers, aligners and SAEs", "",
              "| classifier | test accuracy (whole images) | mosaics accuracy | "
              "aligner R^2 (held out) | SAE R^2 (held out) | SAE shape |",
              "|---|---|---|---|---|---|"]
    for name, r in results.items():
        al, sae = r["stack"]["aligner"], r["stack"]["sae"]
        lines.append(f"| {name} | {r['info'].get('test_accuracy', nan):.3f} | "
                     f"{r['info'].get('mosaic_test_accuracy', nan):.3f} | "
                     f"{al.get('holdout_r2', float('nan')):.3f} | "
                     f"{sae.get('r2', float('nan')):.3f} | "
                     f"{sae['input_dim']} -> {sae['nb_concepts']} (k={sae['top_k']}) |")
    for name, r in results.items():
        lines += ["", f"### Interventions: {name}", "",
                  "| attribute | mean drop of p(pred) | s.e. | flip rate | n |",
                  "|---|---|---|---|---|"]
        for row in r["info"]["interventions"]["rows"]:
            lines.append(f"| {row['attribute']} | {row['mean_drop']:.3f} | {row['sem']:.3f} | "
                         f"{row['flip_rate']:.2f} | {row['n']} |")
    return lines + [""]


def write_report(out: Path, cfg, results: dict, clip_metrics: dict, timings: dict,
                 ex_images: np.ndarray) -> Path:
    """Writes report.md, results.json and examples.png under ``out``; returns report.md."""

    lines = ["# texter demo: TEXTER in a procedural world with known decision rules", "",
             "Every classifier below was trained here; its decision-critical attribute was "
             "**measured** by intervention (resample one attribute of held-out images, "
             "everything else fixed, and record the drop of the predicted-class "
             "probability). An explanation *hits at k* if one of its top-k concepts names "
             "that attribute's value in the image (e.g. \"grass background\"). 95% CIs are "
             "percentile bootstrap over images.", ""]
    lines += plain_words(results) + controls_section(results) + _hits_section(results)
    lines += _diagnostics_section(results) + _bf16_section(results)
    lines += _models_section(results, clip_metrics)
    fig = _figure(out, cfg, results, ex_images)
    lines += ["## Examples", "", f"![examples]({fig.name})", "", "## Settings and timings", "",
              "```", json.dumps(dataclasses.asdict(cfg), indent=1), "```", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines) + "\n")
    write_json_atomic(out / "results.json", {
        "hits": {n: {m: v["hits"] for m, v in r["methods"].items()} for n, r in results.items()},
        "class_consistency": {n: {m: v["class_consistency"] for m, v in r["methods"].items()
                                  if "class_consistency" in v} for n, r in results.items()},
        "controls": {n: {k: r["controls"][k] for k in (
            "tiled", "upsampled", "values", "per_value", "tiled_value_read", "tiled_crops_show",
            "clip_tiled", "clip_whole", "clip_values") if k in r["controls"]}
                     | {"passed": control_passed(r["controls"])} for n, r in results.items()},
        "clip_zero_shot": clip_metrics.get("zero_shot", {}),
        "clip_zero_shot_views": clip_metrics.get("zero_shot_views", {}),
        "clip_zero_shot_mosaics": clip_metrics.get("zero_shot_mosaics", {}),
        "classifier_accuracy": {n: {k: r["info"].get(k) for k in ("test_accuracy",
                                                                  "mosaic_test_accuracy")}
                                for n, r in results.items()},
        "critical": {n: r["info"]["critical"] for n, r in results.items()},
        "stack": {n: r["stack"] for n, r in results.items()}, "timings": timings})
    return report


def _figure(out: Path, cfg, results: dict, ex_images: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    k = min(cfg.figure_examples, len(ex_images))
    names = list(results)
    fig, axes = plt.subplots(len(names) * k, 4, figsize=(14, 2.6 * len(names) * k),
                             squeeze=False)
    for i, name in enumerate(names):
        r = results[name]
        for j in range(k):
            row = axes[i * k + j]
            row[0].imshow(ex_images[j])
            truth = ", ".join(f"{a}={v}" for a, v in r["truths"][j])
            row[0].set_title(f"{name}: truth {truth}", fontsize=8)
            for col, method in ((1, "texter"), (2, "texter-nosae")):
                rec = r["explanations"][method]
                img = np.asarray(normalize_concept_image(rec["concept_image"][j]))
                alpha = np.asarray(concept_alpha(rec["transparency"][j]))
                row[col].imshow(alpha * img + (1 - alpha))
                row[col].set_title(f"{method} concept image", fontsize=8)
            text = [f"{m}:\n  " + "\n  ".join(r["methods"][m]["top3"][j]) for m in MAIN_METHODS]
            row[3].text(0, 1, "\n".join(text), va="top", fontsize=7, family="monospace")
            for ax in row:
                ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = out / "examples.png"
    write_bytes_atomic(path, buf.getvalue())
    return path

