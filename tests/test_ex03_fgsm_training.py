"""Exercise 03's spec (one training step of eq. (2), FGSM half against the true or the
predicted labels): right answers pass, typical wrong ones fail with feedback that names the
mistake. Through ``check()``, as ``course-adv grade`` scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_adv import attacks, training
from course_adv.grading import check
from course_adv.grading.digits import fresh_copy, parameter_vector
from course_adv.grading.exercises import ex03_fgsm_training as ex03
from course_adv.grading.registry import load_hidden_cases


def step(model, optimizer, x, y, eps, alpha, labels="true", *, one_pass=False, craft=None):
    """A right answer (``craft`` overrides the labels the FGSM half attacks: a mistake)."""
    craft = labels if craft is None else craft
    x_adv = attacks.fgsm(model, x, y if craft == "true" else None, eps)
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


def _lost(result, labels):
    """The points lost on the cases with ``labels``, and the points those cases are worth."""
    cases = [c for c in ex03.EXERCISE.cases if c.labels == labels]
    worth = sum(c.points for c in cases)
    assert worth > 0 and len(result.results) == len(ex03.EXERCISE.cases)
    got = sum(r.points for r, c in zip(result.results, ex03.EXERCISE.cases, strict=True)
              if c.labels == labels)  # fmt: skip
    return worth - got, worth


def test_the_public_cases_ask_for_both_labels():
    labels = [c.labels for c in ex03.EXERCISE.cases]
    assert labels.count("true") >= 2 and labels.count("predicted") >= 2


@pytest.mark.parametrize("one_pass", [False, True], ids=["two-passes", "one-pass"])
def test_right_answers_pass_with_one_or_two_forward_passes(one_pass):
    result, text = _feedback(lambda *a, **k: step(*a, **k, one_pass=one_pass))
    assert result.passed and result.score == result.max_score > 0, text


def test_predictions_computed_by_hand_in_eval_mode_pass():
    def by_hand(model, optimizer, x, y, eps, alpha, labels="true"):
        target = y
        if labels == "predicted":
            model.eval()
            with torch.no_grad():
                target = model(x).argmax(1)
        x_adv = attacks.fgsm(model, x, target, eps)
        model.train()
        loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    result, text = _feedback(by_hand)
    assert result.passed and result.score == result.max_score > 0, text


def test_the_predicted_reference_is_the_library_and_differs_from_true():
    """On every case the step with predicted labels is FGSMRegularizer(labels="predicted")'s
    step, and moves the weights differently from the step with the true labels: the graded
    choice is never vacuous."""
    for case in ex03.EXERCISE.cases:
        inputs = case.inputs()
        craft = {"true": "predicted", "predicted": "true"}[case.labels]
        ref = ex03.reference_step(case, inputs)["one_pass"]["state"]
        other = ex03._step(inputs, case, craft=craft, one_pass=True)["state"]
        assert np.abs(ref - other).max() > 1e-4, case.describe()
        # the library's objective, one SGD step (alpha strictly inside (0, 1): one pass)
        model, optimizer = fresh_copy(inputs, case.lr)
        objective = training.FGSMRegularizer(case.eps, case.alpha, labels=case.labels)
        optimizer.zero_grad()
        objective(model, inputs["x"], inputs["y"], 0.0).backward()
        optimizer.step()
        tol = 1e-9 if case.dtype == "float64" else 2e-5
        assert np.allclose(parameter_vector(model), ref, rtol=0, atol=tol), case.describe()


def test_hidden_cases_from_json_accept_the_labels_choice(tmp_path):
    path = tmp_path / "hidden.json"
    base = {"function": "fgsm_training_step", "eps": 0.2, "alpha": 0.5, "seed": 9, "n": 8}
    path.write_text(
        json.dumps([{**base, "points": 1, "labels": "predicted"}, {**base, "points": 1}])
    )
    cases = load_hidden_cases(path)
    assert [c.labels for c in cases] == ["predicted", "true"] and all(c.hidden for c in cases)
    path.write_text(json.dumps([{**base, "points": 1, "labels": "leaked"}]))
    with pytest.raises(Exception, match="labels must be one of"):
        load_hidden_cases(path)


def _no_zero_grad(model, optimizer, x, y, eps, alpha, labels="true"):
    x_adv = attacks.fgsm(model, x, y if labels == "true" else None, eps)
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _train_mode_attack(model, optimizer, x, y, eps, alpha, labels="true"):
    target = y if labels == "true" else model(x).argmax(1)  # train mode throughout
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_req), target), x_req)
    x_adv = (x + eps * grad.sign()).clamp(0, 1).detach()
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _left_in_eval(model, optimizer, x, y, eps, alpha, labels="true"):
    loss = step(model, optimizer, x, y, eps, alpha, labels)
    model.eval()
    return loss


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (_no_zero_grad, "optimizer.zero_grad()"),
        (_train_mode_attack, "crafted with the model in train mode"),
        (lambda m, o, x, y, e, a, labels: step(m, o, x, y, e, 1 - a, labels), "alpha weighs the wrong term"),
        (lambda m, o, x, y, e, a, labels: step(m, o, x, y, e, 0.0, labels), "only the adversarial loss"),
        (_left_in_eval, "left in eval mode"),
        (lambda m, o, x, y, e, a, labels: (step(m, o, x, y, e, a, labels), None)[1], "the returned loss"),
    ],
    ids=["no-zero-grad", "train-mode-attack", "alpha-swapped", "adv-only", "eval", "no-loss"],
)  # fmt: skip
def test_typical_mistakes_lose_points_with_a_reason(wrong, says):
    result, text = _feedback(wrong)
    assert result.score < result.max_score
    assert says in text, text


def test_an_answer_without_the_labels_argument_fails_politely():
    result, text = _feedback(lambda m, o, x, y, e, a: step(m, o, x, y, e, a))
    assert result.score == 0 and 'labels="predicted"' in text, text


def test_crafting_with_predicted_labels_where_true_ones_are_asked_is_named():
    result, text = _feedback(lambda *a, **k: step(*a, **k, craft="predicted"))
    lost, worth = _lost(result, "true")
    assert lost == worth and _lost(result, "predicted")[0] == 0, text
    assert "with labels='true' eq. (2) crafts them with y" in text, text


def test_crafting_with_true_labels_where_predicted_ones_are_asked_is_named():
    result, text = _feedback(lambda *a, **k: step(*a, **k, craft="true"))
    lost, worth = _lost(result, "predicted")
    assert lost == worth and _lost(result, "true")[0] == 0, text
    assert "with labels='predicted' the adversarial half uses the model's own predictions" in text
    assert "the returned loss" not in text, text  # one mistake, one message


def test_predictions_taken_in_train_mode_are_named():
    def train_mode_predictions(model, optimizer, x, y, eps, alpha, labels="true"):
        if labels == "true":
            return step(model, optimizer, x, y, eps, alpha)
        with torch.no_grad():
            target = model(x).argmax(1)  # the model arrives in train mode: batch statistics
        return _with_target(model, optimizer, x, y, eps, alpha, target)

    result, text = _feedback(train_mode_predictions)
    assert _lost(result, "predicted")[0] == _lost(result, "predicted")[1], text
    assert "predicted labels were taken with the model in train mode" in text, text


def _with_target(model, optimizer, x, y, eps, alpha, target, loss_labels=None):
    x_adv = attacks.fgsm(model, x, target, eps)
    model.train()
    y = y if loss_labels is None else loss_labels
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def test_predicted_labels_in_the_loss_are_named():
    def in_the_loss(model, optimizer, x, y, eps, alpha, labels="true"):
        if labels == "true":
            return step(model, optimizer, x, y, eps, alpha)
        model.eval()
        with torch.no_grad():
            predicted = model(x).argmax(1)
        return _with_target(model, optimizer, x, y, eps, alpha, predicted, loss_labels=predicted)

    result, text = _feedback(in_the_loss)
    assert _lost(result, "predicted")[0] == _lost(result, "predicted")[1], text
    assert "both halves of the loss still use the true labels y" in text, text


def test_check_leaves_the_callers_random_stream_as_it_was():
    """A student's notebook seeds once and expects its numbers; check() must not draw from
    that stream (building the case models, crafting the references)."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check("fgsm_training_step", step)
    assert torch.equal(torch.get_rng_state(), before)
