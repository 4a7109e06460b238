"""The substitute attack of Papernot et al. 2017: the label-only oracle, one step of
Jacobian-based dataset augmentation (exact, in float64), and the whole loop on real digits."""

from __future__ import annotations

import pytest
import torch
from models_for_evaluation import trained_cnn
from torch import nn

from course_adv import attacks
from course_adv.blackbox import Oracle, jacobian_augmentation, train_substitute
from course_adv.data import load_data
from course_adv.evaluation import accuracy, predict, random_sign_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread", "cpu_only")


@pytest.fixture(scope="module")
def target() -> nn.Module:
    """The black box: a small CNN trained for a few seconds, about 90% accurate."""
    return trained_cnn(0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_data()
    return data.x_test, data.y_test


def _mlp(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 10)
    ).to(dtype)


# --------------------------------------------------------------------------- the oracle


def test_the_oracle_returns_labels_only_and_counts_every_query(target, digits):
    x, _ = digits
    oracle = Oracle(target)
    labels = oracle(x[:30])
    assert labels.dtype == torch.int64 and labels.shape == (30,) and not labels.requires_grad
    assert torch.equal(labels, predict(target, x[:30]).argmax(1))
    oracle(x[30:50])
    assert oracle.queries == 50
    assert not isinstance(oracle, nn.Module)  # no attack can take it as a model
    with pytest.raises(TypeError, match="model"):
        attacks.fgsm(oracle, x[:2], None, 0.1)


def test_the_oracle_rejects_what_is_not_a_model_or_a_batch(target):
    with pytest.raises(TypeError, match="nn.Module"):
        Oracle(lambda x: x)
    with pytest.raises(TypeError, match="float tensor"):
        Oracle(target)(torch.zeros(3, dtype=torch.int64))


# --------------------------------------------------------------------------- augmentation


def test_augmentation_doubles_the_set_with_steps_of_lambda_along_the_logit_gradient(digits):
    model = _mlp()
    x = digits[0][:16].double()
    labels = torch.arange(16) % 10
    new = jacobian_augmentation(model, x, labels, 0.1)
    assert new.shape == (32, *x.shape[1:]) and new.dtype == x.dtype
    assert torch.equal(new[:16], x)  # S_rho comes first, unchanged
    # the expected step, by hand: the sign of the gradient of the label's logit, per point
    x_req = x.clone().requires_grad_(True)
    model.eval()
    (grad,) = torch.autograd.grad(model(x_req).gather(1, labels.view(-1, 1)).sum(), x_req)
    assert torch.equal(new[16:], (x + 0.1 * grad.sign()).clamp(0, 1))
    step = (new[16:] - x).abs()
    room = (grad > 0) & (x <= 0.9) | (grad < 0) & (x >= 0.1)  # the clip leaves room
    assert torch.allclose(step[room], torch.full_like(step[room], 0.1), atol=1e-12)
    assert torch.all(step[grad == 0] == 0)
    assert new.min() >= 0 and new.max() <= 1


def test_a_negative_lambda_steps_the_other_way(digits):
    model = _mlp().eval()  # eval: the check below runs the model without dropout
    x, labels = digits[0][:8].double(), torch.zeros(8, dtype=torch.int64)
    up = jacobian_augmentation(model, x, labels, 0.05)[8:] - x
    down = jacobian_augmentation(model, x, labels, -0.05)[8:] - x
    inside = (x > 0.05) & (x < 0.95)
    assert torch.allclose(up[inside], -down[inside])
    # stepping up raises the label's logit, stepping down lowers it
    with torch.no_grad():
        base = model(x)[:, 0]
        assert torch.all(model(x + up)[:, 0] > base) and torch.all(model(x + down)[:, 0] < base)


def test_augmentation_leaves_its_inputs_and_the_model_mode_alone(digits):
    model = _mlp().train()
    model[2].eval()  # a mixed set-up: every submodule's own mode comes back
    x, labels = digits[0][:4].double(), torch.tensor([1, 2, 3, 4])
    x_before, labels_before = x.clone(), labels.clone()
    jacobian_augmentation(model, x, labels, 0.1)
    assert torch.equal(x, x_before) and torch.equal(labels, labels_before)
    assert model.training and model[1].training and not model[2].training
    assert all(p.grad is None for p in model.parameters())


def test_augmentation_checks_its_arguments(digits):
    model, x = _mlp(), digits[0][:4].double()
    with pytest.raises(TypeError, match="labels"):
        jacobian_augmentation(model, x, torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="equal length"):
        jacobian_augmentation(model, x, torch.zeros(3, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError, match="lam"):
        jacobian_augmentation(model, x, torch.zeros(4, dtype=torch.int64), 2.0)


# --------------------------------------------------------------------------- the whole attack


@pytest.fixture(scope="module")
def substitute_run(target, digits):
    """Algorithm 1 from 150 held-out test digits, 4 substitute epochs, lambda = -0.1."""
    x, _ = digits
    oracle = Oracle(target)
    seen = []
    substitute, history = train_substitute(
        oracle,
        x[:150],
        rounds=4,
        lam=-0.1,
        epochs=10,
        model="cnn",
        evaluate=lambda sub: seen.append(sub) or {"evaluated": len(seen)},
    )
    return oracle, substitute, history


def test_the_substitute_costs_one_query_per_point_and_doubles_each_round(substitute_run):
    oracle, substitute, history = substitute_run
    assert [row["queries"] for row in history] == [150, 300, 600, 1200]
    assert [row["n_train"] for row in history] == [150, 300, 600, 1200]
    assert [row["evaluated"] for row in history] == [1, 2, 3, 4]
    assert oracle.queries == 1200 and not substitute.training


def test_the_substitute_agrees_with_the_oracle_on_held_out_digits(target, digits, substitute_run):
    _, substitute, _ = substitute_run
    x = digits[0][150:]
    agree = (predict(substitute, x).argmax(1) == predict(target, x).argmax(1)).float().mean()
    assert agree > 0.6  # chance is about 0.1


def test_the_attack_through_the_substitute_beats_noise_and_trails_white_box(
    target, digits, substitute_run
):
    _, substitute, _ = substitute_run
    x, y = digits[0][150:], digits[1][150:]
    eps = 0.15
    torch.manual_seed(0)
    noise = 1 - accuracy(target, random_sign_noise(target, x, y, eps), y)
    black = 1 - accuracy(target, attacks.fgsm(substitute, x, y, eps), y)
    white = 1 - accuracy(target, attacks.fgsm(target, x, y, eps), y)
    assert noise + 0.15 < black < white


def test_the_same_seed_trains_the_same_substitute(target, digits):
    x = digits[0][:40]
    runs = [
        train_substitute(Oracle(target), x, rounds=2, epochs=2, batch_size=16)[0] for _ in range(2)
    ]
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_substitute_checks_its_arguments(target, digits):
    x = digits[0][:10]
    with pytest.raises(TypeError, match="oracle"):
        train_substitute(None, x, rounds=1)
    with pytest.raises(ValueError, match="rounds"):
        train_substitute(Oracle(target), x, rounds=0)
    with pytest.raises(ValueError, match="model"):
        train_substitute(Oracle(target), x, rounds=1, model="resnet")
