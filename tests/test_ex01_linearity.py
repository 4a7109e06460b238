"""Exercise 01's spec: right answers pass, typical wrong ones fail with feedback that names the
mistake. Through ``check()`` (the same cases and scoring as ``course-adv grade``, in-process);
the end-to-end grading of the solution and the untouched exercise is in the grading tests."""

from __future__ import annotations

import pytest
import torch

from course_adv.grading import check
from course_adv.linearity import linear_worst_case


def perturbation(W, x, y, t, eps):
    direction = torch.sign(W[t] - W[y]).view_as(x).to(x.dtype)
    return ((x + eps * direction).clamp(0, 1) - x).detach()


def gap(W, eta, y, t):
    return ((W[t] - W[y]) * eta.flatten(1)).sum(1)


def _feedback(function, fn):
    result = check(function, fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


def test_right_answers_score_full_marks():
    for function, fn in (("worst_case_perturbation", perturbation), ("gap_change", gap)):
        result, _ = _feedback(function, fn)
        assert result.passed and result.score == result.max_score > 0


def test_any_optimal_perturbation_passes_ties_included():
    """Where w_t - w_y is exactly 0 any move inside the box is optimal: it must still pass."""

    def tie_breaking(W, x, y, t, eps):
        eta = perturbation(W, x, y, t, eps)
        tie = (W[t] - W[y] == 0).view_as(x)
        return torch.where(tie, (x - eps).clamp(0, 1) - x, eta)

    assert check("worst_case_perturbation", tie_breaking).passed


@pytest.mark.parametrize(
    ("name", "wrong", "says"),
    [
        (
            "no clipping",
            lambda W, x, y, t, eps: eps * torch.sign(W[t] - W[y]).view_as(x).to(x.dtype),
            "x + eta leaves [0, 1]",
        ),
        (
            "towards y",
            lambda W, x, y, t, eps: perturbation(W, x, t, y, eps),
            "pushes towards y",
        ),
        (
            "only the target row",
            lambda W, x, y, t, eps: (x + eps * W[t].sign().view_as(x)).clamp(0, 1) - x,
            "less than the best feasible step",
        ),
        (
            "twice eps",
            lambda W, x, y, t, eps: perturbation(W, x, y, t, 2 * eps),
            "more than eps",
        ),
        ("a list", lambda W, x, y, t, eps: perturbation(W, x, y, t, eps).tolist(), "returned"),
    ],
)
def test_typical_wrong_perturbations_lose_points_with_a_reason(name, wrong, says):
    result, text = _feedback("worst_case_perturbation", wrong)
    assert result.score < result.max_score, name
    assert says in text, text


def test_a_perturbation_that_mutates_x_is_flagged():
    def in_place(W, x, y, t, eps):
        eta = perturbation(W, x, y, t, eps)
        x += eta
        return eta

    result, text = _feedback("worst_case_perturbation", in_place)
    assert not result.passed and "changed its input x in place" in text


@pytest.mark.parametrize(
    ("name", "wrong", "says"),
    [
        ("reversed", lambda W, eta, y, t: -gap(W, eta, y, t), "z_y - z_t"),
        (
            "the unclipped bound",
            lambda W, eta, y, t: eta.abs().amax(dim=(1, 2, 3)) * (W[t] - W[y]).abs().sum(1),
            "before clipping",
        ),
        ("the sum", lambda W, eta, y, t: gap(W, eta, y, t).sum(), "not their sum"),
        ("the target row only", lambda W, eta, y, t: (W[t] * eta.flatten(1)).sum(1), "expected"),
    ],
)
def test_typical_wrong_gap_changes_lose_points_with_a_reason(name, wrong, says):
    result, text = _feedback("gap_change", wrong)
    assert result.score == 0, name
    assert says in text, text


def test_the_course_function_is_not_an_answer_in_check():
    def borrowed(W, x, y, t, eps):
        return torch.stack(
            [linear_worst_case(W[t[i]] - W[y[i]], x[i : i + 1], eps)[0][0] for i in range(len(x))]
        )

    borrowed.__module__ = "course_adv.linearity"
    result = check("worst_case_perturbation", borrowed)
    assert any("course's own" in note for note in result.notes)
