"""The shared figures: right panels, titles, axis labels and units; no figure left open."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from course_adv.evaluation import EpsCurve
from course_adv.plotting import (
    plot_accuracy_vs_eps,
    plot_adversarial_grid,
    plot_training_curves,
    show_digits,
)


@pytest.fixture(autouse=True)
def _no_figure_leaks():
    before = set(plt.get_fignums())
    yield
    leaked = set(plt.get_fignums()) - before
    plt.close("all")
    assert not leaked, f"a test left figures open: {leaked}"


def _digits(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def _visible_image_axes(fig):
    return [ax for ax in fig.axes if ax.axison or ax.get_images()]


def test_show_digits_titles_are_labels():
    x, y = _digits(12)
    fig = show_digits(x, y, ncols=5)
    try:
        drawn = [ax for ax in fig.axes if ax.get_images()]
        assert len(drawn) == 12
        assert len(fig.axes) == 15  # 3 rows x 5 columns, the last three empty
        assert [ax.get_title() for ax in drawn] == [str(int(v)) for v in y]
        image = drawn[0].get_images()[0]
        assert image.get_clim() == (0.0, 1.0)  # pixels drawn on their true [0, 1] scale
    finally:
        plt.close(fig)


def test_show_digits_colours_wrong_predictions_red():
    x, y = _digits(4)
    pred = y.clone()
    pred[1] = (y[1] + 1) % 10
    fig = show_digits(x, y, pred, classes=[f"c{k}" for k in range(10)])
    try:
        drawn = [ax for ax in fig.axes if ax.get_images()]
        titles = [ax.title for ax in drawn]
        assert titles[1].get_text() == f"pred c{int(pred[1])}\ntrue c{int(y[1])}"
        assert matplotlib.colors.to_hex(titles[1].get_color()) == matplotlib.colors.to_hex(
            "tab:red"
        )
        assert matplotlib.colors.to_hex(titles[0].get_color()) == matplotlib.colors.to_hex(
            "tab:green"
        )
    finally:
        plt.close(fig)


def test_show_digits_can_name_the_labels_otherwise():
    x, y = _digits(2)
    fig = show_digits(x, y, y, y_name="target")
    try:
        assert fig.axes[0].get_title() == f"pred {int(y[0])}\ntarget {int(y[0])}"
    finally:
        plt.close(fig)


def test_show_digits_accepts_numpy_and_caps_the_count():
    x = np.random.default_rng(0).random((100, 28, 28))
    fig = show_digits(x, max_images=7, title="noise")
    try:
        assert len([ax for ax in fig.axes if ax.get_images()]) == 7
        assert fig._suptitle.get_text() == "noise"
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(x=torch.rand(3, 3, 28, 28)), "grayscale"),
        (dict(x=torch.rand(3, 1, 28, 28), y=[1]), "y has 1 labels"),
        (dict(x=torch.rand(3, 1, 28, 28), ncols=0), "ncols"),
    ],
)
def test_show_digits_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        show_digits(**bad)


def _curve(label, acc, conf=None):
    """An EpsCurve as evaluation.accuracy_vs_eps builds it."""
    conf = conf if conf is not None else [float("nan")] * len(acc)
    rows = [
        {"label": label, "eps": e, "accuracy": a, "confidence": c, "n": 100}
        for e, a, c in zip([0.0, 0.1, 0.2, 0.3], acc, conf, strict=True)
    ]
    return EpsCurve(label, rows)


def test_accuracy_plot_has_two_labelled_panels_in_percent():
    curves = [
        _curve("cnn", [0.98, 0.6, 0.2, 0.05], [0.5, 0.7, 0.8, 0.9]),
        _curve("mlp", [0.97, 0.3, 0.05, 0.0], [0.6, 0.8, 0.9, 0.95]),
    ]
    fig = plot_accuracy_vs_eps(curves, title="FGSM")
    try:
        ax_acc, ax_conf = fig.axes
        assert ax_acc.get_title() == "FGSM"
        assert "epsilon" in ax_acc.get_xlabel() and "[0, 1]" in ax_acc.get_xlabel()
        assert ax_acc.get_ylabel() == "accuracy (%)"
        assert "confidence" in ax_conf.get_ylabel()
        assert "epsilon" in ax_conf.get_xlabel()
        lines = {line.get_label(): line for line in ax_acc.get_lines()}
        assert set(lines) == {"cnn", "mlp", "chance"}
        np.testing.assert_allclose(lines["cnn"].get_ydata(), [98, 60, 20, 5])  # percent
        np.testing.assert_allclose(lines["cnn"].get_xdata(), [0, 0.1, 0.2, 0.3])
        assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["cnn", "mlp", "chance"]
        np.testing.assert_allclose(ax_conf.get_lines()[1].get_ydata(), [0.6, 0.8, 0.9, 0.95])
    finally:
        plt.close(fig)


def test_accuracy_plot_without_confidence_has_one_panel():
    fig = plot_accuracy_vs_eps(_curve("model", [0.9, 0.5, 0.2, 0.1]), confidence=False, chance=None)
    try:
        assert len(fig.axes) == 1
        assert [line.get_label() for line in fig.axes[0].get_lines()] == ["model"]
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "junk",
    [{"eps": [0.0, 0.1], "accuracy": [1.0, 0.5]}, [{"eps": 0.0, "accuracy": 1.0}], 42, []],
    ids=["dict", "tidy rows", "number", "empty"],
)
def test_accuracy_plot_takes_eps_curves_only(junk):
    """One shape, the one accuracy_vs_eps returns: no guessing at dicts, rows or objects."""
    with pytest.raises(TypeError, match="EpsCurve"):
        plot_accuracy_vs_eps(junk)


class _Fixed(nn.Module):
    """Logits = 5 * (mean pixel of 10 image strips): predictions change with the input."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, x):
        strips = x[:, 0, :20].reshape(len(x), 10, -1).mean(-1)
        return self.scale * strips * 10


