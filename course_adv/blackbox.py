"""The black-box attack through a substitute model (Papernot et al. 2017).

Papernot, McDaniel, Goodfellow, Jha, Celik & Swami 2017, "Practical Black-Box Attacks against
Machine Learning" (Asia CCS), section 4 and Algorithm 1. The attacker sees neither the target's
weights nor its gradients nor its training data, only the label it gives to an input of the
attacker's choice. The attack:

1. start from a small seed set ``S_0`` of inputs (the paper: 150 MNIST test digits);
2. substitute epoch ``rho``: ask the target, the *oracle* ``O``, for the labels of ``S_rho``,
   train the substitute ``F`` on them, then grow the set by Jacobian-based dataset
   augmentation (section 4.2)::

       S_{rho+1} = { x + lambda * sign(J_F(x)[O(x)]) : x in S_rho }  union  S_rho

   each point steps by ``lambda`` along the sign of the gradient of the substitute's output for
   the oracle's label: toward where that output changes fastest, near the oracle's decision
   boundaries, so the next labels teach the substitute the most;
3. craft adversarial examples on the substitute with a white-box attack (FGSM in the paper)
   and hand them to the target: they transfer (Szegedy et al. 2014).

``Oracle`` is the label-only access (it counts every query), ``jacobian_augmentation`` one step
of the augmentation, ``train_substitute`` the loop. Nothing here touches global state: the
substitute is built and trained on seeded streams of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import nn

from .evaluation import predict
from .models import MODELS, build_model
from .training import Standard, seeded, train
from .training.loop import _check_int
from .utils import device_of, eval_mode

__all__ = ["Oracle", "jacobian_augmentation", "train_substitute"]


class Oracle:
    """Label-only access to a model, counting queries: the black box of Papernot et al. 2017.

    ``oracle(x)`` returns the model's labels for the inputs ``x`` (int64, on ``x``'s device),
    computed without gradients; ``oracle.queries`` is the number of inputs labelled so far
    (one query per input). An ``Oracle`` is not an ``nn.Module``, so no attack can take its
    gradient. The model is kept in a private attribute: Python cannot hide it from a caller
    who insists, so the attacker's honesty is a convention the code only makes plain.
    """

    def __init__(self, model: nn.Module, *, batch_size: int = 1000) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._model = model
        self._batch_size = batch_size
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise TypeError("x must be a float tensor of inputs, shape N x ... (a batch)")
        labels = predict(self._model, x.detach(), batch_size=self._batch_size).argmax(1)
        self.queries += len(x)
        return labels

    def __repr__(self) -> str:
        return f"Oracle({type(self._model).__name__}, {self.queries} queries so far)"


def jacobian_augmentation(
    substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float
) -> torch.Tensor:
    """One step of Jacobian-based dataset augmentation: ``x`` followed by its stepped copy.

    Papernot et al. 2017, section 4.2 and Algorithm 1, line 8::

        S_{rho+1} = { x + lam * sign(J_F(x)[O(x)]) : x in S_rho }  union  S_rho

    ``J_F(x)[O(x)]`` is taken here as the gradient with respect to ``x`` of the substitute's
    *logit* for the label ``labels`` (the oracle's answer for ``x``); the logit does not
    saturate as the softmax probability does. Each new point is clipped to [0, 1], so it moves
    by exactly ``|lam|`` in every pixel where the gradient is non-zero and the clip leaves
    room. A negative ``lam`` steps the other way (the paper's periodic step size
    ``lam * (-1)^floor(rho / tau)`` is the caller's choice).

    Returns a tensor of 2N inputs, ``x`` first; ``x`` is not changed and the substitute's
    train/eval mode is restored (it runs in eval mode).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a float tensor of inputs in [0, 1]")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise TypeError("labels must be a 1-D int64 tensor: the oracle's labels for x")
    if len(labels) != len(x) or len(x) == 0:
        raise ValueError(
            f"x and labels must be non-empty and of equal length, got {len(x)} and {len(labels)}"
        )
    if isinstance(lam, bool) or not isinstance(lam, Real) or not abs(lam) <= 1:
        raise ValueError(f"lam must be a number in [-1, 1] (pixel units), got {lam!r}")
    device = device_of(substitute)
    with eval_mode(substitute), torch.enable_grad():
        x_in = x.detach().to(device).requires_grad_(True)
        logits = substitute(x_in)
        # summed over the batch: each point's gradient is its own logit's gradient
        score = logits.gather(1, labels.to(device).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x_in)
    stepped = (x_in.detach() + lam * grad.sign()).clamp(0, 1).to(x.device)
    return torch.cat([x.detach(), stepped])


def train_substitute(
    oracle: Oracle | Callable[[torch.Tensor], torch.Tensor],
    x_seed: torch.Tensor,
    *,
    rounds: int,
    lam: float = 0.1,
    epochs: int = 10,
    model: str = "mlp",
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Papernot et al. 2017's Algorithm 1: a substitute trained on the oracle's labels only.

    For each substitute epoch ``rho = 0 .. rounds - 1``: the oracle labels the points of
    ``S_rho`` it has not labelled yet (so ``S_rho`` costs ``|S_rho|`` queries in all), the
    substitute (``course_adv.models.build_model(model)``, seeded by ``seed``) trains on every
    labelled point for ``epochs`` epochs (``course_adv.training.train``, continuing from its
    weights so far), and, except after the last round, ``jacobian_augmentation`` doubles the
    set with step ``lam``. The seed set of N points ends as ``N * 2**(rounds - 1)`` queries.

    ``evaluate(substitute) -> dict``, if given, runs after each round (for the experimenter's
    measurements, e.g. the target's error on examples crafted on the substitute; whatever it
    does is not counted as queries). Returns the substitute (eval mode) and one dict per round:
    ``round``, ``queries`` (the oracle's count so far, when it counts), ``n_train`` and what
    ``evaluate`` returned.
    """
    if not callable(oracle):
        raise TypeError("oracle must be callable as oracle(x) -> labels, e.g. Oracle(target)")
    if not isinstance(x_seed, torch.Tensor) or not x_seed.is_floating_point() or len(x_seed) < 2:
        raise TypeError("x_seed must be a float tensor of at least 2 inputs in [0, 1]")
    _check_int("rounds", rounds, minimum=1)
    _check_int("epochs", epochs, minimum=1)
    _check_int("batch_size", batch_size, minimum=1)
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    with seeded(seed):
        substitute = build_model(model)
    x_all = x_seed.detach()
    y_all = torch.empty(0, dtype=torch.int64, device=x_seed.device)
    history: list[dict[str, Any]] = []
    for rho in range(rounds):
        y_new = oracle(x_all[len(y_all) :])
        y_all = torch.cat([y_all, y_new.to(y_all.device).long()])
        train(
            substitute,
            x_all,
            y_all,
            Standard(),
            epochs=epochs,
            lr=lr,
            batch_size=min(batch_size, len(x_all)),
            seed=seed + rho,
            device=device,
            progress=False,
        )
        row: dict[str, Any] = {"round": rho, "n_train": len(x_all)}
        if isinstance(getattr(oracle, "queries", None), int):
            row["queries"] = oracle.queries
        if evaluate is not None:
            row.update(evaluate(substitute))
        history.append(row)
        if rho < rounds - 1:
            x_all = jacobian_augmentation(substitute, x_all, y_all, lam)
    return substitute, history
