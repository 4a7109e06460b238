"""Exercise 03's spec (one training step of eq. (2)): right answers pass, typical wrong ones
fail with feedback that names the mistake. Through ``check()``, as ``course-adv grade`` scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_adv import attacks
from course_adv.grading import check


def step(model, optimizer, x, y, eps, alpha, *, one_pass=False):
    x_adv = attacks.fgsm(model, x, y, eps)
    model.train()
    if one_pass:
        losses = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]), reduction="none")
        loss = alpha * losses[: len(x)].mean() + (1 - alpha) * losses[len(x) :].mean()
    else:
        loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _feedback(fn):
    result = check("fgsm_training_step", fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


@pytest.mark.parametrize("one_pass", [False, True], ids=["two-passes", "one-pass"])
def test_right_answers_pass_with_one_or_two_forward_passes(one_pass):
    result, text = _feedback(lambda *a: step(*a, one_pass=one_pass))
    assert result.passed and result.score == result.max_score > 0, text


def _no_zero_grad(model, optimizer, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _train_mode_attack(model, optimizer, x, y, eps, alpha):
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_req), y), x_req)
    x_adv = (x + eps * grad.sign()).clamp(0, 1).detach()
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _left_in_eval(model, optimizer, x, y, eps, alpha):
    loss = step(model, optimizer, x, y, eps, alpha)
    model.eval()
    return loss


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (_no_zero_grad, "optimizer.zero_grad()"),
        (_train_mode_attack, "crafted with the model in train mode"),
        (lambda m, o, x, y, e, a: step(m, o, x, y, e, 1 - a), "alpha weighs the wrong term"),
        (lambda m, o, x, y, e, a: step(m, o, x, y, e, 0.0), "only the adversarial loss"),
        (_left_in_eval, "left in eval mode"),
        (lambda m, o, x, y, e, a: (step(m, o, x, y, e, a), None)[1], "the returned loss"),
    ],
    ids=["no-zero-grad", "train-mode-attack", "alpha-swapped", "adv-only", "eval", "no-loss"],
)
def test_typical_mistakes_lose_points_with_a_reason(wrong, says):
    result, text = _feedback(wrong)
    assert result.score < result.max_score
    assert says in text, text


def test_crafting_with_predicted_labels_is_named():
    def predicted(model, optimizer, x, y, eps, alpha):
        x_adv = attacks.fgsm(model, x, None, eps)
        model.train()
        loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    result, text = _feedback(predicted)
    # the untrained case models' predictions differ from y on most digits: the step differs
    assert result.score < result.max_score and "true labels y" in text, text
