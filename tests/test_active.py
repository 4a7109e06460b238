"""course_adv.active: the query rules of adversarial active learning (notebook 09)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from course_adv import active
from course_adv.data import Dataset


def _linear(classes: int, dim: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).double()


def _exact_distance(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """min_k |f_k - f_k0| / ||w_k - w_k0||: the distance to the nearest boundary of a linear
    classifier, in closed form."""
    lin = model[1]
    f = lin(x.flatten(1))
    k0 = f.argmax(1)
    w = lin.weight[None] - lin.weight[k0][:, None]  # (N, C, D)
    gap = (f - f.gather(1, k0[:, None])).abs()
    dist = gap / w.norm(dim=2).clamp_min(1e-30)
    dist[torch.arange(len(x)), k0] = torch.inf
    return dist.amin(1).detach()


@pytest.mark.parametrize("classes", [2, 5])
def test_deepfool_distance_is_the_exact_distance_for_a_linear_model(classes):
    model = _linear(classes)
    x = 0.4 + 0.2 * torch.rand(64, 1, 12, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():  # small logits, so the boundary lies inside [0, 1]^D (no clipping)
        model[1].weight.mul_(3.0)
    got = active.deepfool_distance(model, x, overshoot=0.0)
    exact = _exact_distance(model, x)
    assert torch.allclose(got, exact + 1e-4, atol=1e-9), (got - exact).abs().max()


def test_deepfool_distance_restores_mode_and_keeps_input():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    x = torch.rand(10, 1, 12, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    d = active.deepfool_distance(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, before) and d.shape == (10,) and (d >= 0).all()
    assert all(p.grad is None for p in model.parameters())


def test_select_queries_picks_the_k_smallest_unlabelled_with_ties_by_index():
    scores = torch.tensor([0.5, 0.1, 0.3, 0.1, 0.9, 0.1, 0.2])
    labelled = torch.tensor([3])
    before = scores.clone(), labelled.clone()
    got = active.select_queries(scores, labelled, 4)
    assert got.tolist() == [1, 5, 6, 2]  # 3 is labelled; the tie 1 < 5 goes by index
    assert got.dtype == torch.long
    assert torch.equal(scores, before[0]) and torch.equal(labelled, before[1])


@pytest.mark.parametrize("seed", range(5))
def test_select_queries_never_repeats_a_labelled_point(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(50, generator=g)
    labelled = torch.randperm(50, generator=g)[:20]
    got = active.select_queries(scores, labelled, 30)  # every unlabelled point
    assert set(got.tolist()) == set(range(50)) - set(labelled.tolist())
    assert torch.all(scores[got][1:] >= scores[got][:-1])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((torch.tensor([0.1, float("nan")]), torch.tensor([], dtype=torch.long), 1), ValueError),
        ((torch.tensor([0.1, 0.2]), torch.tensor([0.0]), 1), TypeError),
        ((torch.tensor([0.1, 0.2]), torch.tensor([True, False]), 1), TypeError),
        ((torch.tensor([0.1, 0.2]), torch.tensor([2]), 1), ValueError),
        ((torch.tensor([0.1, 0.2]), torch.tensor([0]), 2), ValueError),
    ],
    ids=["nan", "float-labelled", "bool-labelled", "out-of-range", "k-too-large"],
)
def test_select_queries_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        active.select_queries(*args)


def test_query_dfal_is_select_queries_on_the_deepfool_distance():
    model = _linear(4, seed=3)
    pool = torch.rand(40, 1, 12, generator=torch.Generator().manual_seed(2)).double()
    labelled = torch.tensor([5, 0, 17])
    dist = active.deepfool_distance(model, pool)
    got = active.query_dfal(model, pool, labelled, 6)
    assert got.tolist() == active.select_queries(dist, labelled, 6).tolist()
    assert not set(got.tolist()) & {5, 0, 17}


def test_softmax_margin_and_entropy_rank_uncertain_points_first():
    model = _linear(3, seed=0)
    x = torch.rand(30, 1, 12, generator=torch.Generator().manual_seed(0)).double()
    margin, ent = active.softmax_margin(model, x), active.entropy_score(model, x)
    assert margin.shape == ent.shape == (30,)
    assert ((margin >= 0) & (margin <= 1)).all() and (ent <= 0).all()
    p = torch.softmax(model(x), 1).detach()
    top = p.sort(1, descending=True).values
    assert torch.allclose(margin, top[:, 0] - top[:, 1])
    assert torch.allclose(ent, (p * p.log()).sum(1))


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    g = torch.Generator().manual_seed(0)
    means = torch.rand(3, 1, 6, 6, generator=g)

    def draw(n):
        y = torch.arange(n) % 3
        return (means[y] + 0.3 * torch.rand(n, 1, 6, 6, generator=g)).clamp(0, 1), y

    xtr, ytr = draw(120)
    xte, yte = draw(60)
    return Dataset(xtr, ytr, xte, yte, ("a", "b", "c"), "tiny")


def _model():
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("strategy", active.STRATEGIES)
def test_curve_has_one_entry_per_round_and_is_reproducible(tiny, strategy):
    kw = dict(seed=1, initial=6, batch=4, rounds=3, steps=10, subset=30, model_fn=_model)
    before = dataclasses.replace(tiny, x_train=tiny.x_train.clone())
    first = active.active_learning_curve(strategy, tiny, **kw)
    second = active.active_learning_curve(strategy, tiny, **kw)
    assert first["labels"] == [6, 10, 14, 18] and len(first["accuracy"]) == 4
    assert first["accuracy"] == second["accuracy"]
    assert torch.equal(first["queried"], second["queried"])
    assert len(set(first["queried"].tolist())) == 18  # never the same point twice
    assert torch.equal(tiny.x_train, before.x_train)
    assert 0 <= active.area_under_curve(first) <= 1


def test_curve_seeds_differ_and_adversarial_option_runs(tiny):
    kw = dict(initial=6, batch=4, rounds=2, steps=10, model_fn=_model)
    a = active.active_learning_curve("random", tiny, seed=0, **kw)
    b = active.active_learning_curve("random", tiny, seed=1, **kw)
    assert not torch.equal(a["queried"], b["queried"])
    adv = active.active_learning_curve("dfal", tiny, seed=0, add_adversarial=True, **kw)
    assert adv["labels"] == [6, 10, 14]
    with pytest.raises(ValueError, match="add_adversarial"):
        active.active_learning_curve("random", tiny, seed=0, add_adversarial=True, **kw)
    with pytest.raises(ValueError, match="strategy"):
        active.active_learning_curve("bald", tiny, seed=0, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"initial": 0}, "initial"),
        ({"rounds": -1}, "rounds"),
        ({"subset": 2}, "subset"),
        ({"rounds": 100}, "pool size"),
    ],
)
def test_curve_rejects_bad_settings(tiny, kw, match):
    settings = dict(seed=0, initial=6, batch=4, rounds=2, steps=10, model_fn=_model) | kw
    with pytest.raises(ValueError, match=match):
        active.active_learning_curve("random", tiny, **settings)
