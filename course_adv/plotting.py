"""The figure vocabulary every notebook shares.

Three pictures recur through the course (the style of PyTorch's ``fgsm_tutorial`` and of
the UvA deep-learning tutorial 10 on adversarial attacks):

- ``show_digits``: a grid of images with their labels, or with predicted versus true labels;
- ``plot_accuracy_vs_eps``: accuracy (percent) and mean confidence against epsilon, one curve
  (``evaluation.EpsCurve``) per model or attack, epsilon in pixel units of [0, 1];
- ``plot_training_curves``: loss and accuracy per epoch of one or more training runs;
- ``plot_adversarial_grid``: per example the clean image, the perturbation and the adversarial
  image, each image followed by the model's top-class probabilities as bars.

Every function returns a ``matplotlib.figure.Figure`` and never calls ``plt.show()``. In a
notebook, write ``fig = show_digits(...)`` (assign it) so the inline backend shows it once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from .evaluation import EpsCurve, TransferMatrix
from .utils import device_of, eval_mode

__all__ = [
    "show_digits",
    "plot_accuracy_vs_eps",
    "plot_adversarial_grid",
    "plot_training_curves",
    "plot_transfer_matrix",
]

_RIGHT = "tab:green"
_WRONG = "tab:red"


def _to_images(x: torch.Tensor | np.ndarray, name: str = "x") -> np.ndarray:
    """N x 1 x H x W or N x H x W pixels (tensor or array) -> N x H x W float numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(
            f"{name} must hold N grayscale images, shape N x 1 x H x W or N x H x W; "
            f"got shape {tuple(x.shape)}"
        )
    return x


def _to_labels(y: Any, n: int, name: str) -> np.ndarray | None:
    if y is None:
        return None
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y).reshape(-1)
    if len(y) < n:
        raise ValueError(f"{name} has {len(y)} labels but {n} images are shown; pass one per image")
    return y[:n].astype(int)


def _class_name(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes is not None else str(k)


def show_digits(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    pred: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    ncols: int = 10,
    max_images: int = 40,
    title: str | None = None,
    size: float = 1.1,
    y_name: str = "true",
) -> Figure:
    """A grid of images titled by label; with ``pred``, by prediction (green right, red wrong).

    ``x``: N x 1 x H x W (or N x H x W) pixels in [0, 1]. ``y``: true labels or None.
    ``pred``: predicted labels or None. At most ``max_images`` images are drawn.
    ``y_name`` names ``y`` in the titles under a prediction (e.g. "target" for a targeted
    attack, where ``y`` holds the classes asked for).
    """
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    images = _to_images(x)
    n = min(len(images), max_images)
    if n == 0:
        raise ValueError("x holds no images; pass at least one")
    labels = _to_labels(y, n, "y")
    preds = _to_labels(pred, n, "pred")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    extra = 0.35 if preds is not None else 0.2
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, (size + extra) * nrows + 0.4), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray", vmin=0.0, vmax=1.0)
        if preds is not None:
            text = f"pred {_class_name(classes, preds[i])}"
            color = "black"
            if labels is not None:
                text += f"\n{y_name} {_class_name(classes, labels[i])}"
                color = _RIGHT if preds[i] == labels[i] else _WRONG
            ax.set_title(text, fontsize=8, color=color)
        elif labels is not None:
            ax.set_title(_class_name(classes, labels[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _as_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a sequence of numbers, got {type(values).__name__}"
        ) from err


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def plot_accuracy_vs_eps(
    curves: EpsCurve | Sequence[EpsCurve],
    *,
    title: str = "Accuracy under attack",
    confidence: bool = True,
    chance: float | None = 0.1,
) -> Figure:
    """Accuracy (percent) and mean confidence against epsilon, one line per curve.

    ``curves``: an ``EpsCurve`` from ``course_adv.evaluation.accuracy_vs_eps``, or a list of
    them (each line is labelled by its curve's ``label``); epsilon in pixel units of [0, 1].
    The right panel (drawn when ``confidence`` is true) is the mean max-softmax probability
    on the misclassified adversarial examples, the "confidently wrong" of Goodfellow et al.
    2015. ``chance`` draws a dotted line at that accuracy (None for none).
    """
    curves = [curves] if isinstance(curves, EpsCurve) else curves
    if not (
        isinstance(curves, Sequence) and curves and all(isinstance(c, EpsCurve) for c in curves)
    ):
        raise TypeError(
            "curves must be an EpsCurve (from evaluation.accuracy_vs_eps) or a list of them"
        )
    ncols = 2 if confidence else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), squeeze=False)
    ax_acc = axes[0, 0]
    for curve in curves:
        percent = 100 * np.asarray(curve.accuracy, dtype=float)
        ax_acc.plot(curve.eps, percent, marker="o", ms=4, label=curve.label)
    if chance is not None:
        ax_acc.axhline(100 * chance, color="gray", ls=":", lw=1, label="chance")
    ax_acc.set_xlabel("epsilon (pixel units, [0, 1] scale)")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(-2, 102)
    ax_acc.set_title(title)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    if confidence:  # nan (no misclassified example at that eps) leaves a gap
        ax_conf = axes[0, 1]
        for curve in curves:
            ax_conf.plot(curve.eps, curve.confidence, marker="s", ms=4, label=curve.label)
        ax_conf.set_xlabel("epsilon (pixel units, [0, 1] scale)")
        ax_conf.set_ylabel("mean confidence (max softmax)")
        ax_conf.set_ylim(0, 1.02)
        ax_conf.set_title("Confidence on misclassified examples")
        ax_conf.grid(alpha=0.3)
        ax_conf.legend(fontsize=8)
    fig.tight_layout()
    return fig