def test_adversarial_grid_has_three_images_and_two_bar_panels_per_row():
    model = _Fixed().train()
    x, y = _digits(3)
    x_adv = (x + 0.3 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    fig = plot_adversarial_grid(model, x, x_adv, y, n=2, top=3)
    try:
        assert len(fig.axes) == 10
        row = fig.axes[:5]
        assert row[0].get_title().startswith("clean (label 0)")
        assert row[2].get_title().startswith("perturbation")
        assert row[3].get_title().startswith("adversarial (pred ")
        assert row[1].get_title() == "clean: top classes"
        assert len(row[1].patches) == 3 and len(row[4].patches) == 3
        assert row[1].get_xlabel() == "probability"
        # the bars are the model's top probabilities, largest drawn at the top
        probs = torch.softmax(model(x[:1]), 1)[0].detach()
        widths = [p.get_width() for p in row[1].patches]
        np.testing.assert_allclose(widths[::-1], probs.sort(descending=True).values[:3], atol=1e-6)
        assert model.training, "the model's train/eval mode must be restored"
    finally:
        plt.close(fig)


def test_adversarial_grid_keeps_a_frozen_batchnorm_frozen():
    """Every submodule gets its own mode back (utils.eval_mode), not the top module's."""
    model = nn.Sequential(nn.BatchNorm2d(1), _Fixed()).train()
    model[0].eval()  # frozen statistics inside a training model
    x, y = _digits(2)
    plt.close(plot_adversarial_grid(model, x, x, y, n=2))
    assert model.training and model[1].training and not model[0].training


def test_adversarial_grid_rejects_shape_mismatch():
    x, y = _digits(2)
    with pytest.raises(ValueError, match="differ in shape"):
        plot_adversarial_grid(_Fixed(), x, x[:1], y)


def test_training_curves_draw_loss_and_percent_accuracy_per_epoch():
    histories = {
        "cnn": {"loss": [1.0, 0.5, 0.3], "clean_acc": [0.8, 0.9, 0.95], "robust_acc": [None] * 3},
        "pgd": {"loss": [2.0, 1.5], "clean_acc": [0.5, 0.7], "robust_acc": [0.2, 0.4]},
    }
    fig = plot_training_curves(histories, title="Standard")
    try:
        ax_loss, ax_acc = fig.axes
        assert ax_loss.get_xlabel() == "epoch" and ax_acc.get_ylabel() == "accuracy (%)"
        assert ax_loss.get_title() == "Standard: loss"
        labels = [line.get_label() for line in ax_acc.get_lines()]
        assert labels == ["cnn", "pgd", "pgd (under attack)"]
        np.testing.assert_allclose(ax_acc.get_lines()[0].get_ydata(), [80, 90, 95])
        np.testing.assert_allclose(ax_acc.get_lines()[2].get_ydata(), [20, 40])
        np.testing.assert_allclose(ax_loss.get_lines()[0].get_xdata(), [1, 2, 3])
        ticks = ax_acc.get_xticks()
        assert np.allclose(ticks, np.round(ticks)), "epochs are whole numbers"
    finally:
        plt.close(fig)


def test_training_curves_reject_empty_or_incomplete_histories():
    with pytest.raises(TypeError, match="non-empty dict"):
        plot_training_curves({})
    with pytest.raises(ValueError, match="'loss'"):
        plot_training_curves({"a": {"clean_acc": [0.5]}})


def test_transfer_matrix_heat_map_annotates_percent_and_frames_the_white_box_cells():
    from course_adv.evaluation import TransferMatrix
    from course_adv.plotting import plot_transfer_matrix

    fgsm = TransferMatrix(["a", "b"], ["a", "b", "c"], [[0.9, 0.5, 0.25], [0.4, 0.8, 0.1]])
    fig = plot_transfer_matrix({"FGSM": fgsm, "PGD": fgsm}, title="Transfer")
    try:
        ax = fig.axes[0]
        assert [a.get_title() for a in fig.axes[:2]] == ["Transfer: FGSM", "Transfer: PGD"]
        assert [t.get_text() for t in ax.texts] == ["90", "50", "25", "40", "80", "10"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
        assert ax.get_xlabel().startswith("target") and ax.get_ylabel().startswith("source")
        framed = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches]
        assert framed == [(0, 0), (1, 1)]  # the diagonal: the same model as source and target
        assert fig.axes[-1].get_ylabel() == "target's error (%)"  # the colour bar
    finally:
        plt.close(fig)
    with pytest.raises(TypeError, match="TransferMatrix"):
        plot_transfer_matrix([[0.5]])
