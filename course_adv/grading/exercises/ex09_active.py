"""Exercise 09 (``09_active_learning.ipynb``): DFAL's query rule.

Notebook 09 writes the generic query step (sort, skip the labelled points, take k) for the
softmax margin; the exercise composes DFAL's rule end to end (Ducoffe & Precioso 2018):
``query_dfal(model, pool, labelled, k)`` returns the ``k`` unlabelled pool indices with the
smallest DeepFool l2 distance ``||x_adv - x||_2`` (``course_adv.attacks.deepfool`` with its
defaults, which the student may call), nearest first, ties to the lower index, as a 1-D
integer tensor. It is compared with ``course_adv.active.query_dfal`` (which, with the rest of
``course_adv.active``, is forbidden); an answer whose points are as near as the reference's
within float noise also passes (DeepFool on a different batch can differ in the last bits).

The diagnoses recognise: the largest distances instead of the smallest, already-labelled points
chosen, one norm for the whole batch (all distances equal, so the first unlabelled indices),
positions in the unlabelled subset instead of pool indices, the softmax margin instead of
DeepFool, the right points in the wrong order, and changes to the inputs or the model's mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_adv import active
from course_adv.grading.digits import MODEL_NAMES, DigitCase, one_thread
from course_adv.grading.spec import (
    Exercise,
    GradedFunction,
    Outcome,
    as_array,
    as_bool,
    as_ints,
    bounded,
    error_feedback,
    type_name,
)

TOL = 1e-4  # distances within this count as equal (DeepFool on another batch, float32 noise)


@dataclass(frozen=True, kw_only=True)
class QueryCase(DigitCase):
    """A pool of ``n`` test digits, ``labelled`` of them labelled already (chosen by ``seed``),
    and a model; the answer is the next ``k`` queries."""

    eps: float = bounded(0, 1, default=0.0)  # unused: DeepFool needs no budget
    k: int = bounded(1, 100, integer=True)
    labelled: int = bounded(0, 500, integer=True)

    def __post_init__(self) -> None:
        if self.labelled + self.k > self.n:
            raise ValueError(f"labelled + k must be at most n = {self.n}")

    def describe(self) -> str:
        return (
            f"{MODEL_NAMES[self.model]}, {self.dtype}, pool of {self.n} digits, "
            f"{self.labelled} labelled, k={self.k}"
        )

    def _labelled(self) -> torch.Tensor:
        pick = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + 1))
        return pick[: self.labelled].clone()

    def inputs(self) -> dict[str, Any]:
        """``model`` (eval mode), ``pool`` (n x 1 x 28 x 28), ``labelled`` (int64 indices)."""
        base = super().inputs()
        return {
            "model": base["model"],
            "pool": base["x"],
            "y": base["y"],
            "labelled": self._labelled(),
        }

    def save_inputs(self, inputs: Mapping[str, Any], stem: Path) -> None:
        super().save_inputs({**inputs, "x": inputs["pool"]}, stem)
        np.save(f"{stem}.labelled.npy", inputs["labelled"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        base = super().load_inputs(stem)
        labelled = np.load(f"{stem}.labelled.npy", allow_pickle=False)
        return {
            "model": base["model"],
            "pool": base["x"],
            "y": base["y"],
            "labelled": torch.from_numpy(labelled).long(),
        }


def call_query(fn: Callable, case: QueryCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, pool, labelled, k)`` on copies, which come back to show changes in place."""
    model = inputs["model"]
    pool, labelled = inputs["pool"].clone(), inputs["labelled"].clone()
    result = fn(model, pool, labelled, case.k)
    facts: dict[str, Any] = {
        "type": type_name(result),
        "train_mode": any(m.training for m in model.modules()),
    }
    if (
        isinstance(result, torch.Tensor)
        and result.ndim == 1
        and not result.is_floating_point()
        and not result.is_complex()
        and result.dtype != torch.bool
    ):
        facts["indices"] = [int(i) for i in result.tolist()]
    arrays = {
        "pool_after": as_array(pool),
        "labelled_after": as_array(labelled).astype(np.float64),
    }
    return facts, arrays


def _first_k(scores: torch.Tensor, candidates: list[int], k: int) -> list[int]:
    """The k candidates with the smallest scores, ties to the lower index."""
    return sorted(candidates, key=lambda i: (float(scores[i]), i))[:k]


