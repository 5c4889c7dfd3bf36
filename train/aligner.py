"""Linear aligner: classifier features z [N, d] -> CLIP image embeddings [N, e].

The fitted map is ``h = z @ W.T + b`` with ``W`` float32 [e, d] and ``b`` float32 [e]
(the release file layout, see TEXTER_SPEC "The linear aligner").

Two solvers:

* ``"sgd"``: the release recipe (``text_to_concept/linear_aligner.py``) in Optax. Both
  sides are multiplied by ``sqrt(4.5 / var)``, where ``var`` is ONE scalar per side: the
  variance of all entries pooled (``mean(x**2) - mean(x)**2``); nothing is mean-centred.
  Then least squares with bias by torch-style SGD (lr 0.01, momentum 0.9, coupled L2
  weight decay 5e-4 on W and b, batch 100, 6 epochs, reshuffled every epoch), and the
  scaling is undone on W and b. The release's schedule is ``CosineAnnealingLR(T_max=200)``
  stepped once per *epoch*, so over 6 epochs the rate only falls from 0.01 to 0.00998;
  ``schedule="release"`` reproduces that, ``schedule="cosine"`` decays to 0 over all steps.
* ``"closed_form"``: exact ridge regression with bias, accumulated in float64 over row
  chunks (so memory-mapped inputs stream) and solved with numpy. The default whenever the
  d x d system fits memory (``method="auto"``).

Note: the release undoes the scaling with ``b * c1 / c2``; the algebra gives ``b / c2``
(``c2 y ~ W_s c1 x + b_s``). We use ``b / c2`` unless ``bias_unscale="release"``.

References:
  Moayeri et al., "Text-To-Concept (and Back) via Cross-Model Alignment", ICML 2023,
  https://arxiv.org/abs/2305.06386
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from texter_jax.aligner import Aligner
from texter_jax.batching import BATCH_AXIS, Placement, local_placement
from texter_jax.types import PRNGKey

# Release constants (text_to_concept/linear_aligner.py).
TARGET_VARIANCE = 4.5
RELEASE_COSINE_T_MAX_EPOCHS = 200
# Closed form when the float64 d x d system (plus a solve copy and d x e) fits this.
CLOSED_FORM_MAX_BYTES = 4 << 30
_CHUNK_ROWS = 8192


def pooled_variance(x: np.ndarray) -> float:
    """Variance of all entries of ``x`` pooled (the release's ``get_variance``), float64."""
    s = s2 = 0.0
    n = 0
    for lo in range(0, x.shape[0], _CHUNK_ROWS):
        c = np.asarray(x[lo:lo + _CHUNK_ROWS], np.float64)
        s += c.sum()
        s2 += np.square(c).sum()
        n += c.size
    mean = s / n
    return float(s2 / n - mean * mean)


def regression_metrics(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray
                       ) -> dict[str, float]:
    """MSE, R^2 (release and centred definitions) and mean cosine of ``x W^T + b`` vs ``y``.

    Args:
      W: [e, d]; b: [e]; x: [N, d]; y: [N, e]. Computed in float64 over row chunks.
    """
    n, e = y.shape
    sse = 0.0
    cos_sum = 0.0
    for lo in range(0, n, _CHUNK_ROWS):
        xc = np.asarray(x[lo:lo + _CHUNK_ROWS], np.float64)
        yc = np.asarray(y[lo:lo + _CHUNK_ROWS], np.float64)
        pred = xc @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
        sse += np.square(pred - yc).sum()
        denom = np.linalg.norm(pred, axis=1) * np.linalg.norm(yc, axis=1)
        cos_sum += float(np.sum(np.sum(pred * yc, axis=1) / np.maximum(denom, 1e-12)))
    y_mean = np.zeros(e)
    for lo in range(0, n, _CHUNK_ROWS):
        y_mean += np.asarray(y[lo:lo + _CHUNK_ROWS], np.float64).sum(0)
    y_mean /= n
    sst = 0.0
    for lo in range(0, n, _CHUNK_ROWS):
        sst += np.square(np.asarray(y[lo:lo + _CHUNK_ROWS], np.float64) - y_mean).sum()
    mse = sse / (n * e)
    return {"mse": float(mse),
            "r2": float(1.0 - mse / max(pooled_variance(y), 1e-30)),
            "r2_centred": float(1.0 - sse / max(sst, 1e-30)),
            "cosine": float(cos_sum / n)}


# ----------------------------------------------------------------------------- closed form

def fit_closed_form(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-6
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Exact ridge regression with an unpenalised bias, in float64.

    Solves ``(Cxx + lam I) W^T = Cxy`` with ``Cxx``/``Cxy`` the centred (co)variances and
    ``lam = ridge * mean(diag(Cxx))`` (relative, so the default is scale-free and only
    guards dead / collinear feature dimensions), then ``b = mean(y) - W mean(x)``.

    Args:
      x: [N, d] features (any float dtype; memory-mapped arrays stream in chunks).
      y: [N, e] targets.
      ridge: relative ridge strength (>= 0).

    Returns:
      ``(W float32 [e, d], b float32 [e])``.
    """
    n, d = x.shape
    e = y.shape[1]
    mx, my = np.zeros(d), np.zeros(e)
    for lo in range(0, n, _CHUNK_ROWS):  # two passes: centring before the products keeps
        mx += np.asarray(x[lo:lo + _CHUNK_ROWS], np.float64).sum(0)  # float64 accurate
        my += np.asarray(y[lo:lo + _CHUNK_ROWS], np.float64).sum(0)
    mx /= n
    my /= n
    cxx = np.zeros((d, d))
    cxy = np.zeros((d, e))
    for lo in range(0, n, _CHUNK_ROWS):
        xc = np.asarray(x[lo:lo + _CHUNK_ROWS], np.float64) - mx
        yc = np.asarray(y[lo:lo + _CHUNK_ROWS], np.float64) - my
        cxx += xc.T @ xc
        cxy += xc.T @ yc
    cxx /= n
    cxy /= n
    lam = ridge * max(float(np.trace(cxx)) / d, 1e-30)
    cxx[np.diag_indices(d)] += lam
    wt = np.linalg.solve(cxx, cxy)  # [d, e]
    b = my - mx @ wt
    return wt.T.astype(np.float32), b.astype(np.float32)


# ----------------------------------------------------------------------------- SGD

def _schedule(kind: str, lr: float, steps_per_epoch: int, total_steps: int) -> Callable:
    if kind == "release":
        # CosineAnnealingLR(T_max=200) stepped per epoch, as the release does.
        def sched(count):
            epoch = count // steps_per_epoch
            return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / RELEASE_COSINE_T_MAX_EPOCHS))
        return sched
    if kind == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1))
    if kind == "constant":
        return optax.constant_schedule(lr)
    raise ValueError(f"schedule must be 'release', 'cosine' or 'constant', got {kind!r}")


def sgd_optimizer(schedule, *, momentum: float = 0.9, weight_decay: float = 5e-4
                  ) -> optax.GradientTransformation:
    """torch ``SGD(momentum, weight_decay)``: ``g += wd * p``, ``buf = m buf + g``,
    ``p -= lr * buf`` (dampening 0, first ``buf = g``), on every parameter."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(schedule, momentum=momentum))


def _make_epoch_fn(tx: optax.GradientTransformation, placement: Placement):
    """One epoch, data parallel over ``placement``: every device holds the (scaled)
    features and targets and the parameters; each takes its share of every batch's rows
    and the gradients are summed over the devices (``psum``), so the step equals one
    device's on the whole batch."""
    def local_epoch(params, opt_state, x, y, idx, mask):
        # idx / mask: this device's rows of every batch, [rows, steps].
        def step(carry, batch):
            params, opt_state = carry
            bidx, mb = batch
            count = jax.lax.psum(jnp.sum(mb), BATCH_AXIS)

            def loss_fn(p):
                pred = x[bidx] @ p["W"].T + p["b"]
                sq = jnp.sum(jnp.square(pred - y[bidx]), axis=1) * mb
                # torch MSELoss: mean over the (possibly short) last batch's real rows.
                return jnp.sum(sq) / (count * y.shape[1])

            loss, grads = jax.value_and_grad(loss_fn)(params)
            loss, grads = jax.lax.psum((loss, grads), BATCH_AXIS)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                                   (idx.T, mask.T))
        return params, opt_state, jnp.mean(losses)

    parallel = jax.jit(placement.data_parallel(
        local_epoch, (False, False, False, False, True, True), out_batched=False))

    def run_epoch(params, opt_state, x, y, idx, mask):
        """idx / mask: int / float [steps, batch], batch a multiple of the devices."""
        idx, mask = placement.put_batch((idx.T, mask.T))
        return parallel(params, opt_state, x, y, idx, mask)

    run_epoch.program = parallel  # the jitted epoch (rows [batch, steps]), to inspect
    return run_epoch


def fit_sgd(x: np.ndarray, y: np.ndarray, *, key: PRNGKey, epochs: int = 6,
            batch_size: int = 100, lr: float = 0.01, momentum: float = 0.9,
            weight_decay: float = 5e-4, target_variance: float = TARGET_VARIANCE,
            schedule: str = "release", bias_unscale: str = "correct",
            verbose: bool = False) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The release's scaled least-squares SGD (see module docstring).

    Args:
      x: [N, d] features; y: [N, e] targets (loaded into device memory, float32).
      key: PRNG key for the torch-style init and the per-epoch shuffles.
      bias_unscale: ``"correct"`` (``b / c2``) or ``"release"`` (``b * c1 / c2``).

    Returns:
      ``(W float32 [e, d], b float32 [e], per-epoch mean batch losses in scaled units)``.
    """
    if bias_unscale not in ("correct", "release"):
        raise ValueError(f"bias_unscale must be 'correct' or 'release', got {bias_unscale!r}")
    n, d = x.shape
    e = y.shape[1]
    c1 = math.sqrt(target_variance / max(pooled_variance(x), 1e-30))
    c2 = math.sqrt(target_variance / max(pooled_variance(y), 1e-30))
    xs = jnp.asarray(np.asarray(x, np.float32) * np.float32(c1))
    ys = jnp.asarray(np.asarray(y, np.float32) * np.float32(c2))

    k_init_w, k_init_b, k_shuffle = jax.random.split(key, 3)
    bound = 1.0 / math.sqrt(d)  # torch nn.Linear default init
    params = {"W": jax.random.uniform(k_init_w, (e, d), jnp.float32, -bound, bound),
              "b": jax.random.uniform(k_init_b, (e,), jnp.float32, -bound, bound)}
    steps = -(-n // batch_size)
    tx = sgd_optimizer(_schedule(schedule, lr, steps, steps * epochs),
                       momentum=momentum, weight_decay=weight_decay)
    opt_state = tx.init(params)
    placement = local_placement()
    run_epoch = _make_epoch_fn(tx, placement)
    xs, ys, params, opt_state = placement.put_replicated((xs, ys, params, opt_state))

    # Rows with mask 0 weigh nothing: the short last batch, and each batch padded to a
    # multiple of the device count.
    width = placement.round_up(batch_size)
    pad = steps * batch_size - n
    mask = np.ones(steps * batch_size, np.float32)
    if pad:
        mask[n:] = 0.0
    mask = np.pad(mask.reshape(steps, batch_size), ((0, 0), (0, width - batch_size)))
    losses = []
    for epoch in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(k_shuffle, epoch), n)
        idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(steps, batch_size)
        idx = jnp.pad(idx, ((0, 0), (0, width - batch_size)))
        params, opt_state, loss = run_epoch(params, opt_state, xs, ys, idx, mask)
        losses.append(float(loss))
        if verbose:
            print(f"aligner sgd epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    w_s = np.asarray(params["W"], np.float64)
    b_s = np.asarray(params["b"], np.float64)
    w = w_s * c1 / c2
    b = b_s * (c1 / c2 if bias_unscale == "release" else 1.0 / c2)
    return w.astype(np.float32), b.astype(np.float32), losses


# ----------------------------------------------------------------------------- entry point

def closed_form_fits(d: int, e: int, max_bytes: int = CLOSED_FORM_MAX_BYTES) -> bool:
    """Whether the float64 normal equations (d x d twice, d x e) fit ``max_bytes``."""
    return 8 * (2 * d * d + 2 * d * e) <= max_bytes


def fit_aligner(features: np.ndarray, targets: np.ndarray, *, key: PRNGKey,
                method: str = "auto", holdout: float = 0.1, ridge: float = 1e-6,
                closed_form_max_bytes: int = CLOSED_FORM_MAX_BYTES,
                **sgd_kwargs) -> Aligner:
    """Fits ``targets ~ features @ W.T + b`` and reports train / held-out metrics.

    Args:
      features: [N, d] classifier features.
      targets: [N, e] CLIP image embeddings of the same images (unnormalised, as the
        release trains on ``encode_image`` outputs).
      key: PRNG key (holdout split, SGD init and shuffles).
      method: ``"auto"`` (closed form when it fits ``closed_form_max_bytes``, else SGD),
        ``"closed_form"`` or ``"sgd"``.
      holdout: fraction of rows held out for metrics only (0 disables).
      ridge: relative ridge of the closed form (see :func:`fit_closed_form`).
      **sgd_kwargs: passed to :func:`fit_sgd` (``epochs``, ``batch_size``, ``lr``,
        ``schedule``, ``bias_unscale``, ``verbose`` ...).

    Returns:
      :class:`texter_jax.aligner.Aligner`; ``method`` says which solver ran.
    """
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"features [N, d] and targets [N, e] must pair up, got "
                         f"{features.shape} and {targets.shape}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    n, d = features.shape
    e = targets.shape[1]
    if method == "auto":
        method = "closed_form" if closed_form_fits(d, e, closed_form_max_bytes) else "sgd"
    if method not in ("closed_form", "sgd"):
        raise ValueError(f"method must be 'auto', 'closed_form' or 'sgd', got {method!r}")

    k_fit = jax.random.split(key)[1]
    train_idx, hold_idx = holdout_split(n, holdout, key)
    n_hold = hold_idx.size
    if n_hold:
        x_tr, y_tr = features[train_idx], targets[train_idx]
        x_ho, y_ho = features[hold_idx], targets[hold_idx]
    else:
        x_tr, y_tr, x_ho, y_ho = features, targets, None, None
    if x_tr.shape[0] < 2:
        raise ValueError(f"need at least 2 training rows, got {x_tr.shape[0]}")

    metrics: dict[str, Any] = {"n_train": int(x_tr.shape[0]), "n_holdout": int(n_hold)}
    if method == "closed_form":
        w, b = fit_closed_form(x_tr, y_tr, ridge=ridge)
        metrics["ridge"] = ridge
    else:
        w, b, losses = fit_sgd(x_tr, y_tr, key=k_fit, **sgd_kwargs)
        metrics["epoch_loss"] = losses
    metrics.update({f"train_{k}": v for k, v in regression_metrics(w, b, x_tr, y_tr).items()})
    if x_ho is not None:
        metrics.update({f"holdout_{k}": v
                        for k, v in regression_metrics(w, b, x_ho, y_ho).items()})
    return Aligner(w, b, metrics=metrics, method=method)


# ----------------------------------------------------------------------------- evaluation

def holdout_split(n: int, holdout: float, key) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, hold_idx)``, sorted int arrays: the split :func:`fit_aligner` uses
    for ``key`` (so callers can score the same held-out rows)."""
    k_split = jax.random.split(key)[0]
    n_hold = int(round(holdout * n))
    if not n_hold:
        return np.arange(n), np.zeros(0, np.int64)
    perm = np.asarray(jax.random.permutation(k_split, n))
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def aligner_zero_shot_accuracy(W, b, features, labels, class_text_emb,
                               *, batch_size: int = 4096) -> float:
    """Top-1 accuracy of zero-shot classification through the aligner.

    ``argmax_c cos(z W^T + b, t_c)`` (the release's ``ZeroShotClassifier``).

    Args:
      W: [e, d]; b: [e].
      features: [N, d] classifier features.
      labels: int [N] class indices into ``class_text_emb``.
      class_text_emb: [C, e] CLIP text embeddings of the class prompts (normalised here).

    Returns:
      Accuracy in [0, 1].
    """
    w = np.asarray(W, np.float32)
    bb = np.asarray(b, np.float32)
    t = np.asarray(class_text_emb, np.float32)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    correct = 0
    for lo in range(0, features.shape[0], batch_size):
        h = np.asarray(features[lo:lo + batch_size], np.float32) @ w.T + bb
        # Normalising h does not change the argmax; cosine only needs t normalised.
        correct += int(np.sum(np.argmax(h @ t.T, axis=1) == labels[lo:lo + batch_size]))
    return correct / max(len(labels), 1)
