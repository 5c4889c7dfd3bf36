"""Pure metric functions for textual explanations (JAX unless noted), one concept per file.

* :mod:`.clip_score` -- CLIP image/text cosine of the top-1 and top-K concepts;
* :mod:`.directions` -- concept text embeddings pulled back into feature space;
* :mod:`.directional` -- derivative of the class logit along a concept direction;
* :mod:`.curves` -- feature-space insertion / deletion curves and their AUC;
* :mod:`.misclassification` -- correct / misclassified subsets (numpy);
* :mod:`.hits` -- ground-truth hit@k on the procedural world (numpy, the world's scorer);
* :mod:`.rank_correlation` -- Spearman's rho for the sanity checks;
* :mod:`.bootstrap` -- percentile bootstrap confidence intervals.
"""

from texter_jax.eval.metrics.bootstrap import bootstrap_ci, bootstrap_table
from texter_jax.eval.metrics.clip_score import clip_scores
from texter_jax.eval.metrics.curves import (
                                 class_curve,
                                 curve_auc,
                                 curve_points,
                                 deletion_curve,
                                 insertion_curve,
                                 orthonormalize,
)
from texter_jax.eval.metrics.directional import class_logit_grad, directional_derivatives
from texter_jax.eval.metrics.directions import PULLBACKS, aligner_pullback, feature_directions
from texter_jax.eval.metrics.hits import hit_rates, hits_at_k
from texter_jax.eval.metrics.misclassification import SUBSETS, subset_masks
from texter_jax.eval.metrics.rank_correlation import rankdata, spearman

__all__ = [
    "PULLBACKS", "SUBSETS", "aligner_pullback", "bootstrap_ci", "bootstrap_table",
    "class_curve", "class_logit_grad", "clip_scores", "curve_auc", "curve_points",
    "deletion_curve", "directional_derivatives", "feature_directions", "hit_rates",
    "hits_at_k", "insertion_curve", "orthonormalize", "rankdata", "spearman",
    "subset_masks",
]
