"""Adversarial active learning: query the unlabelled points closest to the decision boundary.

Pool-based active learning (notebook 09, the lecture's "Applications"): a model trained on a few
labelled points chooses which points of an unlabelled pool an oracle labels next; it is
retrained, and chooses again. A *query rule* scores every unlabelled point (lower = ask first):

- ``"dfal"``: the l2 norm of the DeepFool perturbation (Moosavi-Dezfooli et al. 2016), an
  estimate of the distance to the nearest decision boundary. Ducoffe & Precioso 2018,
  "Adversarial Active Learning for Deep Networks: a Margin Based Approach" (arXiv:1802.09841),
  query the points with the smallest one (their DFAL) and also train on the adversarial
  examples themselves, with the label of the point they came from (``add_adversarial=True``).
- ``"margin"``: the softmax margin p_(1) - p_(2), the gap between the two most probable
  classes (uncertainty sampling, Scheffer et al. 2001).
- ``"entropy"``: minus the entropy of the softmax (max-entropy sampling, Settles 2009).
- ``"random"``: uniform random scores, the baseline every rule must beat.

``select_queries`` is the ranking step they share: the ``k`` unlabelled points with the smallest
scores, nearest first, ties broken by the lower index. ``active_learning_curve`` runs the whole
loop and records test accuracy against the number of labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import attacks
from .data import Dataset
from .evaluation import accuracy, predict
from .models import build_model
from .training import Standard, seeded, train
from .training.loop import _check_int

__all__ = [
    "STRATEGIES",
    "deepfool_distance",
    "softmax_margin",
    "entropy_score",
    "select_queries",
    "query_dfal",
    "active_learning_curve",
    "area_under_curve",
]

STRATEGIES = ("random", "entropy", "margin", "dfal")


def deepfool_distance(
    model: nn.Module,
    x: Tensor,
    *,
    candidates: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
) -> Tensor:
    """Per point, the l2 norm of its DeepFool perturbation: how far the decision boundary is.

    ``||x_adv - x||_2`` for ``x_adv`` from ``course_adv.attacks.deepfool`` (Moosavi-Dezfooli et
    al. 2016, Algorithm 2), one value per row of ``x``, shape (N,). For a linear classifier with
    ``overshoot=0`` it is the exact distance to the nearest boundary (plus DeepFool's 1e-4
    push), ``min_k |f_k - f_k0| / ||w_k - w_k0||_2``; for a network it is the distance along the
    linearised path, the margin Ducoffe & Precioso 2018 rank the pool by. The model runs in
    eval mode and gets its mode back; ``x`` is not changed.
    """
    _, norms = attacks.deepfool(
        model, x, candidates=candidates, overshoot=overshoot, max_iter=max_iter
    )
    return norms


def softmax_margin(model: nn.Module, x: Tensor) -> Tensor:
    """Per point, p_(1) - p_(2): the gap between the two largest softmax probabilities, (N,)."""
    top2 = F.softmax(predict(model, x), dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def entropy_score(model: nn.Module, x: Tensor) -> Tensor:
    """Per point, minus the entropy of the softmax, (N,): lowest for the most uncertain point."""
    logp = F.log_softmax(predict(model, x), dim=1)
    return (logp.exp() * logp).sum(1)


def select_queries(scores: Tensor, labelled: Tensor, k: int) -> Tensor:
    """The ``k`` unlabelled indices with the smallest ``scores``, smallest first (int64, (k,)).

    ``scores``: one finite value per pool point, shape (N,); ``labelled``: the pool indices
    already labelled (int64, any order, may be empty), never chosen again. Ties go to the lower
    index (a stable sort), so the choice is deterministic. Neither input is changed.
    """
    if not isinstance(scores, Tensor) or scores.ndim != 1 or not scores.is_floating_point():
        raise TypeError("scores must be a 1-D float tensor, one score per pool point")
    if not torch.isfinite(scores).all():
        raise ValueError("scores must be finite (no NaN or infinity)")
    free = _free(len(scores), labelled, scores.device)
    if not isinstance(k, Integral) or isinstance(k, bool) or not 0 <= k <= int(free.sum()):
        raise ValueError(
            f"k must be an int in [0, {int(free.sum())}] (unlabelled points), got {k!r}"
        )
    index = free.nonzero().squeeze(1)  # increasing, so a stable sort breaks ties by index
    order = torch.sort(scores[index], stable=True).indices
    return index[order[:k]]


def query_dfal(model: nn.Module, pool: Tensor, labelled: Tensor, k: int, **deepfool_kw) -> Tensor:
    """DFAL's query (Ducoffe & Precioso 2018): the ``k`` unlabelled pool points with the smallest
    DeepFool distance (``deepfool_distance``), nearest first, ties to the lower index. DeepFool
    runs on the unlabelled points only; ``deepfool_kw`` go to ``attacks.deepfool``."""
    free = _free(len(pool), labelled, pool.device)
    scores = torch.zeros(len(pool), dtype=pool.dtype, device=pool.device)  # labelled: never chosen
    if free.any():
        scores[free] = deepfool_distance(model, pool[free], **deepfool_kw)
    return select_queries(scores, labelled, k)


def _free(n: int, labelled: Tensor, device: torch.device) -> Tensor:
    """The mask of pool points not in ``labelled`` (checked: 1-D integer indices in [0, n))."""
    if (
        not isinstance(labelled, Tensor)
        or labelled.ndim != 1
        or labelled.is_floating_point()
        or labelled.dtype == torch.bool
    ):
        raise TypeError(
            "labelled must be a 1-D integer tensor of pool indices, e.g. torch.tensor([3, 7])"
        )
    if len(labelled) and (labelled.min() < 0 or labelled.max() >= n):
        raise ValueError(f"labelled must hold pool indices in [0, {n - 1}]")
    free = torch.ones(n, dtype=torch.bool, device=device)
    free[labelled.to(device)] = False
    return free


def _scores(strategy: str, model: nn.Module, x: Tensor, generator: torch.Generator, **kw):
    """(scores, x_adv or None) for the candidate points ``x``; lower = query first."""
    if strategy == "random":
        return torch.rand(len(x), generator=generator).to(x), None
    if strategy == "entropy":
        return entropy_score(model, x), None
    if strategy == "margin":
        return softmax_margin(model, x), None
    x_adv, norms = attacks.deepfool(model, x, **kw)
    return norms, x_adv


def active_learning_curve(
    strategy: str,
    data: Dataset,
    *,
    seed: int,
    initial: int = 20,
    batch: int = 20,
    rounds: int = 10,
    steps: int = 150,
    subset: int | None = 1000,
    add_adversarial: bool = False,
    model_fn: Callable[[], nn.Module] | None = None,
    lr: float = 1e-3,
    deepfool_kw: dict | None = None,
) -> dict:
    """Pool-based active learning with one query rule; test accuracy after every round.

    The pool is ``data.x_train`` (its labels play the oracle), accuracy is measured on
    ``data.x_test``. Round 0 trains on ``initial`` pool points drawn at random (seeded); each
    of the ``rounds`` rounds then scores the unlabelled points with ``strategy`` (one of
    ``STRATEGIES``), labels the ``batch`` lowest (``select_queries``), and retrains a fresh
    model from the same seeded initial weights for about ``steps`` Adam steps of fixed batch
    size ``initial`` (``course_adv.training.train``). ``subset``: score only this many
    unlabelled points per round, a fresh seeded random draw each round, to keep DeepFool
    cheap on a CPU; None scores the whole pool. ``add_adversarial``: with
    ``"dfal"``, also train on the DeepFool examples of the queried points, with their labels
    (Ducoffe & Precioso 2018). ``model_fn`` builds the model (default: an MLP, 1 hidden layer
    of 128 units); ``deepfool_kw`` go to ``attacks.deepfool``.

    Returns ``{"labels": [...], "accuracy": [...], "queried": Tensor}``: labels used and test
    accuracy per round (``rounds + 1`` entries), and the pool indices in the order labelled.
    The same arguments give the same curve on the same machine; ``data`` is not changed.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if add_adversarial and strategy != "dfal":
        raise ValueError(
            "add_adversarial=True needs strategy='dfal' (it trains on DeepFool examples)"
        )
    for name, value in (("initial", initial), ("batch", batch), ("steps", steps)):
        _check_int(name, value, minimum=1)
    _check_int("rounds", rounds, minimum=0)
    if subset is not None and (not isinstance(subset, Integral) or subset < batch):
        raise ValueError(f"subset must be None or an int >= batch ({batch}), got {subset!r}")
    pool, oracle = data.x_train, data.y_train
    if initial + rounds * batch > len(pool):
        raise ValueError(f"initial + rounds * batch must be at most the pool size {len(pool)}")
    model_fn = model_fn or (lambda: build_model("mlp", hidden=128, depth=1))
    draw = torch.Generator().manual_seed(seed)
    labelled = torch.randperm(len(pool), generator=draw)[:initial]
    extra_x = pool[:0]  # adversarial examples added to the training set (DFAL option)
    extra_y = oracle[:0]
    labels, accs = [], []
    for r in range(rounds + 1):
        with seeded(seed):
            model = model_fn()
        x_train = torch.cat([pool[labelled], extra_x])
        y_train = torch.cat([oracle[labelled], extra_y])
        epochs = max(1, math.ceil(steps / (len(x_train) // initial)))
        train(model, x_train, y_train, Standard(), epochs=epochs, lr=lr, batch_size=initial,
              seed=seed, device="cpu", progress=False)  # fmt: skip
        labels.append(len(labelled))
        accs.append(accuracy(model, data.x_test, data.y_test))
        if r == rounds:
            break
        free = torch.ones(len(pool), dtype=torch.bool)
        free[labelled] = False
        candidates = free.nonzero().squeeze(1)
        if subset is not None and subset < len(candidates):
            candidates = candidates[torch.randperm(len(candidates), generator=draw)[:subset]]
        scores, x_adv = _scores(strategy, model, pool[candidates], draw, **(deepfool_kw or {}))
        chosen = select_queries(scores, torch.zeros(0, dtype=torch.long), batch)
        labelled = torch.cat([labelled, candidates[chosen]])
        if add_adversarial:
            extra_x = torch.cat([extra_x, x_adv[chosen]])
            extra_y = torch.cat([extra_y, oracle[candidates[chosen]]])
    return {"labels": labels, "accuracy": accs, "queried": labelled}


def area_under_curve(curve: dict) -> float:
    """The normalised area under a learning curve: the mean test accuracy over its rounds.

    With rounds evenly spaced in labels this is the trapezoid-free area divided by the budget,
    a number in [0, 1] that rewards a rule for being good early as well as late.
    """
    accs = curve["accuracy"]
    if not accs:
        raise ValueError("curve has no rounds")
    return sum(accs) / len(accs)
