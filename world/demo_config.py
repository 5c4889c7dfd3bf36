"""Settings of ``texter demo``, and its methods (JAX-free: ``texter demo --help`` reads the
defaults from here)."""

from __future__ import annotations

import dataclasses

from texter_jax.config import ExplainConfig, MacoConfig

# Method name -> (ExplainConfig overrides, uses the SAE). text2concept has no stage 2.
METHODS = ("texter", "texter-nosae", "text2concept", "texter-logit")
MACO_METHODS = {"texter": {"use_sae": True}, "texter-nosae": {"use_sae": False},
                "texter-logit": {"use_sae": False, "objective": "class_logit"},
                # TEXTER with MACO's classifier pass in bfloat16 (``--bf16``)
                "texter-bf16": {"use_sae": True, "compute_dtype": "bfloat16"}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Settings of one demo run (defaults: first run under 10 minutes on 2 CPU cores).

    Attributes:
      out: output folder (report.md, figures, cache/).
      image_size: side of the world's images (and of the classifiers' input).
      clip_steps: world-CLIP optimiser steps.
      train_images: classifier training images.
      feature_images: fresh images per classifier for the aligner and the SAE (each also
        seen once through a zoomed view for the aligner).
      explain_images: held-out images explained per classifier and method.
      ig_steps, k_neu: stage 1.
      canvas, maco_steps, maco_crops, map_crops: stages 2 and 3.
      preset: ``ExplainConfig.preset`` name for TEXTER's runs (``"fast"``: MACO's
        convergence stop; maco_steps must then be a multiple of its window, 32).
      spectrum: MACO's magnitude template: ``"world"`` (measured on renders) or
        ``"power_law"`` (the library default).
      control_canvases: value canvases per value in the reader controls.
      sae_expansion, sae_epochs, sae_batch: SAE shape and training.
      batch_size: images per explain_batch call.
      seed: root seed.
      figure_examples: examples per classifier in the figure grid.
      bf16: also run TEXTER with MACO's classifier pass in bfloat16 (``texter-bf16``)
        on the same images, reported next to float32.
      progress: show progress bars on stderr.
    """

    out: str = "texter_demo"
    image_size: int = 64
    clip_steps: int = 1200
    train_images: int = 8000
    feature_images: int = 3000
    explain_images: int = 32
    ig_steps: int = 100
    k_neu: int = 6
    canvas: int = 256
    maco_steps: int = 32
    maco_crops: int = 6
    map_crops: int = 6
    preset: str = "release"
    spectrum: str = "world"
    control_canvases: int = 8
    sae_expansion: int = 8
    sae_epochs: int = 10
    sae_batch: int = 128
    batch_size: int = 32
    seed: int = 0
    figure_examples: int = 3
    bf16: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.spectrum not in ("world", "power_law"):
            raise ValueError(f"spectrum must be 'world' or 'power_law', got {self.spectrum!r}")
        # fails now, not after training, if the preset cannot take these MACO steps
        ExplainConfig.preset(self.preset, maco=MacoConfig(canvas=self.canvas,
                                                          steps=self.maco_steps))

    def methods(self) -> tuple[str, ...]:
        """The methods this run explains with."""
        return METHODS + (("texter-bf16",) if self.bf16 else ())

    def tiny(self) -> DemoConfig:
        """A seconds-scale variant for CI: every stage runs on real data, small sizes."""
        return dataclasses.replace(
            self, image_size=32, clip_steps=30, train_images=256, feature_images=300,
            explain_images=4, ig_steps=16, canvas=64, maco_steps=4, maco_crops=2,
            map_crops=2, control_canvases=2, sae_expansion=2, sae_epochs=2, sae_batch=64,
            batch_size=4)
