"""Exercise 08's spec (the monotonicity check with a tolerance, the per-point worst case over
attacks): right answers pass, typical wrong ones fail with feedback that names the mistake,
and the reference agrees with the course's own checklist and evaluation. Through ``check()``:
the same cases and scoring as ``course-adv grade``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_adv import attacks, checklist, evaluation
from course_adv.data import load_data
from course_adv.grading import check
from course_adv.grading.exercises import ex08_evaluation as ex08
from course_adv.grading.registry import load_hidden_cases
from course_adv.models import build_model
from course_adv.training import Standard, train

# --------------------------------------------------------------------------- monotone_check


def monotone(eps, accuracy, tolerance, *, strict=True, sign=1, tol_sign=1, against="previous",
             larger=True, sort=True, in_place=False, invert=False, as_tensor=False):  # fmt: skip
    """A right answer, and (with the options) the typical mistakes."""
    if in_place:
        eps.sort()
        pairs = list(zip(eps, accuracy, strict=True))
    else:
        pairs = (
            sorted(zip(eps, accuracy, strict=True))
            if sort
            else list(zip(eps, accuracy, strict=True))
        )
    offending = []
    for i in range(1, len(pairs)):
        base = {"previous": pairs[i - 1][1], "first": pairs[0][1],
                "lowest": min(a for _, a in pairs[:i])}[against]  # fmt: skip
        rise = sign * (pairs[i][1] - base)
        if (rise > tol_sign * tolerance) if strict else (rise >= tol_sign * tolerance):
            offending.append(pairs[i][0] if larger else pairs[i - 1][0])
    passed = not offending
    if as_tensor:
        return torch.tensor(passed), torch.tensor(offending, dtype=torch.float64)
    return (not passed if invert else passed), offending


def _feedback(function, fn):
    result = check(function, fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


def test_right_answers_pass_as_lists_or_tensors():
    for fn in (monotone, lambda *a: monotone(*a, as_tensor=True)):
        result, text = _feedback("monotone_check", fn)
        assert result.passed and result.score == result.max_score > 0, text


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"sort": False}, "order given"),
        ({"in_place": True}, "changed the lists"),
        ({"sign": -1}, "falling"),
        ({"tol_sign": -1}, "tolerance is applied the wrong way"),
        ({"strict": False}, "exactly the tolerance"),
        ({"against": "first"}, "first (clean)"),
        ({"against": "lowest"}, "lowest one so far"),
        ({"larger": False}, "smaller eps"),
        ({"invert": True}, "passed must be True exactly"),
    ],
    ids=["unsorted", "in-place", "falls", "tolerance-sign", "non-strict", "first", "lowest",
         "smaller", "inverted"],
)  # fmt: skip
def test_typical_monotone_mistakes_lose_points_with_a_reason(options, says):
    result, text = _feedback("monotone_check", lambda *a: monotone(*a, **options))
    assert result.score < result.max_score
    assert says in text, text


def test_wrong_return_types_and_order_are_named():
    result, text = _feedback("monotone_check", lambda *a: monotone(*a)[0])
    assert result.score == 0 and "return a pair" in text
    result, text = _feedback("monotone_check", lambda *a: (monotone(*a)[0], monotone(*a)[1][::-1]))
    assert result.score < result.max_score  # a case with two offending eps exists
    assert "increasing eps" in text, text


def test_the_cases_cover_every_kind_and_a_rise_of_exactly_the_tolerance():
    cases = [c for c in ex08.EXERCISE.cases if c.function == "monotone_check"]
    assert {c.kind for c in cases} == {"monotone", "rises", "exact", "creep"}
    assert any(c.order == "shuffled" for c in cases)
    for case in cases:
        inputs = case.inputs()
        eps, acc, tol = inputs["eps"], inputs["accuracy"], inputs["tolerance"]
        assert len(eps) == case.n_eps == len(set(eps)) and all(0 <= a <= 1 for a in acc)
        assert all((a * 256).is_integer() for a in acc)  # exact differences
        pairs = sorted(zip(eps, acc, strict=True))
        rises = [b[1] - a[1] for a, b in zip(pairs[:-1], pairs[1:], strict=True)]
        if case.kind == "exact":
            assert tol in rises and not monotone(eps, acc, tol)[1]
        if case.kind == "monotone":
            assert max(rises) <= 0


def test_the_reference_agrees_with_the_checklist():
    """check_monotone_in_eps's rule (consecutive rises above the tolerance) on its own values:
    the library's verdict and the reference's agree, on a masked-looking and a sound curve."""
    for curve, expected in (
        ([0.9, 0.5, 0.56, 0.3, 0.305], False),
        ([0.9, 0.5, 0.4, 0.4, 0.0], True),
    ):
        eps = [0.0, 0.3 / 3, 2 * 0.3 / 3, 0.3, 0.6]  # the library's grid, to the last bit
        masks = {("PGD-5", e): _mask_with_mean(a) for e, a in zip(eps[1:], curve[1:], strict=True)}
        masks[("clean", 0.0)] = _mask_with_mean(curve[0])
        lib = checklist.check_monotone_in_eps(None, None, None, 0.3, high_eps=0.6, steps=5,
                                              cache=masks)  # fmt: skip
        ref = ex08._offending(eps, curve, checklist.Tolerances.order)
        assert lib.passed is expected is (not ref)
    assert ref == [] and ex08._offending(eps, [0.9, 0.5, 0.56, 0.3, 0.305], 0.01) == [eps[2]]


def _mask_with_mean(value, n=100):
    return torch.arange(n) < round(value * n)


# --------------------------------------------------------------------------- per_point_worst_case


def worst(masks, *, how="right", scale=1.0):
    matrix = torch.stack(list(masks.values())).float()
    if how == "right":
        value = matrix.min(0).values.mean()
    elif how == "min_of_means":
        value = matrix.mean(1).min()
    elif how == "mean_of_means":
        value = matrix.mean()
    elif how == "union":
        value = matrix.max(0).values.mean()
    elif how == "count":
        value = matrix.min(0).values.sum()
    else:  # the last attack
        value = matrix[-1].mean()
    return value.item() * scale


def test_the_right_worst_case_passes_as_a_float_or_a_tensor():
    for fn in (worst, lambda m: torch.stack(list(m.values())).all(0).double().mean()):
        result, text = _feedback("per_point_worst_case", fn)
        assert result.passed and result.score == result.max_score > 0, text


@pytest.mark.parametrize(
    ("fn", "says"),
    [
        (lambda m: worst(m, how="min_of_means"), "minimum over attacks of the per-attack"),
        (lambda m: worst(m, how="mean_of_means"), "mean of the per-attack accuracies"),
        (lambda m: worst(m, how="union"), "right under *some* attack"),
        (lambda m: worst(m, how="last"), "last attack only"),
        (lambda m: worst(m, how="count"), "number of robust points"),
        (lambda m: worst(m, scale=100.0), "percentage"),
        (lambda m: torch.stack(list(m.values())).all(0), "return a number"),
    ],
    ids=["min-of-means", "mean-of-means", "union", "last", "count", "percent", "mask"],
)
def test_typical_worst_case_mistakes_lose_points_with_a_reason(fn, says):
    result, text = _feedback("per_point_worst_case", fn)
    assert result.score < result.max_score
    assert says in text, text


def test_changing_the_masks_is_flagged():
    def in_place(masks):
        value = worst(masks)
        for mask in masks.values():
            mask.zero_()
        return value

    result, text = _feedback("per_point_worst_case", in_place)
    assert not result.passed and "changed the masks" in text


def test_the_reference_is_the_evaluation_modules_worst_case():
    """On a real model and three deterministic attacks, the reference applied to the robust
    masks is ``evaluation.worst_case_accuracy``'s "worst case", and below the smallest mean."""
    data = load_data()
    x, y = data.x_test[:300], data.y_test[:300]
    torch.manual_seed(0)
    model = build_model("softmax")
    train(model, data.x_train[:1000], data.y_train[:1000], Standard(), epochs=1, lr=0.05,
          device="cpu", progress=False)  # fmt: skip
    named = {
        "FGSM": lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.08),
        "least likely": lambda m, xb, yb: attacks.fgsm(
            m, xb, attacks.least_likely_class(m, xb), 0.12, targeted=True
        ),
        "BIM": lambda m, xb, yb: attacks.bim(m, xb, yb, 0.05),
    }
    library = evaluation.worst_case_accuracy(model, x, y, named)
    masks = {name: evaluation.robust_mask(model, x, y, attack) for name, attack in named.items()}
    case = ex08.MaskCase(
        function="per_point_worst_case", seed=0, n=len(x), attacks=len(named), points=1
    )
    ref = ex08.reference_worst_case(case, masks)
    assert ref["ref"] == pytest.approx(library["worst case"], abs=1e-6)
    assert ref["mistakes"]["min_of_means"] == pytest.approx(
        min(library[k] for k in named), abs=1e-6
    )
    assert ref["ref"] < ref["mistakes"]["min_of_means"]


def test_cases_round_trip_through_files_and_hidden_cases_are_read(tmp_path):
    for case in ex08.EXERCISE.cases:
        inputs = case.inputs()
        case.save_inputs(inputs, tmp_path / "case")
        back = case.load_inputs(tmp_path / "case")
        if case.function == "monotone_check":
            assert back == inputs
        else:
            assert list(back) == list(inputs)
            assert all(torch.equal(back[k], inputs[k]) for k in inputs)
    hidden = tmp_path / "hidden.json"
    hidden.write_text(
        '[{"function": "monotone_check", "seed": 9, "n_eps": 12, "tolerance_units": 6,'
        ' "kind": "creep", "order": "shuffled", "points": 1},'
        ' {"function": "per_point_worst_case", "seed": 9, "n": 3000, "attacks": 8, "points": 1}]'
    )
    cases = load_hidden_cases(hidden)
    assert [c.function for c in cases] == ["monotone_check", "per_point_worst_case"]
    assert all(c.hidden for c in cases)
    assert len(cases[0].inputs()["eps"]) == 12 and np.isclose(cases[0].tolerance, 6 / 256)
