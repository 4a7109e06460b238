"""The linear explanation (Goodfellow et al. 2015, section 3) and the linearity probe (Fig. 4)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from course_adv import attacks
from course_adv.linearity import linear_worst_case, logits_along, straightness


def test_without_the_box_the_worst_case_is_eps_sign_w_and_gains_eps_times_l1_norm():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(784, generator=g, dtype=torch.float64)
    x = torch.rand(5, 1, 28, 28, generator=g, dtype=torch.float64)
    eta, change = linear_worst_case(w, x, 0.1, box=False)
    assert torch.equal(eta, 0.1 * torch.sign(w).reshape(1, 1, 28, 28).expand_as(x))
    assert torch.allclose(change, torch.full((5,), 0.1 * w.abs().sum().item(), dtype=w.dtype))


def test_the_gain_grows_linearly_with_the_number_of_inputs():
    """eps m n: with weights of average size m, the change is eps * m * n."""
    eps, m = 0.01, 0.5
    for n in (10, 100, 1000):
        _, change = linear_worst_case(
            torch.full((n,), m, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64), eps
        )
        assert change.item() == pytest.approx(eps * m * n, rel=1e-12)


def test_in_the_box_it_beats_every_vertex_of_the_feasible_set():
    """Brute force over all 2^6 sign patterns: nothing in the ball and the box gains more."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.tensor([[0.0, 1.0, 0.05, 0.5, 0.98, 0.3]], dtype=torch.float64)
    eps = 0.1
    eta, change = linear_worst_case(w, x, eps)
    assert eta.abs().max() <= eps + 1e-15 and (x + eta).min() >= 0 and (x + eta).max() <= 1
    best = max(
        float(((x + eps * torch.tensor(s, dtype=x.dtype)).clamp(0, 1) - x) @ w)
        for s in itertools.product((-1.0, 1.0), repeat=6)
    )
    assert change.item() == pytest.approx(best, abs=1e-12)
    random = (x + eps * (2 * torch.rand(1000, 6, generator=g, dtype=x.dtype) - 1)).clamp(0, 1)
    assert ((random - x) @ w).max() <= change.item() + 1e-12


def test_fgsm_on_a_two_class_linear_model_is_the_exact_worst_case():
    """For logits W x + b with two classes, the cross-entropy's input gradient has the sign of
    w_other - w_y, so FGSM is the exact l-inf worst case of the margin (section 3)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).double()
    x = torch.rand(16, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 2, (16,))
    w = model[1].weight.detach()
    x_fgsm = attacks.fgsm(model, x, y, 0.2)
    for i in range(16):
        eta, _ = linear_worst_case(w[1 - y[i]] - w[y[i]], x[i : i + 1], 0.2)
        assert torch.allclose(x_fgsm[i : i + 1], x[i : i + 1] + eta, atol=1e-12)


def test_a_linear_model_is_perfectly_straight_along_any_direction():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    direction = torch.randn_like(x).sign()
    ts = torch.linspace(-0.5, 0.5, 11).tolist()
    curves = logits_along(model, x, direction, ts)
    assert curves.shape == (11, 4, 3)
    assert torch.allclose(straightness(ts, curves), torch.ones(4, 3, dtype=torch.float64))


def test_a_kink_lowers_straightness_and_modes_are_restored():
    class Kink(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(2)

        def forward(self, x):
            s = x.flatten(1).sum(1, keepdim=True)
            return torch.cat([s.abs(), s], 1)  # |s| bends at 0, s does not

    model = Kink().double()
    model.train()
    model.bn.eval()  # a frozen BatchNorm inside a training model must stay frozen
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    ts = torch.linspace(-1, 1, 21).tolist()
    r2 = straightness(ts, logits_along(model, x, torch.ones_like(x), ts))
    assert r2[0, 1].item() == pytest.approx(1.0) and r2[0, 0].item() < 0.1
    assert model.training and not model.bn.training


def test_straightness_of_a_flat_curve_is_one_and_shapes_are_checked():
    ts = [0.0, 1.0, 2.0]
    assert straightness(ts, torch.ones(3, 2)).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="len\\(ts\\) = 3"):
        straightness(ts, torch.ones(4, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": -0.1}, ValueError, "eps must be a number >= 0"),
        ({"eps": True}, ValueError, "eps must be a number >= 0"),
        ({"w": torch.ones(5)}, ValueError, "one weight per input value \\(784\\)"),
        ({"w": [1.0]}, TypeError, "must be torch tensors"),
    ],
)
def test_linear_worst_case_rejects_bad_input(kwargs, error, match):
    args = {"w": torch.ones(784), "x": torch.zeros(2, 1, 28, 28), "eps": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        linear_worst_case(args["w"], args["x"], args["eps"])


def test_logits_along_rejects_a_direction_of_another_shape():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="direction must have the shape of x"):
        logits_along(model, torch.zeros(1, 1, 2, 2), torch.zeros(1, 4), [0.0, 1.0])
