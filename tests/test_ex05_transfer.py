"""Exercise 05's spec (the transfer rate; one step of Jacobian-based augmentation): the
solution notebook's answers score full marks, untouched stubs score nothing, typical wrong
answers lose points with feedback that names the mistake, and the reference behaves as the
papers say. Through ``check()``: the same cases and scoring as ``course-adv grade``."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_adv.grading import check
from course_adv.grading.exercises import ex05_transfer as spec

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _solution(name: str):
    """The function ``name`` as the solution notebook defines it."""
    nb = nbformat.read(ROOT / "solutions" / "05_transfer_blackbox.ipynb", as_version=4)
    namespace = {"torch": torch, "F": F}
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(f"def {name}("):
            exec(cell.source, namespace)
    return namespace[name]


def _feedback(name, fn):
    result = check(name, fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


@pytest.mark.parametrize("name", ["transfer_rate", "jacobian_augmentation"])
def test_the_solution_scores_full_marks_and_a_stub_nothing(name):
    result, text = _feedback(name, _solution(name))
    assert result.passed and result.score == result.max_score > 0, text

    def stub(*args):
        raise NotImplementedError("your code here: replace this line with your solution")

    result, text = _feedback(name, stub)
    assert result.score == 0 and "not written yet" in text, text


# --------------------------------------------------------------------------- transfer rate


def _rate(source, target, x, y, attack, *, clean=True, fooled=True, target_right=False,
          on=None, scale=1.0, complement=False):  # fmt: skip
    """The transfer rate with one piece of bookkeeping changed."""
    x_adv = attack(source if on is None else on(source, target), x, y)
    with torch.no_grad():
        keep = torch.ones_like(y, dtype=torch.bool)
        if clean:
            keep &= source(x).argmax(1) == y
        if fooled:
            keep &= source(x_adv).argmax(1) != y
        if target_right:
            keep &= target(x).argmax(1) == y
        rate = ((target(x_adv).argmax(1) != y) & keep).sum().item() / keep.sum().item()
    return scale * (1 - rate if complement else rate)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"clean": False, "fooled": False}, "an entry of the transfer matrix"),
        ({"fooled": False}, "also those where the attack fails on the source"),
        ({"clean": False}, "including those it already got wrong on x"),
        ({"target_right": True}, "dropped the points the target gets wrong on x"),
        ({"on": lambda s, t: t}, "crafted on the target"),
        ({"complement": True}, "the share that does not transfer"),
        ({"scale": 100.0}, "not a percentage"),
    ],
    ids=[
        "every-point",
        "clean-only",
        "fooled-only",
        "target-right",
        "on-target",
        "complement",
        "percent",
    ],  # fmt: skip
)
def test_typical_transfer_rate_mistakes_lose_points_with_a_reason(options, says):
    result, text = _feedback("transfer_rate", lambda *a: _rate(*a, **options))
    assert result.score < result.max_score
    assert says in text, text


def test_a_rate_that_is_not_a_number_is_named():
    result, text = _feedback("transfer_rate", lambda *a: "60%")
    assert result.score == 0 and "return a float" in text, text


def test_the_reference_rate_is_one_for_the_source_itself_and_differs_from_the_entry():
    case = next(c for c in spec.EXERCISE.cases if c.function == "transfer_rate")
    inputs = case.inputs()
    ref = spec.reference_transfer(case, inputs)
    same = spec.reference_transfer(case, {**inputs, "target": inputs["source"]})
    assert same["ref"] == 1.0  # white-box: every success of the source fools the source
    assert 0 < ref["ref"] < 1 and ref["counted"] >= 10
    distinct = [v for v in ref["mistakes"].values() if not math.isnan(v)]
    assert all(abs(v - ref["ref"]) > 1.01 / ref["counted"] for v in distinct)


# --------------------------------------------------------------------------- augmentation


def _augment(substitute, x, labels, lam, *, score="logit", sign=True, clip=True, order="old"):
    x_in = x.clone().requires_grad_(True)
    logits = substitute(x_in)
    if score == "loss":
        value = F.cross_entropy(logits, labels, reduction="sum")
    elif score == "probability":
        value = logits.softmax(1).gather(1, labels.view(-1, 1)).sum()
    else:
        own = logits.argmax(1) if score == "own" else labels
        value = logits.gather(1, own.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(value, x_in)
    new = x + lam * (grad.sign() if sign else grad)
    new = (new.clamp(0, 1) if clip else new).detach()
    if order == "new only":
        return new
    return torch.cat([new, x]) if order == "swapped" else torch.cat([x, new])


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"score": "loss"}, "FGSM's step"),
        ({"score": "probability"}, "softmax probability"),
        ({"score": "own"}, "substitute's own predicted class"),
        ({"sign": False}, "not the gradient itself"),
        ({"clip": False}, "leave [0, 1]"),
        ({"order": "new only"}, "only the new points"),
        ({"order": "swapped"}, "halves are swapped"),
    ],
    ids=["loss", "probability", "own-label", "no-sign", "no-clip", "new-only", "swapped"],
)
def test_typical_augmentation_mistakes_lose_points_with_a_reason(options, says):
    result, text = _feedback("jacobian_augmentation", lambda *a: _augment(*a, **options))
    assert result.score < result.max_score
    assert says in text, text


def test_changing_x_in_place_is_flagged():
    def in_place(substitute, x, labels, lam):
        out = _augment(substitute, x, labels, lam)
        x.add_(0.01)
        return out

    result, text = _feedback("jacobian_augmentation", in_place)
    assert not result.passed and "changed its input x in place" in text, text


def test_the_reference_step_doubles_the_set_and_moves_each_pixel_by_lambda():
    """Papernot et al. 2017, Algorithm 1: S_rho kept, each new point |lam| away per pixel
    wherever the gradient is non-zero and the clip leaves room; all inside [0, 1]."""
    case = next(
        c
        for c in spec.EXERCISE.cases
        if c.function == "jacobian_augmentation" and c.dtype == "float64"
    )
    inputs = case.inputs()
    ref = spec.reference_augment(case, inputs)["ref"]
    x = inputs["x"].numpy()
    assert ref.shape == (2 * len(x), *x.shape[1:]) and np.array_equal(ref[: len(x)], x)
    step = np.abs(ref[len(x) :] - x)
    inside = (x >= abs(case.lam)) & (x <= 1 - abs(case.lam))
    moved = step[inside]
    assert np.all((np.abs(moved - abs(case.lam)) < 1e-12) | (moved == 0))
    assert (moved > 0).mean() > 0.5 and ref.min() >= 0 and ref.max() <= 1
