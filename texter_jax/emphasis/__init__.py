"""Stage 2 of TEXTER: emphasis by MACO feature visualisation, in pure JAX.

``spectrum`` (magnitude templates), ``param`` (phase -> image), ``crops`` (random
differentiable crops), ``nadam`` (torch-semantics NAdam), ``objectives`` (unit scores
over features or SAE codes), ``render`` (the ``lax.scan`` loop), ``retry`` (the
release's re-run rule, on device) and ``progress`` (step reports to the host, compiled
in only when someone listens).
"""

from texter_jax.emphasis.crops import add_noise, crop_and_resize, random_crops, sample_boxes
from texter_jax.emphasis.nadam import scale_by_torch_nadam, torch_nadam
from texter_jax.emphasis.objectives import (
                                            features_objective,
                                            logits_objective,
                                            sae_objective,
                                            unit_score,
                                            with_units,
)
from texter_jax.emphasis.param import (
                                            COLOR_CORRELATION_SQRT,
                                            init_phase,
                                            phase_to_image,
                                            spectrum_shape,
                                            standardize,
)
from texter_jax.emphasis.progress import report_every
from texter_jax.emphasis.render import (
                                            MacoConfig,
                                            MacoResult,
                                            final_objective,
                                            maco,
                                            maco_batch,
                                            maco_batch_program,
)
from texter_jax.emphasis.retry import RetryInfo, bucket_size, maco_batch_with_retry
from texter_jax.emphasis.spectrum import (
                                            default_spectrum,
                                            load_spectrum,
                                            power_law_spectrum,
                                            save_spectrum,
                                            spectrum_from_images,
)

__all__ = [
    "COLOR_CORRELATION_SQRT", "MacoConfig", "MacoResult", "RetryInfo", "add_noise",
    "crop_and_resize", "default_spectrum", "features_objective", "final_objective",
    "init_phase", "load_spectrum", "logits_objective", "maco", "maco_batch",
    "maco_batch_program", "maco_batch_with_retry", "report_every", "bucket_size",
    "phase_to_image", "power_law_spectrum", "random_crops", "sae_objective", "sample_boxes",
    "save_spectrum", "scale_by_torch_nadam", "spectrum_from_images", "spectrum_shape",
    "standardize", "torch_nadam", "unit_score", "with_units",
]
