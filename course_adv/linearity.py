"""Why linear models are fooled, and how linear a network is: the tools of notebook 01.

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
section 3 ("the linear explanation of adversarial examples") and section 4 / Fig. 4 (deep
networks behave linearly along the fast gradient sign direction):

- ``linear_worst_case``: for a linear score ``w^T x``, the perturbation in the l-inf ball of
  radius eps (and inside [0, 1]) that changes the score most, solved exactly, and the change
  it causes, ``w^T eta``. Without the [0, 1] box this is ``eta = eps * sign(w)`` and the change
  is ``eps * ||w||_1``: it grows with the number of inputs, so many changes below the precision
  of the features add up to a large one (the lecture's "eps m n").
- ``logits_along``: a model's logits at ``x + t * direction`` for t on a grid (Goodfellow et
  al.'s Fig. 4 follows the FGSM direction ``sign(grad_x L)``).
- ``straightness``: the R^2 of a straight-line fit to each of those logit curves, a number per
  curve that says how linear the model is along the direction (1 = a straight line).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .utils import device_of, eval_mode

__all__ = ["linear_worst_case", "logits_along", "straightness"]


def linear_worst_case(
    w: Tensor, x: Tensor, eps: float, *, box: bool = True
) -> tuple[Tensor, Tensor]:
    """The perturbation ``eta`` with ``||eta||_inf <= eps`` that raises ``w^T (x + eta)`` most.

    Goodfellow et al. 2015, section 3: ``w^T x~ = w^T x + w^T eta`` and, subject to the max-norm
    constraint, ``w^T eta`` is largest at ``eta = eps * sign(w)``, where it equals
    ``eps * ||w||_1``. With ``box=True`` (the course's convention) ``x + eta`` must also stay
    in [0, 1]; the problem still splits pixel by pixel, and the answer is
    ``eta = clip(x + eps * sign(w), 0, 1) - x``, so the change ``w^T eta`` is at most
    ``eps * ||w||_1``. To *lower* the score, pass ``-w``.

    Args:
        w: weights, shape ``x.shape[1:]`` (one score) or ``(D,)`` with D the number of pixels.
        x: inputs (N, ...) in [0, 1].
        eps: the l-inf budget (pixel units).
        box: keep ``x + eta`` in [0, 1].

    Returns:
        ``(eta, change)``: the perturbations (N, ...) and the score changes ``w^T eta`` (N,).
    """
    if not isinstance(w, Tensor) or not isinstance(x, Tensor):
        raise TypeError("w and x must be torch tensors")
    if not (isinstance(eps, int | float) and not isinstance(eps, bool) and eps >= 0):
        raise ValueError(f"eps must be a number >= 0 (pixel units), got {eps!r}")
    if w.numel() != x[0].numel():
        raise ValueError(
            f"w must have one weight per input value ({x[0].numel()}), got {w.numel()}"
        )
    step = eps * torch.sign(w).reshape(x.shape[1:]).to(x.dtype)
    eta = ((x + step).clamp(0, 1) - x) if box else step.expand_as(x).clone()
    change = eta.flatten(1) @ w.flatten().to(x.dtype)
    return eta, change


@torch.no_grad()
def logits_along(model: nn.Module, x: Tensor, direction: Tensor, ts: Sequence[float]) -> Tensor:
    """The model's logits at ``x + t * direction`` for each ``t`` in ``ts`` (no clipping).

    Goodfellow et al. 2015, Fig. 4: along the fast gradient sign direction a deep network's
    logits are close to piecewise linear functions of t. This probes the function, not valid
    images, so the points are not clipped to [0, 1]. Runs in eval mode (the model's modes are
    restored). Returns a tensor of shape ``(len(ts), N, classes)`` on ``x``'s device.
    """
    if direction.shape != x.shape:
        raise ValueError(
            f"direction must have the shape of x {tuple(x.shape)}, got {tuple(direction.shape)}"
        )
    grid = [float(t) for t in ts]
    if len(grid) < 2:
        raise ValueError(f"ts must hold at least 2 values of t, got {ts!r}")
    device = device_of(model)
    with eval_mode(model):
        out = [model((x + t * direction).to(device)).to(x.device) for t in grid]
    return torch.stack(out)


def straightness(ts: Sequence[float], curves: Tensor) -> Tensor:
    """R^2 of the least-squares line through each curve: 1 for a straight line.

    ``curves`` has shape ``(len(ts), ...)`` (e.g. the output of ``logits_along``); the result
    has shape ``curves.shape[1:]``: one R^2 per curve, ``1 - SS_residual / SS_total``. A flat
    curve (no variation at all) counts as straight (R^2 = 1). Computed in float64.
    """
    t = torch.as_tensor([float(v) for v in ts], dtype=torch.float64, device=curves.device)
    if curves.shape[0] != len(t):
        raise ValueError(f"curves must have len(ts) = {len(t)} rows, got {curves.shape[0]}")
    c = curves.double().reshape(len(t), -1)
    t_c = (t - t.mean())[:, None]
    c_c = c - c.mean(0)
    slope = (t_c * c_c).sum(0) / (t_c**2).sum()
    residual = ((c_c - slope * t_c) ** 2).sum(0)
    total = (c_c**2).sum(0)
    r2 = torch.where(total > 0, 1 - residual / total.clamp_min(1e-300), torch.ones_like(total))
    return r2.reshape(curves.shape[1:])