def reference_query(case: QueryCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """DFAL's query, the DeepFool distance of every pool point, and the typical mistakes."""
    model, pool, labelled = inputs["model"], inputs["pool"], inputs["labelled"]
    k, taken = case.k, set(labelled.tolist())
    free = [i for i in range(len(pool)) if i not in taken]
    with one_thread():
        ref = active.query_dfal(model, pool, labelled, k).tolist()
        dist = active.deepfool_distance(model, pool)
        margin = active.softmax_margin(model, pool)
    free_dist = dist[free]
    return {
        "pool": pool.numpy(),
        "labelled": labelled.tolist(),
        "ref": ref,
        "dist": dist.double().numpy(),
        "largest": _first_k(-dist, free, k),
        "first": free[:k],
        "positions": _first_k(free_dist, list(range(len(free))), k),
        "margin": _first_k(margin, free, k),
    }


def _near_enough(idx: list[int], ref: dict[str, Any]) -> bool:
    """As near as the reference's points within TOL, and nearest first within TOL."""
    d = ref["dist"]
    got, best = d[idx], d[ref["ref"]]
    return bool(np.all(np.abs(np.sort(got) - best) <= TOL) and np.all(np.diff(got) >= -TOL))


def score_query(case: QueryCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with a query answer (empty when it is right), each with a hint."""
    if got.error is not None:
        return error_feedback("query_dfal", got.error)
    idx, n, k = got.facts.get("indices"), len(ref["pool"]), case.k
    if idx is None:
        return [
            f"query_dfal() returned {got.type or 'nothing readable'}; return a 1-D integer "
            "tensor of pool indices (torch.long), e.g. torch.tensor([12, 3, 40])."
        ]
    problems = []
    pool_after, labelled_after = got.arrays.get("pool_after"), got.arrays.get("labelled_after")
    if pool_after is None or not np.array_equal(pool_after, ref["pool"]):
        problems.append("query_dfal() changed its input pool in place; work on a copy.")
    if labelled_after is None or labelled_after.astype(np.int64).tolist() != ref["labelled"]:
        problems.append("query_dfal() changed its input labelled in place; work on a copy.")
    if got.facts.get("train_mode"):
        problems.append(
            "query_dfal() left the model in train mode; it was given in eval mode: give it back "
            "in the mode it had."
        )
    if len(idx) != k:
        problems.append(f"query_dfal() returned {len(idx)} indices; return exactly k = {k}.")
    elif len(set(idx)) != k:
        problems.append("the same pool index comes back twice; each query is a different point.")
    elif min(idx) < 0 or max(idx) >= n:
        problems.append(f"indices must be pool positions in [0, {n - 1}].")
    if (
        problems
        or idx == ref["ref"]
        or (not set(idx) & set(ref["labelled"]) and _near_enough(idx, ref))
    ):
        return problems
    if idx == ref["largest"]:
        return [
            "these are the points *farthest* from the boundary; DFAL queries the smallest "
            "DeepFool distances (sort ascending)."
        ]
    if idx == ref["positions"] and idx != ref["first"]:
        return [
            "these look like positions in the list of unlabelled points, not pool indices: map "
            "each position back to the pool index it stands for."
        ]
    if idx == ref["first"]:
        return [
            "these are simply the first unlabelled indices, as if every distance were equal: "
            "take one l2 norm per example, (x_adv - x).flatten(1).norm(dim=1), not one norm "
            "for the whole batch."
        ]
    if idx == ref["margin"]:
        return [
            "that is the softmax-margin ranking (uncertainty sampling); DFAL ranks by the length "
            "of the DeepFool perturbation, ||x_adv - x||_2 from course_adv.attacks.deepfool."
        ]
    if set(idx) & set(ref["labelled"]):
        return [
            "some chosen points are labelled already (they are in labelled); leave them out "
            "before ranking."
        ]
    if sorted(idx) == sorted(ref["ref"]):
        return [
            "the right points in the wrong order: return them nearest first, ties broken by the "
            "lower index."
        ]
    wrong = len(set(idx) - set(ref["ref"]))
    return [
        f"{wrong} of your {k} points are not among the {k} unlabelled points nearest to the "
        "boundary. Hint: DeepFool on the pool, one l2 norm per example, drop the labelled "
        "points, sort ascending, return pool indices."
    ]


EXERCISE = Exercise(
    name="09_active_learning",
    functions=(
        GradedFunction(
            name="query_dfal",
            case_type=QueryCase,
            call=call_query,
            reference=reference_query,
            score=score_query,
            facts={"indices": as_ints, "train_mode": as_bool},
            arrays=("pool_after", "labelled_after"),
            course_answers=(
                "course_adv.active.query_dfal",
                "course_adv.active.select_queries",
                "course_adv.active.deepfool_distance",
                "course_adv.active.active_learning_curve",
            ),
        ),
    ),
    cases=(
        QueryCase(function="query_dfal", seed=0, n=60, labelled=20, k=8, points=3),
        QueryCase(function="query_dfal", seed=1, n=40, labelled=10, k=5, points=3, model="cnn"),
        QueryCase(function="query_dfal", seed=2, n=30, labelled=12, k=6, points=2, dtype="float64"),
        QueryCase(function="query_dfal", seed=3, n=25, labelled=0, k=4, points=2, model="cnn", dtype="float64"),
    ),
)  # fmt: skip
