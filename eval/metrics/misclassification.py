"""Misclassification analysis: the same scores on the images the classifier gets wrong.

TEXTER always explains the *predicted* class; on a misclassified image that is the wrong
class, and a faithful explanation should name the evidence that misled the classifier
(the paper's "misclassified cases", mean score 0.668, whose exact protocol cannot be
recovered here). The runner reports every metric on three subsets of the images: all,
correctly classified, misclassified.
"""

from __future__ import annotations

import numpy as np

SUBSETS = ("all", "correct", "misclassified")


def subset_masks(pred, label) -> dict[str, np.ndarray]:
    """``{"all", "correct", "misclassified"} -> bool [N]`` from predicted and true labels.

    Labels < 0 (unknown) count in "all" only.

    >>> m = subset_masks([0, 1, 2], [0, 2, -1])
    >>> m["correct"].tolist(), m["misclassified"].tolist()
    ([True, False, False], [False, True, False])
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    known = label >= 0
    return {"all": np.ones(pred.shape, bool), "correct": known & (pred == label),
            "misclassified": known & (pred != label)}
