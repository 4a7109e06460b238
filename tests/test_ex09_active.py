"""Exercise 09's spec (DFAL's query rule): right answers pass, typical wrong ones fail with
feedback that names the mistake. Through ``check()``: the same cases and scoring as
``course-adv grade``."""

from __future__ import annotations

import pytest
import torch

from course_adv import attacks
from course_adv.grading import check
from course_adv.grading.exercises.ex09_active import EXERCISE, QueryCase, reference_query
from course_adv.grading.integrity import resolve


def _free(pool, labelled):
    taken = set(labelled.tolist())
    return torch.tensor([i for i in range(len(pool)) if i not in taken], dtype=torch.long)


def query_dfal(model, pool, labelled, k, *, whole_pool=False):
    free = _free(pool, labelled)
    if whole_pool:  # DeepFool on every point, labelled ones masked afterwards: also right
        _, norms = attacks.deepfool(model, pool)
        dist = norms[free]
    else:
        x = pool[free]
        x_adv, _ = attacks.deepfool(model, x)
        dist = (x_adv - x).flatten(1).norm(dim=1)
    return free[torch.sort(dist, stable=True).indices[:k]]


def _feedback(fn):
    result = check("query_dfal", fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


def test_the_right_answer_passes_with_deepfool_on_any_batch():
    for fn in (query_dfal, lambda *a: query_dfal(*a, whole_pool=True)):
        result, text = _feedback(fn)
        assert result.passed and result.score == result.max_score > 0, text


def _largest(model, pool, labelled, k):
    free = _free(pool, labelled)
    _, norms = attacks.deepfool(model, pool[free])
    return free[torch.sort(-norms, stable=True).indices[:k]]


def _ignores_labelled(model, pool, labelled, k):
    _, norms = attacks.deepfool(model, pool)
    return torch.sort(norms, stable=True).indices[:k]


def _batch_norm(model, pool, labelled, k):
    free = _free(pool, labelled)
    x = pool[free]
    x_adv, _ = attacks.deepfool(model, x)
    dist = (x_adv - x).norm().expand(len(x))  # one norm for the whole batch
    return free[torch.sort(dist, stable=True).indices[:k]]


def _positions(model, pool, labelled, k):
    free = _free(pool, labelled)
    _, norms = attacks.deepfool(model, pool[free])
    return torch.sort(norms, stable=True).indices[:k]  # positions in free, not pool indices


def _margin(model, pool, labelled, k):
    free = _free(pool, labelled)
    with torch.no_grad():
        top2 = torch.softmax(model(pool[free]), 1).topk(2, dim=1).values
    return free[torch.sort(top2[:, 0] - top2[:, 1], stable=True).indices[:k]]


def _mutates(model, pool, labelled, k):
    out = query_dfal(model, pool, labelled, k)
    pool.mul_(0.5)
    return out


def _train_mode(model, pool, labelled, k):
    out = query_dfal(model, pool, labelled, k)
    model.train()
    return out


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (_largest, "farthest"),
        (_ignores_labelled, "labelled already"),
        (_batch_norm, "one l2 norm per example"),
        (_positions, "positions in the list of unlabelled points"),
        (_margin, "softmax-margin ranking"),
        (lambda *a: query_dfal(*a).flip(0), "wrong order"),
        (lambda *a: query_dfal(*a).tolist(), "1-D integer tensor"),
        (lambda *a: query_dfal(*a).float(), "1-D integer tensor"),
        (lambda m, p, l, k: query_dfal(m, p, l, k + 1), "return exactly k"),
        (_mutates, "changed its input pool in place"),
        (_train_mode, "train mode"),
    ],
    ids=["largest", "labelled", "batch-norm", "positions", "margin", "order", "list", "float",
         "k+1", "mutates", "train-mode"],
)  # fmt: skip
def test_typical_mistakes_lose_points_with_a_reason(wrong, says):
    result, text = _feedback(wrong)
    assert result.score < result.max_score
    assert says in text, text


def test_the_module_answer_is_forbidden_but_deepfool_is_allowed():
    """The exercise is the ranking: calling DeepFool is fine, the module's selection is not."""
    (graded,) = EXERCISE.functions
    assert {"course_adv.active.query_dfal", "course_adv.active.select_queries"} <= set(
        graded.course_answers
    )
    assert not any(name.startswith("course_adv.attacks") for name in graded.course_answers)
    assert all(callable(resolve(name)) for name in graded.course_answers)  # none misspelt


def test_every_case_tells_the_mistakes_apart():
    """Each public case's mistakes give answers different from the reference (and, where the
    labelled points matter, ignoring them picks a labelled point), so every diagnosis can fire."""
    for case in EXERCISE.cases:
        inputs = case.inputs()
        ref = reference_query(case, inputs)
        for name in ("largest", "margin"):
            assert ref[name] != ref["ref"], (case.describe(), name)
        if case.labelled:
            assert ref["first"] != ref["ref"] and ref["positions"] != ref["ref"], case.describe()
            nearest = torch.sort(torch.from_numpy(ref["dist"]), stable=True).indices[: case.k]
            assert set(nearest.tolist()) & set(ref["labelled"]), case.describe()


def test_the_reference_is_the_paper_rule_on_a_linear_model():
    """Ducoffe & Precioso query the smallest DeepFool distance; for a linear model that is the
    exact distance to the boundary, min_k |f_k - f_k0| / ||w_k - w_k0||, up to the overshoot."""
    case = QueryCase(
        function="query_dfal", seed=5, n=30, labelled=5, k=6, points=1, dtype="float64"
    )
    inputs = case.inputs()
    model, pool = inputs["model"], inputs["pool"]
    lin = model.linear
    with torch.no_grad():
        f = lin(pool.flatten(1))
        k0 = f.argmax(1)
        gap = (f - f.gather(1, k0[:, None])).abs()
        w = (lin.weight[None] - lin.weight[k0][:, None]).norm(dim=2)
        exact = (gap / w.clamp_min(1e-30)).masked_fill(gap == 0, torch.inf).amin(1)
    ref = reference_query(case, inputs)
    free = _free(pool, inputs["labelled"])
    expected = free[torch.sort(exact[free], stable=True).indices[: case.k]]
    assert ref["ref"] == expected.tolist()


def test_a_pool_too_small_for_the_queries_is_rejected():
    with pytest.raises(ValueError, match="labelled \\+ k"):
        QueryCase(function="query_dfal", seed=0, n=10, labelled=8, k=5, points=1)
