"""An interactive epsilon slider over precomputed adversarial examples.

The attack runs once per epsilon of a fixed grid when the explorer is built; moving the slider
only looks results up, so it responds instantly even on a slow CPU. The callback is a plain
method, ``EpsilonExplorer.update(eps)``, which returns the state it shows, so it is tested in
pytest without a browser; ``EpsilonExplorer.widget`` is the ipywidgets box for a notebook.

    explorer = EpsilonExplorer(model, x_test[:500], y_test[:500], attack=attacks.fgsm)
    explorer.widget          # display it (a slider over the grid, and the picture)
    explorer.update(0.1)     # the same state, without a browser
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

from .attacks import AttackFamily, fgsm
from .evaluation import predict
from .utils import check_data

__all__ = ["EpsilonExplorer", "EpsilonState", "DEFAULT_EPS_GRID"]

DEFAULT_EPS_GRID = tuple(round(0.025 * k, 3) for k in range(13))  # 0, 0.025, ..., 0.3


@dataclass(frozen=True)
class EpsilonState:
    """What the explorer shows at one epsilon of its grid.

    ``accuracy``: robust accuracy, the share of all points classified correctly under the
    attack (as ``evaluation.robust_accuracy`` and ``accuracy_vs_eps`` count it);
    ``confidence``: mean max-softmax on the misclassified adversarial points (nan if none);
    ``images``/``preds``/``probs``: the adversarial versions of the first shown points.
    """

    eps: float
    accuracy: float
    confidence: float
    images: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    labels: torch.Tensor


class EpsilonExplorer:
    """Precompute an attack over an epsilon grid; show any grid point instantly.

    ``model``: a classifier returning logits; ``x``: N x 1 x H x W pixels in [0, 1];
    ``y``: true labels (None: the model's clean predictions, so accuracy then means
    "prediction unchanged"); ``attack(model, x, y, eps)`` returns adversarial examples
    (default ``course_adv.attacks.fgsm``); ``n_show`` digits are drawn per epsilon. The
    model runs in eval mode and every submodule gets its own mode back.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
        *,
        attack: AttackFamily = fgsm,
        n_show: int = 8,
        classes: Sequence[str] | None = None,
        batch_size: int = 500,
    ) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise TypeError("x must be a torch tensor of shape N x C x H x W")
        grid = [float(e) for e in eps_grid]
        if not grid or any(not math.isfinite(e) or e < 0 for e in grid):
            raise ValueError(f"eps_grid must be a non-empty list of eps >= 0, got {eps_grid!r}")
        if sorted(set(grid)) != grid:
            raise ValueError("eps_grid must be strictly increasing, e.g. (0, 0.05, 0.1)")
        if not 1 <= n_show:
            raise ValueError(f"n_show must be >= 1, got {n_show}")
        self.model = model
        if not callable(attack):
            raise TypeError("attack must be a callable attack(model, x, y, eps) -> x_adv")
        self.attack = attack
        self.eps_grid = tuple(grid)
        self.classes = tuple(classes) if classes is not None else None
        self.n_show = min(n_show, len(x))
        if y is None:
            y = self._predict(x, batch_size)[0]
        check_data(x, y)
        self.labels = y
        self._states = {eps: self._compute(x, y, eps, batch_size) for eps in self.eps_grid}
        self._png: dict[float, bytes] = {}
        self._widget = None
        self._image = None
        self._slider = None

    def _predict(self, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and probabilities (``evaluation.predict``: eval mode, batched)."""
        probs = torch.softmax(predict(self.model, x, batch_size=batch_size).float(), 1)
        return probs.argmax(1), probs

    def _compute(
        self, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int
    ) -> EpsilonState:
        x_adv = torch.cat(
            [
                self.attack(self.model, xb, yb, eps)
                for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
            ]
        )
        preds, probs = self._predict(x_adv, batch_size)
        wrong = preds != y
        conf = probs.max(1).values[wrong].mean().item() if wrong.any() else float("nan")
        k = self.n_show
        return EpsilonState(
            eps=eps,
            accuracy=(~wrong).float().mean().item(),
            confidence=conf,
            images=x_adv[:k].detach().cpu(),
            preds=preds[:k].cpu(),
            probs=probs[:k].cpu(),
            labels=y[:k].cpu(),
        )

    def nearest(self, eps: float) -> float:
        """The grid point closest to ``eps`` (the slider can only show precomputed points)."""
        return min(self.eps_grid, key=lambda e: abs(e - float(eps)))

    def state(self, eps: float) -> EpsilonState:
        """The precomputed state at the grid point nearest ``eps``; no attack is run."""
        return self._states[self.nearest(eps)]

    @property
    def accuracies(self) -> list[float]:
        """Accuracy at each grid point, in grid order."""
        return [self._states[e].accuracy for e in self.eps_grid]

    def figure(self, eps: float) -> Figure:
        """The adversarial digits at ``eps``, titled with prediction and confidence.

        A plain ``matplotlib.figure.Figure`` (not registered with pyplot, so nothing to close).
        """
        s = self.state(eps)
        fig = Figure(figsize=(1.3 * self.n_show, 2.1))
        axes = fig.subplots(1, self.n_show, squeeze=False)[0]
        for i, ax in enumerate(axes):
            ax.imshow(s.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            pred = int(s.preds[i])
            name = self.classes[pred] if self.classes else str(pred)
            right = pred == int(s.labels[i])
            ax.set_title(
                f"{name} ({100 * s.probs[i, pred]:.0f}%)",
                fontsize=9,
                color="tab:green" if right else "tab:red",
            )
        conf = "n/a" if math.isnan(s.confidence) else f"{s.confidence:.2f}"
        fig.suptitle(
            f"eps = {s.eps:.3f}: accuracy {100 * s.accuracy:.1f}%, "
            f"mean confidence when wrong {conf}",
            fontsize=10,
        )
        fig.tight_layout()
        return fig

    def png(self, eps: float) -> bytes:
        """The figure at ``eps`` as PNG bytes, rendered once per grid point and kept."""
        key = self.nearest(eps)
        if key not in self._png:
            buffer = io.BytesIO()
            self.figure(key).savefig(buffer, format="png", dpi=80)
            self._png[key] = buffer.getvalue()
        return self._png[key]

    def update(self, eps: float) -> EpsilonState:
        """The slider's callback: look up the state at ``eps`` and show it if displayed."""
        state = self.state(eps)
        if self._image is not None:
            self._image.value = self.png(state.eps)
        return state

    @property
    def widget(self):
        """An ipywidgets box: an epsilon slider over the grid above the picture."""
        if self._widget is None:
            import ipywidgets as widgets

            self._slider = widgets.SelectionSlider(
                options=[(f"{e:.3f}", e) for e in self.eps_grid],
                value=self.eps_grid[len(self.eps_grid) // 2],
                description="epsilon",
                continuous_update=True,
                layout=widgets.Layout(width="60%"),
            )
            for eps in self.eps_grid:  # render every picture now, so the slider only looks up
                self.png(eps)
            self._image = widgets.Image(format="png")
            self._slider.observe(lambda change: self.update(change["new"]), names="value")
            self._widget = widgets.VBox([self._slider, self._image])
            self.update(self._slider.value)
        return self._widget

    def __repr__(self) -> str:
        acc = ", ".join(
            f"{e:g}: {100 * a:.0f}%" for e, a in zip(self.eps_grid, self.accuracies, strict=True)
        )
        return f"EpsilonExplorer({len(self.labels)} points; accuracy by eps {{{acc}}})"
