"""Deliberately broken defences: models that look robust to a naive attack, and are not.

Notebook 08 wraps an ordinary (undefended) model in each of these and shows that the
checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness") catches it, and
that an *adaptive* attack breaks it. Both hide the gradient rather than remove the
adversarial examples: Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False
Sense of Security" (ICML), call this gradient masking, and found it in 7 of the 9 defences
of ICLR 2018 they examined.

- ``ScaledLogits(model, scale)``: the logits times a large constant. The decisions do not
  change, but the softmax saturates: in float32 the cross-entropy's input gradient underflows
  to exactly zero at every confidently classified point, so FGSM and PGD on the cross-entropy
  stand still. Defensive distillation at a high temperature fails the same way (Carlini &
  Wagner 2016, "Defensive Distillation is Not Robust to Adversarial Examples"). The adaptive
  attack: PGD on the logit margin, ``attacks.pgd(..., loss="cw")`` (Carlini & Wagner 2017,
  "Towards Evaluating the Robustness of Neural Networks", their f_6), whose sign does not
  depend on the scale.
- ``Quantized(model, levels)``: the pixels rounded to ``levels`` grey levels inside the model
  (the bit-depth reduction of Xu, Evans & Qi 2018, "Feature Squeezing"; the thermometer
  encoding of Buckman et al. 2018 is a relative). Rounding is a step function: its gradient
  is zero almost everywhere (torch defines it as zero at the jumps too), so every input
  gradient of the model is exactly zero. The adaptive attack: BPDA, the Backward Pass
  Differentiable Approximation of Athalye et al. 2018, section 4.1, here its simplest form,
  the straight-through estimator: round on the forward pass, the identity on the backward
  pass (``Quantized(..., straight_through=True)``, or ``quantized.bpda()``).

The wrappers hold the wrapped model as a submodule (its weights are shared, not copied) and
never change it; ``course_adv.utils.eval_mode`` and the attacks see through them.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor, nn

__all__ = ["ScaledLogits", "Quantized", "quantize", "straight_through_quantize"]


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (the model to wrap), got {type(model).__name__}"
        )


def _check_levels(levels: object) -> int:
    if not isinstance(levels, Integral) or isinstance(levels, bool) or levels < 2:
        raise ValueError(
            f"levels must be an int >= 2 (grey levels, 2 = black and white), got {levels!r}"
        )
    return int(levels)


def quantize(x: Tensor, levels: int) -> Tensor:
    """Round pixels in [0, 1] to the nearest of ``levels`` evenly spaced grey levels.

    ``round(x * (levels - 1)) / (levels - 1)``: with ``levels = 2`` every pixel becomes 0 or 1,
    with 256 the 8-bit grid. The gradient of ``torch.round`` is zero everywhere, so no
    gradient flows back through this function (``straight_through_quantize`` lets it through).
    """
    steps = _check_levels(levels) - 1
    return torch.round(x * steps) / steps


class _StraightThrough(torch.autograd.Function):
    """Forward: ``quantize``; backward: the identity (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: Tensor, levels: int) -> Tensor:
        return quantize(x, levels)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through_quantize(x: Tensor, levels: int) -> Tensor:
    """``quantize(x, levels)`` on the forward pass, the identity on the backward pass.

    Athalye, Carlini & Wagner 2018, section 4.1 (BPDA): where a preprocessing step g(x) is
    close to x but not usefully differentiable, attack with g on the forward pass and
    approximate its derivative by that of x -> x, so the gradient reaching x is the model's
    gradient at g(x). The forward value is exactly ``quantize(x, levels)``.
    """
    _check_levels(levels)
    return _StraightThrough.apply(x, int(levels))


class ScaledLogits(nn.Module):
    """A broken defence: ``model``'s logits multiplied by ``scale`` (default 1000).

    Same predictions (argmax is unchanged by a positive scale), saturated softmax: for a point
    the model classifies with a logit margin m, the cross-entropy's gradient carries factors
    ``exp(-scale * m)``, which in float32 underflow to exactly 0 once ``scale * m`` exceeds
    about 100. FGSM and PGD on the cross-entropy then have no direction (``sign(0) = 0``) and
    the model looks robust. The margin (CW) loss, ``max_{j != y} z_j - z_y``, is only rescaled,
    so PGD on it (``attacks.pgd(..., loss="cw")``) breaks the model exactly as it breaks
    ``model``. Carlini & Wagner 2016 and 2017 (section 5, their f_6); Carlini et al. 2019.
    """

    def __init__(self, model: nn.Module, scale: float = 1000.0) -> None:
        super().__init__()
        _check_model(model)
        if (
            not isinstance(scale, Real)
            or isinstance(scale, bool)
            or not math.isfinite(scale)
            or scale <= 0
        ):
            raise ValueError(f"scale must be a finite number > 0 (e.g. 1000.0), got {scale!r}")
        self.model = model
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class Quantized(nn.Module):
    """A broken defence: ``model`` applied to the input rounded to ``levels`` grey levels.

    ``Quantized(model, levels)(x) = model(quantize(x, levels))``. The rounding is a step
    function, so the input gradient is exactly zero and gradient attacks stand still (their
    random start is all that moves the input): it looks robust to FGSM and PGD and is not.
    With ``straight_through=True`` the forward pass is identical and the backward pass treats
    the rounding as the identity: BPDA (Athalye, Carlini & Wagner 2018, section 4.1), the
    adaptive attack. Attack ``self.bpda()``, evaluate ``self``: the two share ``model`` and
    give the same outputs, so every example that fools one fools the other.
    """

    def __init__(
        self, model: nn.Module, levels: int = 8, *, straight_through: bool = False
    ) -> None:
        super().__init__()
        _check_model(model)
        if not isinstance(straight_through, bool):
            raise TypeError(f"straight_through must be True or False, got {straight_through!r}")
        self.model = model
        self.levels = _check_levels(levels)
        self.straight_through = straight_through

    def forward(self, x: Tensor) -> Tensor:
        if self.straight_through:
            return self.model(straight_through_quantize(x, self.levels))
        return self.model(quantize(x, self.levels))

    def bpda(self) -> Quantized:
        """The same defence (same ``model``, same levels) with the straight-through gradient."""
        return Quantized(self.model, self.levels, straight_through=True)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, straight_through={self.straight_through}"
