"""Exercise 04's spec (l2 PGD): right answers pass, typical wrong ones fail with feedback that
names the mistake. Through ``check()``: the same cases and scoring as ``course-adv grade``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_adv.grading import check


def pgd_l2(model, x, y, eps, alpha, steps, *, mean=False, clip=True, start=None):
    x_adv = x.clone() if start is None else start(x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="mean" if mean else "sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = x_adv.detach() + alpha * step - x
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(
            -1, 1, 1, 1
        )
        x_adv = (x + delta).clamp(0, 1) if clip else x + delta
    return x_adv.detach()


def _feedback(fn):
    result = check("pgd_l2", fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


def test_the_right_answer_passes_and_the_mean_loss_too():
    """Normalising the gradient per example makes summed and averaged losses step alike."""
    for fn in (pgd_l2, lambda *a: pgd_l2(*a, mean=True)):
        result, text = _feedback(fn)
        assert result.passed and result.score == result.max_score > 0, text


def _linf(model, x, y, eps, alpha, steps):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        delta = x_adv.detach() + alpha * grad.sign() - x
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = (x + delta * (eps / norm).clamp(max=1)).clamp(0, 1)
    return x_adv.detach()


def _no_projection(model, x, y, eps, alpha, steps):
    return pgd_l2(model, x, y, float("inf"), alpha, steps)


def _batch_norm(model, x, y, eps, alpha, steps):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        delta = x_adv.detach() + alpha * grad / grad.norm() - x
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = (x + delta * (eps / norm).clamp(max=1)).clamp(0, 1)
    return x_adv.detach()


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (_linf, "l-inf step"),
        (_no_projection, "projected back onto the l2 ball"),
        (_batch_norm, "norm of the whole batch"),
        (lambda *a: pgd_l2(*a, clip=False), "leaves [0, 1]"),
        (
            lambda *a: pgd_l2(*a, start=lambda x, e: (x + 0.01 * torch.randn_like(x)).clamp(0, 1)),
            "from x_0 = x",
        ),
        (lambda m, x, y, e, a, s: pgd_l2(m, x, y, e, a, s).tolist(), "return a torch.Tensor"),
    ],
    ids=["linf", "no-projection", "batch-norm", "no-clip", "random-start", "list"],
)
def test_typical_mistakes_lose_points_with_a_reason(wrong, says):
    result, text = _feedback(wrong)
    assert result.score < result.max_score
    assert says in text, text


def test_changing_x_in_place_is_flagged():
    def in_place(model, x, y, eps, alpha, steps):
        x_adv = pgd_l2(model, x, y, eps, alpha, steps)
        x.copy_(x_adv)
        return x_adv

    result, text = _feedback(in_place)
    assert not result.passed and "changed its input x in place" in text
