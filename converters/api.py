"""One entry point for every conversion: detect the layout, convert, save atomically.

    >>> from converters.api import convert            # doctest: +SKIP
    >>> convert("resnet50.pth", "models/resnet50")     # doctest: +SKIP

Layouts and the converter function behind each (module, function):
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from converters.mapping import ConversionError, Converted
from converters.state_dict import Source, SourceError, read_source

# layout name -> (module, function). Two-file layouts (DINO) take `head=`.
LAYOUTS: dict[str, tuple[str, str]] = {
    "torchvision-resnet": ("converters.resnet", "convert_torchvision_resnet"),
    "hf-resnet": ("converters.resnet", "convert_hf_resnet"),
    "dino-resnet": ("converters.resnet", "convert_dino_resnet"),
    "torchvision-vit": ("converters.vit", "convert_torchvision_vit"),
    "hf-vit": ("converters.vit", "convert_hf_vit"),
    "dino-vit": ("converters.vit", "convert_dino_vit"),
    "hf-clip": ("converters.clip", "convert_hf_clip"),
    "openai-clip": ("converters.clip", "convert_openai_clip"),
    "efficientnet-lite": ("converters.efficientnet", "convert_efficientnet_lite"),
}
NEEDS_HEAD = ("dino-resnet", "dino-vit")
# Modules whose `detect_layout(keys)` is asked, in order.
_DETECTORS = ("converters.clip", "converters.vit", "converters.resnet",
              "converters.efficientnet")


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
        raise ConversionError(
            f"cannot recognise the architecture of {source.path} (first keys: {sample}). "
            f"Supported layouts: {', '.join(LAYOUTS)}; pass --layout to choose one.")
    raise ConversionError(
        f"{source.path} matches several layouts ({', '.join(found)}); pass --layout")


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
    if layout in NEEDS_HEAD:
        if head is None:
            raise ConversionError(f"layout {layout} needs a linear head file (--head)")
        return fn(source, head)
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
    return fn(source, **kwargs)


def convert(source: str | Path, out_dir: str | Path, *, layout: str | None = None,
            head: str | Path | None = None, overwrite: bool = False,
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
      **options: passed to the family converter when it accepts them (e.g. num_classes).

    Returns:
      The absolute output path.
    """
    from texter_jax.io.checkpoints import save_model

    src = read_source(source)
    head_src = read_source(head) if head is not None else None
    converted = convert_source(src, layout=layout, head=head_src, **options)
    extra_files: list[Path] = []
    if converted.family == "clip" and Path(str(source)).is_dir():
        from converters.clip import tokenizer_files

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
