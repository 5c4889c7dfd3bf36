"""TEXTER's settings as frozen dataclasses with the release's defaults: stage 2
(:class:`MacoConfig`) and the whole method (:class:`ExplainConfig`, named presets).

Plain Python on purpose: command-line parsers read their defaults from here without
loading JAX. The stages re-export them (``texter_jax.emphasis.MacoConfig``,
``texter_jax.explain.ExplainConfig``).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class MacoConfig:
    """MACO hyperparameters; defaults are the release's.

    Attributes:
      canvas: S, side of the optimised square image.
      steps: optimisation steps.
      learning_rate, b1, b2, eps, momentum_decay: torch NAdam settings.
      n_crops: random crops per step.
      crop_size: side of each crop fed to the objective. None (default): the explained
        classifier's ``image_size``, filled in by ``explain_batch`` (see
        :meth:`for_image_size`); set it only for a model that takes other sizes.
      side_range: crop side, uniform in this range, as a fraction of S (the release's
        effective 0.25-0.30, from its box_size (0.20, 0.25); see ``crops.py``).
      centre_std: std of each crop centre around 0.5, per axis.
      clip_boxes: keep boxes inside the canvas (the release's MACO loop does not).
      noise: scale of the Gaussian and of the uniform noise added to crops.
      phase_std: std of the random initial phase.
      stop_rtol: None (the release: always ``steps`` steps) or the convergence rule's
        tolerance: the steps run in windows of ``stop_window``; after at least
        ``stop_min_steps`` steps, MACO stops at the end of the first window whose mean
        objective exceeds the previous window's by no more than ``stop_rtol`` times its
        magnitude. Later trace entries are NaN (see :func:`final_objective`).
      stop_window, stop_min_steps: see ``stop_rtol``; ``steps`` must be a multiple of
        ``stop_window`` when the rule is on.
    """

    canvas: int = 1280
    steps: int = 512
    learning_rate: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum_decay: float = 4e-3
    n_crops: int = 6
    crop_size: int | None = None
    side_range: tuple[float, float] = (0.25, 0.30)
    centre_std: float = 0.15
    clip_boxes: bool = False
    noise: float = 0.05
    phase_std: float = 1.0
    stop_rtol: float | None = None
    stop_window: int = 32
    stop_min_steps: int = 64

    def __post_init__(self):
        object.__setattr__(self, "side_range", tuple(float(s) for s in self.side_range))
        lo, hi = self.side_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"side_range must satisfy 0 < low <= high <= 1, got {self.side_range}")
        if (self.canvas < 2 or self.steps < 1 or self.n_crops < 1
                or (self.crop_size is not None and self.crop_size < 1)):
            raise ValueError("MacoConfig needs canvas >= 2, steps >= 1, n_crops >= 1 and "
                             f"crop_size None or >= 1, got {self}")
        if self.stop_rtol is not None and (self.stop_rtol < 0 or self.stop_window < 1
                                           or self.steps % self.stop_window):
            raise ValueError(f"with stop_rtol, steps ({self.steps}) must be a multiple of "
                             f"stop_window ({self.stop_window}) and stop_rtol >= 0")

    def for_image_size(self, image_size: int) -> MacoConfig:
        """This config with ``crop_size`` None replaced by ``image_size`` (the
        classifier's input side); an explicit ``crop_size`` is kept."""
        if self.crop_size is not None:
            return self
        return dataclasses.replace(self, crop_size=int(image_size))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExplainConfig:
    """TEXTER hyperparameters; defaults are the release's.

    Attributes:
      k_neu: contributing units per image (release: 6).
      ig_steps: integration steps of IG (release: 100).
      ig_method: IG quadrature; the release calls captum with its default,
        Gauss-Legendre.
      use_sae: score and emphasise TopK SAE codes (release default) instead of features.
      ranked_units: how many ranked units to keep for the "empty transparency, add one
        more unit" retry (>= k_neu).
      maco: stage-2 settings.
      map_crops: crops of the concept image per image in stage 3 (release: 6).
      compute_dtype: ``"bfloat16"`` casts the crops and the classifier's floating
        weights to bf16 for MACO's forward/backward; None keeps float32 everywhere. A
        model that casts back to its own dtype (a Keras float32 dtype policy, a Flax
        module's ``dtype=``) still runs in float32: ``explain_batch`` warns once
        (:class:`~texter_jax.classifier_check.ComputeDtypeWarning`).
      max_retries: bound on the MACO retries per image (the release has none).
      unit_ranking: ``"abs"`` ranks units by ``|attribution|`` as the release does (units
        that argue *against* the class can be selected); ``"signed"`` keeps the largest
        positive contributions only.
      objective: what stage 2 maximises: ``"units"`` (TEXTER: the selected units) or
        ``"class_logit"`` (an ablation: the predicted class's logit, the classic class
        visualisation; stage 1 still runs and is reported).
      map_whole_canvas: stage 3 also reads the whole blended canvas, resized, as one
        more view beside the crops (off in the release).
    """

    k_neu: int = 6
    ig_steps: int = 100
    ig_method: str = "gausslegendre"
    use_sae: bool = True
    ranked_units: int = 16
    maco: MacoConfig = MacoConfig()
    map_crops: int = 6
    compute_dtype: str | None = None
    max_retries: int = 8
    unit_ranking: str = "abs"
    objective: str = "units"
    map_whole_canvas: bool = False

    def __post_init__(self):
        if self.objective not in ("units", "class_logit"):
            raise ValueError(f"objective must be 'units' or 'class_logit', got "
                             f"{self.objective!r}")
        if self.unit_ranking not in ("abs", "signed"):
            raise ValueError(f"unit_ranking must be 'abs' or 'signed', got {self.unit_ranking!r}")
        if self.k_neu < 1 or self.ranked_units < self.k_neu:
            raise ValueError(f"need 1 <= k_neu ({self.k_neu}) <= ranked_units "
                             f"({self.ranked_units})")

    @classmethod
    def preset(cls, name: str, **overrides) -> ExplainConfig:
        """A named preset: ``"release"`` (the defaults) or ``"fast"``, then ``overrides``.

        ``"fast"`` keeps every release setting and adds MACO's convergence stop
        (:class:`MacoConfig`: windows of 32 steps, at least 128, stop when a window's
        mean objective gains no more than 1 % on the previous one; at most 512 steps).
        Its effect on the explanations is measured by ``bench/fast_preset.py``
        (docs/measurements.md).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        maco = dataclasses.replace(overrides.pop("maco", MacoConfig()), **PRESETS[name])
        return cls(maco=maco, **overrides)

    def for_image_size(self, image_size: int) -> ExplainConfig:
        """This config with MACO's crop size resolved (:meth:`MacoConfig.for_image_size`)."""
        maco = self.maco.for_image_size(image_size)
        return self if maco is self.maco else dataclasses.replace(self, maco=maco)


# Presets by name: the MacoConfig fields each one sets over the release's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "release": {},
    "fast": {"stop_rtol": 0.01, "stop_window": 32, "stop_min_steps": 128},
}