@torch.no_grad()
def _probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return torch.softmax(model(x.to(device_of(model))).float(), dim=1).cpu()


def _bars(ax, probs: np.ndarray, classes: Sequence[str] | None, true: int, top: int) -> None:
    order = np.argsort(-probs)[:top][::-1]  # largest at the top
    colors = [_RIGHT if k == true else "tab:gray" for k in order]
    ax.barh(np.arange(len(order)), probs[order], color=colors)
    ax.set_yticks(np.arange(len(order)), [_class_name(classes, k) for k in order], fontsize=8)
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("probability", fontsize=8)


def plot_adversarial_grid(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor | Sequence[int],
    *,
    n: int = 4,
    top: int = 3,
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Per example: clean image, its top-class bars, perturbation, adversarial image, its bars.

    Rows are the first ``n`` examples. The perturbation ``x_adv - x`` is drawn on a symmetric
    colour scale (red brighter, blue darker); bars show the ``top`` most probable classes,
    the true class in green. The model is run in eval mode and every submodule's mode is
    restored afterwards.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_adv, torch.Tensor):
        raise TypeError("x and x_adv must be torch tensors (N x 1 x H x W)")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} != {tuple(x_adv.shape)}")
    if n < 1 or top < 1:
        raise ValueError(f"n and top must be >= 1, got n={n}, top={top}")
    n = min(n, len(x))
    labels = _to_labels(y, n, "y")
    p_clean = _probabilities(model, x[:n]).numpy()
    p_adv = _probabilities(model, x_adv[:n]).numpy()
    top = min(top, p_clean.shape[1])
    clean, adv = _to_images(x[:n]), _to_images(x_adv[:n], "x_adv")
    delta = adv - clean
    scale = max(float(np.abs(delta).max()), 1e-8)

    fig, axes = plt.subplots(
        n,
        5,
        figsize=(10, 2.0 * n + 0.5),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.1, 1, 1, 1.1]},
    )
    for i in range(n):
        ax_clean, ax_pc, ax_delta, ax_adv, ax_pa = axes[i]
        ax_clean.imshow(clean[i], cmap="gray", vmin=0, vmax=1)
        ax_clean.set_title(f"clean (label {_class_name(classes, labels[i])})", fontsize=9)
        ax_delta.imshow(delta[i], cmap="bwr", vmin=-scale, vmax=scale)
        ax_delta.set_title(f"perturbation (max {np.abs(delta[i]).max():.2f})", fontsize=9)
        ax_adv.imshow(adv[i], cmap="gray", vmin=0, vmax=1)
        pred = int(p_adv[i].argmax())
        color = _RIGHT if pred == labels[i] else _WRONG
        ax_adv.set_title(
            f"adversarial (pred {_class_name(classes, pred)})", fontsize=9, color=color
        )
        for ax in (ax_clean, ax_delta, ax_adv):
            ax.set_xticks([])
            ax.set_yticks([])
        _bars(ax_pc, p_clean[i], classes, labels[i], top)
        _bars(ax_pa, p_adv[i], classes, labels[i], top)
        ax_pc.set_title("clean: top classes", fontsize=9)
        ax_pa.set_title("adversarial: top classes", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training_curves(
    histories: Mapping[str, Any], *, title: str = "Training", accuracy_key: str = "clean_acc"
) -> Figure:
    """Training loss and accuracy (percent) per epoch, one curve per run.

    ``histories``: ``{label: history}`` where a history is a ``course_adv.training.History``
    or its ``as_dict()`` (the ``info["history"]`` of a cached model), with per-epoch
    ``loss`` and ``clean_acc`` (a fraction; on the monitor set when one was given). When a
    history has ``robust_acc`` values, they are drawn dashed in the same colour.
    """
    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty dict {label: History or its as_dict()}")
    for label, history in histories.items():
        if _get(history, "loss") is None or _get(history, accuracy_key) is None:
            raise ValueError(f"history {label!r} needs per-epoch 'loss' and {accuracy_key!r}")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, history in histories.items():
        loss, acc = _get(history, "loss"), _get(history, accuracy_key)
        epochs = np.arange(1, len(loss) + 1)
        (line,) = ax_loss.plot(epochs, loss, marker="o", ms=3, label=str(label))
        ax_acc.plot(epochs, 100 * _as_array(acc, accuracy_key), marker="o", ms=3, label=str(label))
        robust = _get(history, "robust_acc")
        if robust is not None and any(r is not None for r in robust):
            values = np.array([np.nan if r is None else r for r in robust], dtype=float)
            ax_acc.plot(
                epochs,
                100 * values,
                ls="--",
                color=line.get_color(),
                label=f"{label} (under attack)",
            )
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title(f"{title}: loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title(f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_transfer_matrix(
    matrices: TransferMatrix | Mapping[str, TransferMatrix], *, title: str = "Transfer"
) -> Figure:
    """Heat maps of transfer matrices: the target's error (percent) on the source's examples.

    ``matrices``: a ``course_adv.evaluation.TransferMatrix`` or ``{panel title: matrix}``
    (e.g. one per attack), drawn side by side on one colour scale from 0 to 100%. Rows are
    sources, columns targets; every cell is annotated, and a diagonal cell (the same model as
    source and target, the white-box error) is framed.
    """
    panels = {"": matrices} if isinstance(matrices, TransferMatrix) else matrices
    if not (
        isinstance(panels, Mapping)
        and panels
        and all(isinstance(m, TransferMatrix) for m in panels.values())
    ):
        raise TypeError(
            "matrices must be a TransferMatrix (from evaluation.transfer_matrix) "
            "or a non-empty dict {title: TransferMatrix}"
        )
    widths = [0.8 * len(m.targets) + 1.6 for m in panels.values()]
    height = 0.6 * max(len(m.sources) for m in panels.values()) + 1.8
    fig, axes = plt.subplots(
        1, len(panels), figsize=(sum(widths), height), squeeze=False, layout="constrained"
    )
    for k, (ax, (name, matrix)) in enumerate(zip(axes[0], panels.items(), strict=True)):
        error = 100 * np.asarray(matrix.error, dtype=float)
        image = ax.imshow(error, cmap="viridis", vmin=0, vmax=100)
        for i, source in enumerate(matrix.sources):
            for j, target in enumerate(matrix.targets):
                color = "black" if error[i, j] > 60 else "white"
                ax.text(j, i, f"{error[i, j]:.0f}", ha="center", va="center", color=color)
                if source == target:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="w"))
        ax.set_xticks(range(len(matrix.targets)), matrix.targets, rotation=30, ha="right")
        ax.set_yticks(range(len(matrix.sources)), matrix.sources)
        ax.set_xlabel("target (evaluated on)")
        if k == 0:  # the panels share their rows: one label is enough
            ax.set_ylabel("source (crafted on)")
        ax.set_title(f"{title}: {name}" if name else title)
    fig.colorbar(image, ax=list(axes[0]), label="target's error (%)", shrink=0.85)
    return fig
