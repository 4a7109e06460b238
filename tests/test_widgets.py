"""The epsilon slider: attacks run once per grid point up front, the callback only looks up."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from course_adv.widgets import DEFAULT_EPS_GRID, EpsilonExplorer


def _model_and_data(n=40, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    x = torch.rand(n, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on every clean point
    return model, x, y


class CountingFGSM:
    """A reference FGSM (eq. 1 of Goodfellow et al. 2015) that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, x, y, eps):
        self.calls += 1
        x = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
        return (x + eps * grad.sign()).clamp(0, 1).detach()


def test_precomputes_once_per_eps_and_update_only_looks_up():
    model, x, y = _model_and_data()
    attack = CountingFGSM()
    grid = (0.0, 0.05, 0.1, 0.2)
    explorer = EpsilonExplorer(model, x, y, grid, attack=attack, n_show=5, batch_size=16)
    assert attack.calls == len(grid) * 3  # 40 points in batches of 16: 3 batches per eps
    calls = attack.calls
    for eps in (0.0, 0.2, 0.1, 0.05, 0.2):
        explorer.update(eps)
    assert attack.calls == calls, "moving the slider must not rerun the attack"


def test_state_matches_a_direct_computation():
    model, x, y = _model_and_data()
    attack = CountingFGSM()
    explorer = EpsilonExplorer(model, x, y, (0.0, 0.1), attack=attack, n_show=4)
    state = explorer.update(0.1)
    x_adv = attack(model, x, y, 0.1)
    with torch.no_grad():
        probs = torch.softmax(model(x_adv), 1)
    wrong = probs.argmax(1) != y
    assert state.eps == 0.1
    assert state.accuracy == pytest.approx((~wrong).float().mean().item())
    assert state.confidence == pytest.approx(probs.max(1).values[wrong].mean().item())
    assert torch.allclose(state.images, x_adv[:4])
    assert state.images.shape == (4, 1, 28, 28)
    assert torch.equal(state.labels, y[:4])
    # the attack works on this model: accuracy falls from 100% at eps = 0
    assert explorer.state(0.0).accuracy == 1.0
    assert math.isnan(explorer.state(0.0).confidence)  # nothing misclassified
    assert state.accuracy < 1.0


def test_update_snaps_to_the_nearest_grid_point():
    model, x, y = _model_and_data(8)
    explorer = EpsilonExplorer(model, x, y, (0.0, 0.1, 0.3), attack=CountingFGSM())
    assert explorer.update(0.04).eps == 0.0
    assert explorer.update(0.16).eps == 0.1
    assert explorer.update(1.0).eps == 0.3
    assert explorer.nearest(0.21) == 0.3


def test_y_none_uses_the_models_own_predictions():
    model, x, y = _model_and_data(10)
    explorer = EpsilonExplorer(model, x, None, (0.0,), attack=CountingFGSM())
    assert torch.equal(explorer.labels, y)
    assert explorer.accuracies == [1.0]


def test_widget_slider_drives_the_picture():
    model, x, y = _model_and_data(12)
    explorer = EpsilonExplorer(model, x, y, (0.0, 0.1, 0.2), attack=CountingFGSM(), n_show=3)
    box = explorer.widget
    assert set(explorer._png) == {0.0, 0.1, 0.2}, "every picture is rendered before display"
    slider, image = box.children
    assert [value for _, value in slider.options] == [0.0, 0.1, 0.2]
    assert image.value == explorer.png(slider.value)
    slider.value = 0.2
    assert image.value == explorer.png(0.2)
    assert image.value != explorer.png(0.0)
    assert explorer.widget is box  # built once


def test_figure_titles_show_prediction_and_confidence():
    model, x, y = _model_and_data(6)
    explorer = EpsilonExplorer(model, x, y, (0.0, 0.3), attack=CountingFGSM(), n_show=3)
    fig = explorer.figure(0.3)
    state = explorer.state(0.3)
    assert len(fig.axes) == 3
    assert f"accuracy {100 * state.accuracy:.1f}%" in fig._suptitle.get_text()
    pred = int(state.preds[0])
    assert fig.axes[0].get_title().startswith(f"{pred} (")
    assert explorer.png(0.3).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(eps_grid=()), ValueError, "eps_grid"),
        (dict(eps_grid=(0.1, 0.0)), ValueError, "increasing"),
        (dict(eps_grid=(-0.1, 0.0)), ValueError, "eps >= 0"),
        (dict(n_show=0), ValueError, "n_show"),
        (dict(attack="fgsm"), TypeError, "attack"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match):
    model, x, y = _model_and_data(4)
    with pytest.raises(error, match=match):
        EpsilonExplorer(model, x, y, attack=CountingFGSM(), **kwargs)


def test_rejects_labels_that_are_not_int64_class_indices():
    model, x, y = _model_and_data(4)
    with pytest.raises(TypeError, match=r"\by\b.*int64"):
        EpsilonExplorer(model, x, y.float(), (0.0,), attack=CountingFGSM())
    with pytest.raises(ValueError, match="equal length"):
        EpsilonExplorer(model, x, y[:2], (0.0,), attack=CountingFGSM())


def test_a_frozen_batchnorm_stays_frozen():
    """utils.eval_mode restores every submodule's own mode, not just the top module's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(28 * 28, 10)).train()
    model[0].eval()  # frozen statistics inside a training model
    x = torch.rand(6, 1, 28, 28)
    EpsilonExplorer(model, x, None, (0.0, 0.1), attack=CountingFGSM(), n_show=2)
    assert model.training and model[2].training and not model[0].training


def test_accuracy_is_robust_accuracy_over_all_points():
    """Correct under attack over all points: a clean mistake that the attack fixes counts."""
    model, x, y = _model_and_data(10)
    labels = y.roll(1, 0)  # the model's predictions on x.roll(1, 0)
    assert (y != labels).float().mean() > 0.5  # most points are clean mistakes
    shifted = lambda m, xb, yb, eps: xb.roll(1, 0)  # noqa: E731 (what the model gets right)
    explorer = EpsilonExplorer(model, x, labels, (0.0, 0.1), attack=shifted)
    assert explorer.accuracies == [1.0, 1.0]


def test_default_grid_spans_zero_to_point_three():
    assert DEFAULT_EPS_GRID[0] == 0.0 and DEFAULT_EPS_GRID[-1] == 0.3
    assert len(DEFAULT_EPS_GRID) == 13


def test_default_attack_is_the_course_fgsm():
    attacks = pytest.importorskip("course_adv.attacks")
    model, x, y = _model_and_data(8)
    explorer = EpsilonExplorer(model, x, y, (0.0, 0.1))
    assert explorer.attack is attacks.fgsm
    expected = attacks.fgsm(model, x, y, 0.1)
    assert torch.allclose(explorer.state(0.1).images, expected[: explorer.n_show])
