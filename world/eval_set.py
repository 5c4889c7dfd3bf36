"""An evaluation set from the procedural world, in the layout ``texter eval`` reads.

Writes ``<out>/<class>/<index>.png`` (ImageFolder), ``class_names.txt`` (index order),
``bank.txt`` (the world's concept bank), ``truth.json`` (per image, the (attribute,
value) pairs an explanation must name to hit; format :data:`texter_jax.eval.data.TRUTH_FORMAT`)
and ``classes.json`` (class name -> attribute value, for reading tables).

Class folders get neutral names (``class_00`` ...) on purpose: concept banks drop every
concept that mentions the predicted class's name (the release's rule), and a shape
classifier's class named "star" would remove "star shape" -- the very concept that names
its decision-critical attribute.

Run ``python -m texter_jax.world.eval_set OUT --label shape --truth background --n 60`` and then
``texter eval OUT --class-names OUT/class_names.txt --bank OUT/bank.txt --no-generic
--truth OUT/truth.json --preprocess resize ...``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from texter_jax.eval.data import TRUTH_FORMAT
from texter_jax.io.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from texter_jax.world import DISCRETE, concept_bank, render, sample_attributes, truth_values


def write_world_set(out: str | os.PathLike, attrs, *, label_attribute: str,
                    truth_attributes: Sequence[str] | str | None = None,
                    image_size: int = 64, render_seed: int = 0) -> Path:
    """Renders ``attrs`` into an ImageFolder tree labelled by ``label_attribute``.

    Args:
      out: folder to write (created; existing files with the same names are replaced).
      attrs: :class:`texter_jax.world.WorldAttrs` of the N images.
      label_attribute: discrete attribute whose value index is the class (the label the
        classifier was trained on, e.g. ``"shape"``).
      truth_attributes: attribute(s) an explanation must name (the classifier's
        *measured* decision-critical attribute(s), from
        :func:`texter_jax.world.measure_interventions`); default ``label_attribute``.
      image_size, render_seed: as :func:`texter_jax.world.render`.

    Returns:
      ``out`` as a Path.
    """
    if label_attribute not in DISCRETE:
        raise ValueError(f"label_attribute must be one of {sorted(DISCRETE)}")
    out = Path(out)
    values = DISCRETE[label_attribute]
    names = [f"class_{i:02d}" for i in range(len(values))]
    labels = np.asarray(getattr(attrs, label_attribute))
    images = render(attrs, render_seed, image_size=image_size)
    truths = truth_values(truth_attributes or label_attribute, attrs)
    truth_images = {}
    for i in range(len(attrs)):
        rel = f"{names[labels[i]]}/{i:05d}.png"
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="PNG")
        write_bytes_atomic(out / rel, buf.getvalue())
        truth_images[rel] = [list(p) for p in truths[i]]
    phrases, meaning = concept_bank()
    write_text_atomic(out / "class_names.txt", "\n".join(names) + "\n")
    write_text_atomic(out / "bank.txt", "\n".join(phrases) + "\n")
    write_json_atomic(out / "classes.json", {n: v for n, v in zip(names, values, strict=True)})
    write_json_atomic(out / "truth.json", {
        "format": TRUTH_FORMAT, "label_attribute": label_attribute,
        "truth_attributes": list(np.atleast_1d(truth_attributes or label_attribute)),
        "meaning": {p: list(m) for p, m in meaning.items()}, "images": truth_images})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m texter_jax.world.eval_set", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--n", type=int, default=60, help="images")
    p.add_argument("--seed", type=int, default=0, help="attribute sampling seed")
    p.add_argument("--label", default="shape", help="attribute the classifier predicts")
    p.add_argument("--truth", nargs="*", default=None,
                   help="measured decision-critical attribute(s) (default: --label)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--render-seed", type=int, default=0)
    a = p.parse_args(argv)

    attrs = sample_attributes(a.seed, a.n)
    out = write_world_set(a.out, attrs, label_attribute=a.label, truth_attributes=a.truth,
                          image_size=a.image_size, render_seed=a.render_seed)
    print(f"wrote {a.n} images, class_names.txt, bank.txt and truth.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
