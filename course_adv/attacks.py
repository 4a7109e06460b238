"""Adversarial attacks: FGSM, R+FGSM, BIM, PGD (l-inf, l2), targeted, least-likely, DeepFool.

One plain function per attack. ``fgsm`` and ``pgd`` show the paper's equation as code, top to
bottom: the loss, its gradient with respect to the input (``torch.autograd.grad``, so the
parameters' ``.grad`` is never touched), the step, the projection onto the eps-ball and the
clip to [0, 1]. What they share lives in one place each:

- ``_validate``: every argument is checked once, before the attack, with a message that names
  the argument and the fix (never ``assert``, never inside the loop);
- ``course_adv.utils.eval_mode``: the model runs in eval mode and every submodule gets its own
  mode back afterwards.

Conventions (COURSE.md section 2): pixels in [0, 1] and eps in those units; every iterate is
projected onto the eps-ball around the clean input, then clipped to [0, 1]; ``y=None`` means
"attack the model's own predictions" (no label leaking); the input is never mutated; the
result is detached, on the input's device and dtype.

The iterative attacks return what their papers return: the *final* iterate (Madry et al.'s
PGD, Kurakin et al.'s BIM), the loss maximiser that adversarial training trains on and that
transfers to other models. ``freeze_fooled=True`` is the evaluation speed-up: an example
stops moving at its first iterate that fools the model, which is all a white-box verdict
needs (``course_adv.evaluation`` uses it for robust accuracy, never for transfer).

The two call shapes the rest of the course passes attacks around as:

- ``Attack``: ``attack(model, x, y) -> x_adv``, a fully configured attack, e.g.
  ``lambda m, x, y: pgd(m, x, y, 0.3, 0.01, 40)``;
- ``AttackFamily``: ``attack(model, x, y, eps) -> x_adv``, one attack over many budgets, e.g.
  ``fgsm`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .utils import eval_mode

__all__ = [
    "Attack",
    "AttackFamily",
    "fgsm",
    "rand_fgsm",
    "pgd",
    "bim",
    "bim_schedule",
    "least_likely_class",
    "iterative_least_likely",
    "deepfool",
    "NORMS",
    "LOSSES",
]

Attack = Callable[[nn.Module, Tensor, Tensor | None], Tensor]
AttackFamily = Callable[[nn.Module, Tensor, Tensor | None, float], Tensor]

NORMS = ("inf", "2")
LOSSES = ("ce", "cw")
_PROBE = 16  # rows of x the output check runs the model on (cheap next to the attack itself)


# ----------------------------------------------------------------------------- attacks


def fgsm(
    model: nn.Module, x: Tensor, y: Tensor | None, eps: float, *, targeted: bool = False
) -> Tensor:
    """Fast Gradient Sign Method: one step of size ``eps`` along the sign of the input gradient.

    Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
    section 4 (the lecture's eq. (1))::

        x_adv = clip_[0,1]( x + eps * sign(grad_x L(theta, x, y)) )

    With ``targeted=True``, ``y`` holds the target classes and the step goes *down* the loss
    of the target: ``x - eps * sign(grad_x L(theta, x, y_target))``.

    Args:
        model: a classifier returning logits (not probabilities).
        x: a batch of inputs in [0, 1], shape (N, ...).
        y: true labels (N,), the targets when ``targeted``, or ``None`` for the model's own
            predictions on ``x``.
        eps: the l-inf budget in pixel units, e.g. 0.3 (= 76.5/255).
        targeted: move toward the classes ``y`` instead of away from them.
    """
    with eval_mode(model):
        y = _validate(model, x, y, eps=eps, targeted=targeted)
        x = x.detach()
        with torch.enable_grad():  # attacks also work when called under torch.no_grad()
            x_in = x.clone().requires_grad_()
            # summed, not averaged: each example's gradient does not depend on the batch size
            loss = F.cross_entropy(model(x_in), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_in, materialize_grads=True)
    step = -eps * grad.sign() if targeted else eps * grad.sign()
    return (x + step).clamp(0, 1)


def rand_fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    eps: float,
    alpha: float | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """R+FGSM ("RAND+FGSM"): a random signed step of ``alpha``, then FGSM with ``eps - alpha``.

    Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel 2018, "Ensemble Adversarial
    Training: Attacks and Defenses" (ICLR), their single-step attack::

        x' = clip_[0,1]( x + alpha * sign(N(0, I)) )
        x_adv = clip_[0,1]( x' + (eps - alpha) * sign(grad_x' L(theta, x', y)) )

    The random step leaves the sharp curvature that single-step adversarial training puts
    right at the data points (gradient masking), so the one gradient step that follows sees
    the loss a little further out. The total step is at most eps per pixel. ``alpha``
    defaults to ``eps / 2`` (the paper's choice); ``alpha = 0`` is ``fgsm``. ``y=None``
    attacks the model's predictions on the clean ``x``. ``generator`` draws the random signs
    (default: torch's global random stream), on ``x``'s device.
    """
    alpha = eps / 2 if alpha is None else alpha
    with eval_mode(model):
        y = _validate(model, x, y, eps=eps)
        _check_real("alpha", alpha, minimum=0.0)
        if alpha > eps:
            raise ValueError(f"alpha (the random step) must be at most eps = {eps}, got {alpha!r}")
        x = x.detach()
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x_rand = (x + alpha * noise.sign()).clamp(0, 1)
        return fgsm(model, x_rand, y, eps - alpha)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    eps: float,
    alpha: float,
    steps: int,
    *,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    norm: str = "inf",
    loss: str = "ce",
    freeze_fooled: bool = False,
) -> Tensor:
    """Projected Gradient Descent (ascent on the loss), l-inf or l2.

    Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", section 2.1 and eq. (2.1): the inner maximisation of the saddle-point
    problem, solved by projected steps::

        x_{t+1} = clip_[0,1]( Proj_{B(x, eps)}( x_t + alpha * d_t ) )

    with ``d_t = sign(grad_x L(x_t, y))`` for ``norm="inf"`` and ``d_t = grad / ||grad||_2`` for
    ``norm="2"``. ``random_start`` draws ``x_0`` uniformly from the eps-ball (then clips);
    without it ``x_0 = x`` and, for l-inf, this is BIM (Kurakin et al. 2016). What comes back
    is the final iterate ``x_steps``, as in the paper.

    Args:
        model: a classifier returning logits.
        x: inputs in [0, 1], shape (N, ...).
        y: true labels (N,), targets when ``targeted``, or ``None`` for the model's own
            predictions on the clean ``x``.
        eps: radius of the ball, in pixel units (l-inf) or l2 norm.
        alpha: step size (pixel units for l-inf, l2 length for l2).
        steps: number of gradient steps (each one forward and one backward pass).
        random_start: start from a uniform random point in the ball.
        restarts: number of runs, each from a new random start; per example the best run comes
            back: one that fools the model, else the one with the highest loss. Later runs
            attack only the examples no earlier run fooled. Restarts differ only with
            ``random_start=True``.
        targeted: descend the loss of the target classes ``y`` instead.
        norm: ``"inf"`` or ``"2"``.
        loss: ``"ce"`` (cross-entropy) or ``"cw"``, the logit margin ``max_{j != y} z_j - z_y``
            (Carlini & Wagner 2017's f_6 without kappa), which does not saturate like the
            softmax does; attacking with both is a stronger evaluation.
        freeze_fooled: the evaluation speed-up. An example stops moving at its first iterate
            that fools the model (predicts anything but ``y``; ``y`` itself when targeted), and
            that iterate comes back. Only for white-box verdicts: such an example sits just
            past the decision boundary and transfers badly to other models.

    Cost: ``steps`` forward + backward passes per run, plus one forward pass on ``x`` when
    ``y`` is None and, with ``restarts > 1``, one per run to rank the runs.
    """
    options = dict(
        random_start=random_start,
        targeted=targeted,
        norm=norm,
        loss=loss,
        freeze_fooled=freeze_fooled,
    )
    _check_int("restarts", restarts, minimum=1)
    if restarts > 1:  # the best of several runs of the loop below
        return _best_of_restarts(model, x, y, eps, alpha, steps, restarts, **options)
    with eval_mode(model):
        y = _validate(model, x, y, eps=eps, alpha=alpha, steps=steps, **options)
        x = x.detach()
        # x_0: x itself, or a point drawn uniformly from the eps-ball around it
        if random_start and norm == "inf":
            x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        elif random_start:  # l2: a uniform direction, at radius eps * U^(1/d)
            direction = torch.randn_like(x)
            radius = eps * torch.rand(len(x), dtype=x.dtype, device=x.device) ** (1 / x[0].numel())
            x_adv = (x + direction * _rows(radius, x) / _l2(direction).clamp_min(1e-12)).clamp(0, 1)
        else:
            x_adv = x
        # l-inf: the eps-ball and [0, 1] are both boxes, so projecting and clipping is one clamp
        low, high = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(steps):
            # the loss of every example at x_t, and its gradient with respect to x_t only
            with torch.enable_grad():
                x_adv = x_adv.detach().requires_grad_()
                logits = model(x_adv)
                value = _loss(logits, y, loss, targeted).sum()  # summed: examples independent
                (grad,) = torch.autograd.grad(value, x_adv, materialize_grads=True)
            x_adv = x_adv.detach()
            if norm == "inf":  # x_t + alpha * sign(grad), then Proj and clip as one clamp
                x_next = torch.add(x_adv, grad.sign(), alpha=alpha).clamp_(low, high)
            else:  # the step along grad / ||grad||_2, Proj onto the l2 ball, then clip
                x_next = x_adv + alpha * grad / _l2(grad).clamp_min(1e-12)
                delta = x_next - x
                delta = delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1)
                x_next = (x + delta).clamp(0, 1)  # clipping moves pixels toward x: still inside
            if freeze_fooled:  # an example that x_t fools stays at x_t
                fooled |= _is_fooled(logits, y, targeted)
                x_next = torch.where(_rows(fooled, x), x_adv, x_next)
            x_adv = x_next
    return x_adv


def _best_of_restarts(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    eps: float,
    alpha: float,
    steps: int,
    restarts: int,
    **options: object,
) -> Tensor:
    """``pgd`` with ``restarts`` runs: per example, the best run's iterate.

    Best means: an iterate that fools the model beats one that does not, and between two that
    do not, the higher loss wins. Each run's returned iterate is judged (one forward pass), so
    the best result of any single run is never lost: restarts are never weaker than one run.
    Later runs attack only the examples no earlier run fooled.
    """
    loss, targeted = options["loss"], options["targeted"]
    with eval_mode(model):
        y = _validate(model, x, y, eps=eps, alpha=alpha, steps=steps, restarts=restarts, **options)
        x = x.detach()
        best = pgd(model, x, y, eps, alpha, steps, **options)
        best_fooled, best_loss = _judge(model, best, y, loss, targeted)
        for _ in range(restarts - 1):
            todo = (~best_fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            run = pgd(model, x[todo], y[todo], eps, alpha, steps, **options)
            fooled, value = _judge(model, run, y[todo], loss, targeted)
            better = fooled | (value > best_loss[todo])
            best[todo[better]] = run[better]
            best_fooled[todo[better]] = fooled[better]
            best_loss[todo[better]] = value[better]
    return best


def bim_schedule(eps: float) -> tuple[float, int]:
    """Kurakin et al. 2016's defaults: step 1/255 and ``min(eps*255 + 4, 1.25*eps*255)`` steps.

    Kurakin, Goodfellow & Bengio 2016, "Adversarial Examples in the Physical World",
    section 2.2: each step changes a pixel by at most 1 (of 255), and the number of iterations
    is ``min(eps + 4, 1.25 eps)`` with eps in 0-255 units: enough steps to reach the edge of
    the ball, and a few more. Rounded down (as in cleverhans), and at least 1.
    """
    _check_real("eps", eps, minimum=0.0)
    e = eps * 255
    return 1 / 255, max(1, int(min(e + 4, 1.25 * e) + 1e-9))


def bim(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    eps: float,
    alpha: float | None = None,
    steps: int | None = None,
    *,
    targeted: bool = False,
    freeze_fooled: bool = False,
) -> Tensor:
    """Basic Iterative Method: FGSM repeated with a small step, clipped to the eps-ball.

    Kurakin, Goodfellow & Bengio 2016, section 2.2::

        x_0 = x,   x_{N+1} = Clip_{x,eps}{ x_N + alpha * sign(grad_x J(x_N, y_true)) }

    This is ``pgd`` with ``norm="inf"`` and no random start; the final iterate comes back
    (``freeze_fooled=True``: the first fooling iterate, see ``pgd``). ``alpha`` and ``steps``
    default to ``bim_schedule(eps)``.
    """
    default_alpha, default_steps = bim_schedule(eps)
    alpha = default_alpha if alpha is None else alpha
    steps = default_steps if steps is None else steps
    return pgd(
        model,
        x,
        y,
        eps,
        alpha,
        steps,
        random_start=False,
        targeted=targeted,
        freeze_fooled=freeze_fooled,
    )


def least_likely_class(model: nn.Module, x: Tensor) -> Tensor:
    """The class the model finds least likely for each input: ``argmin_y p(y | x)``.

    Kurakin et al. 2016, section 2.3: the target of the iterative least-likely class method,
    chosen so that reaching it is a "highly undesirable" misclassification (e.g. a dog for a cat
    is a small mistake, a dog for an aeroplane a big one).
    """
    with eval_mode(model):
        _validate(model, x, labels=False)
        with torch.no_grad():
            return model(x.detach()).argmin(1)


def iterative_least_likely(
    model: nn.Module,
    x: Tensor,
    eps: float,
    alpha: float | None = None,
    steps: int | None = None,
) -> Tensor:
    """Iterative least-likely class method: targeted BIM toward ``least_likely_class(x)``.

    Kurakin et al. 2016, section 2.3::

        y_LL = argmin_y p(y | x),   x_{N+1} = Clip_{x,eps}{ x_N - alpha * sign(grad_x J(x_N, y_LL)) }

    ``alpha`` and ``steps`` default to ``bim_schedule(eps)``; the final iterate comes back.
    """
    return bim(model, x, least_likely_class(model, x), eps, alpha, steps, targeted=True)


def deepfool(
    model: nn.Module,
    x: Tensor,
    *,
    candidates: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
) -> tuple[Tensor, Tensor]:
    """DeepFool: the smallest l2 step to the nearest (linearised) decision boundary, repeated.

    Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to fool
    deep neural networks", Algorithm 2 (multi-class). With k0 the clean prediction, at x_i::

        w'_k = grad f_k(x_i) - grad f_k0(x_i),   f'_k = f_k(x_i) - f_k0(x_i)
        l    = argmin_{k != k0} |f'_k| / ||w'_k||_2
        r_i  = |f'_l| / ||w'_l||_2^2 * w'_l

    until the prediction changes; the total perturbation is ``(1 + overshoot) * sum_i r_i``
    (the paper's 1 + eta, with eta = 0.02 in its experiments). As in the authors' code, each
    step is lengthened by 1e-4 and only the ``candidates`` classes the model ranks highest on
    the clean input (k0 among them) are considered. Iterates are clipped to [0, 1] (course
    convention; the paper does not clip).

    Returns:
        ``(x_adv, norms)``: the adversarial examples and the l2 norm of each perturbation
        ``||x_adv - x||_2``, a measure of the distance to the decision boundary (notebook 09
        ranks unlabeled points by it). Examples still not flipped after ``max_iter``
        iterations come back as the last iterate; check the predictions if that matters.
    """
    with eval_mode(model):
        _validate(model, x, labels=False)
        _check_int("candidates", candidates, minimum=2)
        _check_real("overshoot", overshoot, minimum=0.0)
        _check_int("max_iter", max_iter, minimum=1)
        x = x.detach()
        with torch.no_grad():
            logits = model(x)
        classes = logits.topk(min(candidates, logits.shape[1]), dim=1).indices  # k0 first
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(max_iter):
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            logits, f, grads = _class_grads(model, x_adv[idx], classes[idx])
            still = logits.argmax(1) == classes[idx, 0]  # not flipped yet
            active[idx] = still
            w = grads[:, 1:] - grads[:, :1]  # w'_k, shape (n, K-1, ...)
            w_norm = w.flatten(2).norm(dim=2).clamp_min(1e-12)
            dist = (f[:, 1:] - f[:, :1]).abs() / w_norm  # |f'_k| / ||w'_k||
            l = dist.argmin(1)
            rows = torch.arange(len(idx), device=x.device)
            scale = (dist[rows, l] + 1e-4) / w_norm[rows, l] * still  # flipped ones stay put
            r_total[idx] += _rows(scale, x) * w[rows, l]
            x_adv[idx] = (x[idx] + (1 + overshoot) * r_total[idx]).clamp(0, 1)
    return x_adv, (x_adv - x).flatten(1).norm(dim=1)


# ----------------------------------------------------------------------------- small pieces


def _loss(logits: Tensor, y: Tensor, loss: str, targeted: bool) -> Tensor:
    """Per-example loss the attack *ascends* (targeted: the negated loss of the target)."""
    if loss == "ce":
        value = F.cross_entropy(logits, y, reduction="none")
        return -value if targeted else value
    # "cw": the margin between the best other logit and the label's logit
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf).amax(1)
    return z_y - z_other if targeted else z_other - z_y


def _is_fooled(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per example: predicted the target (targeted), or anything but ``y`` (untargeted)."""
    return logits.argmax(1) == y if targeted else logits.argmax(1) != y


def _judge(
    model: nn.Module, x_adv: Tensor, y: Tensor, loss: str, targeted: bool
) -> tuple[Tensor, Tensor]:
    """One forward pass on the iterates a run returns: (fooled, loss), to rank restarts."""
    with torch.no_grad():
        logits = model(x_adv)
    return _is_fooled(logits, y, targeted), _loss(logits, y, loss, targeted)


def _rows(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example vector (N,) to broadcast against x (N, ...)."""
    return v.view(-1, *([1] * (x.ndim - 1)))


def _l2(v: Tensor) -> Tensor:
    """Per-example l2 norm, shaped to broadcast against v."""
    return _rows(v.flatten(1).norm(dim=1), v)


def _class_grads(model: nn.Module, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (n, C), the logits of ``classes`` (n, K) and their input gradients (n, K, ...)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        logits = model(x)
        f = logits.gather(1, classes)
        k = f.shape[1]
        grads = [
            torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < k - 1, materialize_grads=True)[0]
            for j in range(k)
        ]
    return logits.detach(), f.detach(), torch.stack(grads, dim=1)


# ----------------------------------------------------------------------------- validation


def _validate(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    eps: float = 0.0,
    alpha: float = 1.0,
    steps: int = 1,
    restarts: int = 1,
    norm: str = "inf",
    loss: str = "ce",
    targeted: bool = False,
    random_start: bool = False,
    freeze_fooled: bool = False,
    labels: bool = True,
) -> Tensor | None:
    """Check every argument once, before the attack; return the labels to attack with.

    Must run inside ``eval_mode(model)`` (which checks that ``model`` is a module): it runs the
    model on a few rows of ``x`` to check that it returns logits (and, for ``y=None``, on all
    of ``x`` for its predictions). With ``labels=False`` (attacks that take no labels) it returns None.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of shape (N, ...), got {tuple(x.shape)}")
    _check_real("eps", eps, minimum=0.0)
    _check_real("alpha", alpha, minimum=0.0, strict=True)
    _check_int("steps", steps, minimum=1)
    _check_int("restarts", restarts, minimum=1)
    flags = {"targeted": targeted, "random_start": random_start, "freeze_fooled": freeze_fooled}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (l-inf or l2), got {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES} (cross-entropy or CW margin), got {loss!r}")
    tensor = next(chain(model.parameters(), model.buffers()), None)
    if tensor is not None and tensor.device != x.device:
        raise ValueError(
            f"x is on {x.device} but the model is on {tensor.device}; move one of them, "
            f"e.g. x = x.to({str(tensor.device)!r})"
        )
    if tensor is not None and tensor.is_floating_point() and tensor.dtype != x.dtype:
        raise TypeError(
            f"x has dtype {x.dtype} but the model's parameters are {tensor.dtype}; "
            f"convert one of them, e.g. x = x.to({tensor.dtype})"
        )
    low, high = torch.aminmax(x.detach())
    if not (low >= 0 and high <= 1):  # also catches NaN
        raise ValueError(
            f"x must hold pixels in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}]; "
            "attack the raw images and put any normalisation inside the model"
        )
    if targeted and y is None:
        raise ValueError("a targeted attack needs the target classes: pass them as y")
    if y is not None:
        if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
            kind = y.dtype if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"y must be an integer tensor of class labels (int64), got {kind}")
        if y.shape != (len(x),):
            raise ValueError(
                f"y must have shape ({len(x)},), one label per input, got {tuple(y.shape)}"
            )
        if y.device != x.device:
            raise ValueError(f"y is on {y.device} but x is on {x.device}; use y.to(x.device)")

    predict = labels and y is None  # the model's predictions are needed: run it on all of x
    with torch.no_grad():
        logits = model(x.detach() if predict else x.detach()[:_PROBE])
    _check_logits(logits, len(x) if predict else min(len(x), _PROBE))
    if not labels:
        return None
    if y is None:
        return logits.argmax(1)
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(
            f"y must hold class labels in [0, {logits.shape[1] - 1}], got values in "
            f"[{y.min().item()}, {y.max().item()}]"
        )
    return y.long()


def _check_logits(logits: object, rows: int) -> None:
    """The model must return (rows, classes >= 2) logits, not probabilities."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or len(logits) != rows:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (N, classes), got {shape}")
    if logits.shape[1] < 2:
        raise ValueError(f"model must return logits for at least 2 classes, got {logits.shape[1]}")
    sums = logits.sum(1)
    if (logits >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        raise ValueError(
            "model outputs are nonnegative and sum to 1 in every row: they look like "
            "probabilities, but attacks need logits; drop the final softmax from the model"
        )


def _check_real(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if math.isnan(value) or math.isinf(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {minimum}, got {value!r}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
