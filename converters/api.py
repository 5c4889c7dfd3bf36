"""One entry point for every conversion: detect the layout, convert, save atomically.

    >>> import tempfile, torch, torchvision
    >>> from texter_jax.converters.api import convert
    >>> from texter_jax.io.checkpoints import load_model
    >>> d = tempfile.mkdtemp()
    >>> torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), f"{d}/r18.pth")
    >>> model, variables = load_model(convert(f"{d}/r18.pth", f"{d}/resnet18"))
    >>> model.family, model.feature_dim, model.num_classes
    ('resnet', 512, 10)

Layouts and the converter function behind each (module, function):
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from texter_jax.converters.mapping import ConversionError, Converted
from texter_jax.converters.state_dict import Source, SourceError, nonfinite_tensors, read_source

# layout name -> (module, function). Two-file layouts (DINO) take `head=`.
LAYOUTS: dict[str, tuple[str, str]] = {
    "torchvision-resnet": ("texter_jax.converters.resnet", "convert_torchvision_resnet"),
    "hf-resnet": ("texter_jax.converters.resnet", "convert_hf_resnet"),
    "dino-resnet": ("texter_jax.converters.resnet", "convert_dino_resnet"),
    "torchvision-vit": ("texter_jax.converters.vit", "convert_torchvision_vit"),
    "hf-vit": ("texter_jax.converters.vit", "convert_hf_vit"),
    "dino-vit": ("texter_jax.converters.vit", "convert_dino_vit"),
    "hf-clip": ("texter_jax.converters.clip", "convert_hf_clip"),
    "openai-clip": ("texter_jax.converters.clip", "convert_openai_clip"),
    "efficientnet-lite": ("texter_jax.converters.efficientnet", "convert_efficientnet_lite"),
}
NEEDS_HEAD = ("dino-resnet", "dino-vit")
# A checkpoint this many keys away from a layout's table is reported as that layout.
MAX_KEY_PROBLEMS = 8
# Modules whose `detect_layout(keys)` is asked, in order.
_DETECTORS = ("texter_jax.converters.clip", "texter_jax.converters.vit",
              "texter_jax.converters.resnet", "texter_jax.converters.efficientnet")


def detect_layout(source: Source) -> str:
    """Names the layout of ``source`` from its keys (and HF config when present)."""
    keys = list(source.state_dict)
    found = []
    for module_name in _DETECTORS:
        module = importlib.import_module(module_name)
        layout = module.detect_layout(keys)
        if layout:
            found.append(layout)
    if len(found) == 1:
        return found[0]
    sample = ", ".join(keys[:8])
    if not found:
        near = nearest_layout(source)
        if near is not None:
            layout, error = near
            raise ConversionError(
                f"{source.path} looks like layout {layout} with a few keys that do not fit "
                f"(a damaged or edited checkpoint?); {error}") from error
        raise ConversionError(
            f"cannot recognise the architecture of {source.path} (first keys: {sample}). "
            f"Supported layouts: {', '.join(LAYOUTS)}; pass --layout to choose one.")
    raise ConversionError(
        f"{source.path} matches several layouts ({', '.join(found)}); pass --layout")


def nearest_layout(source: Source, most: int = MAX_KEY_PROBLEMS
                   ) -> tuple[str, ConversionError] | None:
    """The layout ``source`` misses by a few keys, with that layout's own report, or None.

    Each single-file layout is tried. It counts when its whole key table was checked and
    at most ``most`` keys are missing or unexpected (no shape mismatch), or when the
    conversion stopped at a missing key the architecture is read from (one per 20 keys
    of the file at most) and the layout's detector recognises the keys once it is added
    back. The fewest problems win.
    """
    keys = list(source.state_dict)
    best = None
    for layout in LAYOUTS:
        if layout in NEEDS_HEAD:
            continue
        module_name, fn_name = LAYOUTS[layout]
        module = importlib.import_module(module_name)
        try:
            getattr(module, fn_name)(source)
        except ConversionError as e:
            n = len(e.missing) + len(e.unexpected)
            if e.mismatched or not 0 < n <= most:
                continue
            # a key the architecture is read from: only a few, relative to the file's
            # size, and the layout must be recognised once they are there
            if not e.whole_table and (e.unexpected or len(e.missing) > max(1, len(keys) // 20)
                                      or module.detect_layout(keys + e.missing) != layout):
                continue
            if best is None or n < best[0]:
                best = (n, layout, e)
        except Exception:  # the layout's shape reading fails outright: not this layout
            continue
    return None if best is None else best[1:]


def convert_source(source: Source, *, layout: str | None = None,
                   head: Source | None = None, **options: Any) -> Converted:
    """Converts already-read weights; returns the Flax variables and config."""
    if layout is None:
        layout = detect_layout(source)
        if head is not None and layout in ("torchvision-resnet",):
            layout = "dino-resnet"
    if layout not in LAYOUTS:
        raise ConversionError(
            f"unknown layout {layout!r}; supported: {', '.join(LAYOUTS)}")
    module_name, fn_name = LAYOUTS[layout]
    fn = getattr(importlib.import_module(module_name), fn_name)
    accepted = inspect.signature(fn).parameters
    given = {k: v for k, v in options.items() if v is not None}
    unused = [k for k in given if k not in accepted]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise ConversionError(f"layout {layout} takes no {flags} (the weights say it all)")
    if layout in NEEDS_HEAD:
        if head is None:
            raise ConversionError(f"layout {layout} needs a linear head file (--head)")
        return fn(source, head, **given)
    return fn(source, **given)


def convert(source: str | Path, out_dir: str | Path, *, layout: str | None = None,
            head: str | Path | None = None, overwrite: bool = False,
            allow_pickle: bool = False, allow_nonfinite: bool = False,
            **options: Any) -> Path:
    """Reads ``source``, converts it and writes a texter_jax model folder at ``out_dir``.

    Args:
      source: a .pth/.pt/.bin/.safetensors file, an HF model folder, or an HF model id
        present in the local HF cache (never downloaded).
      out_dir: output folder (``texter_config.json`` + Orbax ``variables/``); nothing is
        written there if the conversion fails.
      layout: force a layout (see ``LAYOUTS``); detected from the keys otherwise.
      head: linear-head weights file for DINO backbones.
      overwrite: replace an existing ``out_dir``.
      allow_pickle: unpickle whole-module files (runs code from them; see
        :func:`texter_jax.converters.state_dict.load_torch_file`).
      allow_nonfinite: convert weights holding NaN / inf (an error otherwise, naming them).
      **options: settings the weights cannot reveal, passed to the layout's converter
        (``num_classes``, ``num_heads``, ``text_heads``, ``activation``); None means
        unset, and a set option that the layout does not take is an error.

    Returns:
      The absolute output path.
    """
    from texter_jax.io.checkpoints import save_model

    src = read_source(source, allow_pickle=allow_pickle)
    head_src = read_source(head, allow_pickle=allow_pickle) if head is not None else None
    for part in (src, head_src):
        bad = nonfinite_tensors(part.state_dict) if part is not None else []
        if bad:
            listed = ", ".join(f"{k} ({n} values)" for k, n in bad[:6])
            more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
            if not allow_nonfinite:
                raise ConversionError(
                    f"{part.path}: {len(bad)} tensor(s) hold NaN or infinite values: "
                    f"{listed}{more}; the checkpoint is damaged (or diverged in training). "
                    "Pass --allow-nonfinite to convert it anyway")
            print(f"warning: {part.path}: non-finite values kept in {listed}{more}",
                  file=sys.stderr)
    converted = convert_source(src, layout=layout, head=head_src, **options)
    extra_files: list[Path] = []
    if converted.family == "clip" and Path(str(source)).is_dir():
        from texter_jax.converters.clip import tokenizer_files

        extra_files = list(tokenizer_files(Path(str(source))))
    provenance = {"path": str(Path(str(source)).absolute()) if Path(str(source)).exists()
                  else str(source), "layout": converted.layout}
    if head is not None:
        provenance["head"] = str(Path(head).absolute())
    try:
        import torch

        provenance["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return save_model(out_dir, converted.family, converted.config, converted.variables,
                      source=provenance, overwrite=overwrite, extra_files=extra_files)


__all__ = ["convert", "convert_source", "detect_layout", "LAYOUTS", "ConversionError",
           "SourceError"]
