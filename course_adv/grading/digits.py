"""Cases on test digits: a model, ``n`` digits picked by ``seed``, an ``eps``, a dtype.

The kind of case the attack exercises share. The model is ``"cnn"`` (a seeded, untrained
``SmallCNN``) or ``"softmax"`` (a nearest-class-mean linear classifier built from the training
digits, confident but not saturated, so gradients stay well away from 0). An exercise with
more settings (``alpha``, ``steps``) derives its own case from :class:`DigitCase`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import load_data
from ..models import build_model
from .spec import Case, bounded, one_of

__all__ = [
    "DigitCase",
    "TrainingStepCase",
    "bn_model",
    "class_means",
    "fresh_copy",
    "one_thread",
    "parameter_vector",
]

MODEL_NAMES = {"cnn": "small CNN", "softmax": "linear model"}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The class means of the training digits (10 x 784), and the test digits and labels."""
    data = load_data("mnist5k")
    x = data.x_train.flatten(1)
    means = torch.stack([x[data.y_train == c].mean(0) for c in range(10)])
    return means, data.x_test, data.y_test


def class_means() -> torch.Tensor:
    """The mean of each class of training digits, 10 x 784 (float32)."""
    return _digits()[0].clone()


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny reference computations run fastest on one thread (and do not fight the child)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True, kw_only=True)
class DigitCase(Case):
    """``n`` test digits chosen by ``seed``, attacked with budget ``eps``, in ``dtype``."""

    eps: float = bounded(0, 1)
    seed: int = bounded(0, 2**31 - 1, integer=True)
    n: int = bounded(1, 1000, integer=True)
    model: str = one_of("softmax", "cnn", default="softmax")
    dtype: str = one_of("float32", "float64", default="float32")

    def describe(self) -> str:
        digits = "digit" if self.n == 1 else "digits"
        return f"{MODEL_NAMES[self.model]}, {self.dtype}, eps={self.eps:g}, {self.n} {digits}"

    def _model(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG left alone
            torch.manual_seed(self.seed)
            return build_model(self.model)

    def inputs(self) -> dict[str, Any]:
        """``model`` (eval mode), ``x`` (n x 1 x 28 x 28) in the case's dtype, ``y`` (int64)."""
        model = self._model()
        if self.model == "softmax":
            # nearest class mean as a linear model: logit_c = s (m_c . x - |m_c|^2 / 2), with
            # s = 0.5 so the softmax is confident but not saturated
            means = _digits()[0]
            with torch.no_grad():
                model.linear.weight.copy_(0.5 * means)
                model.linear.bias.copy_(-0.25 * (means**2).sum(1))
        model = model.to(getattr(torch, self.dtype)).eval()
        _, x_test, y_test = _digits()
        pick = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(self.seed))
        pick = pick[: self.n]
        x, y = x_test[pick].to(getattr(torch, self.dtype)), y_test[pick].clone()
        return {"model": model, "x": x, "y": y}

    def save_inputs(self, inputs: Mapping[str, Any], stem: Path) -> None:
        torch.save(inputs["model"].state_dict(), f"{stem}.model.pt")
        np.save(f"{stem}.x.npy", inputs["x"].numpy(), allow_pickle=False)
        np.save(f"{stem}.y.npy", inputs["y"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        model = self._model().to(getattr(torch, self.dtype)).eval()
        model.load_state_dict(torch.load(f"{stem}.model.pt", weights_only=True))
        x = torch.from_numpy(np.load(f"{stem}.x.npy", allow_pickle=False))
        y = torch.from_numpy(np.load(f"{stem}.y.npy", allow_pickle=False)).long()
        return {"model": model, "x": x.to(getattr(torch, self.dtype)), "y": y}


# --------------------------------------------------------------------------- training steps


def bn_model() -> nn.Module:
    """A small MLP with BatchNorm: where train and eval mode compute different things."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )


@dataclass(frozen=True, kw_only=True)
class TrainingStepCase(DigitCase):
    """A case for one training step (exercises 03 and 06): a seeded BatchNorm MLP whose running
    averages were warmed up on other inputs, two or more digits (BatchNorm trains on a
    batch), and the SGD step size; the optimiser arrives holding stale gradients."""

    model: str = one_of("bn_mlp", default="bn_mlp")
    n: int = bounded(2, 1000, integer=True)
    lr: float = bounded(1e-4, 1, default=0.1)

    def _model(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = bn_model()
        return model.to(getattr(torch, self.dtype))

    def inputs(self) -> dict[str, Any]:
        base = DigitCase(
            function=self.function,
            eps=self.eps,
            seed=self.seed,
            n=self.n,
            dtype=self.dtype,
            points=0,
        ).inputs()
        x, y = base["x"], base["y"]
        model = self._model()
        with torch.no_grad():  # running averages that differ from any one batch's statistics
            model.train()
            model(x.flip(0) * 0.5)
        stale = [torch.randn(p.shape, generator=torch.Generator().manual_seed(self.seed + k)).to(p.dtype)
                 for k, p in enumerate(model.parameters())]  # fmt: skip
        return {"model": model.train(), "x": x, "y": y, "stale": stale}

    def save_inputs(self, inputs: Mapping[str, Any], stem: Path) -> None:
        super().save_inputs(inputs, stem)
        for k, grad in enumerate(inputs["stale"]):
            np.save(f"{stem}.stale{k}.npy", grad.numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        model = self._model()
        model.load_state_dict(torch.load(f"{stem}.model.pt", weights_only=True))
        dtype = getattr(torch, self.dtype)
        stale = [
            torch.from_numpy(np.load(f"{stem}.stale{k}.npy", allow_pickle=False)).to(dtype)
            for k in range(len(list(model.parameters())))
        ]
        x = torch.from_numpy(np.load(f"{stem}.x.npy", allow_pickle=False)).to(dtype)
        y = torch.from_numpy(np.load(f"{stem}.y.npy", allow_pickle=False)).long()
        return {"model": model.train(), "x": x, "y": y, "stale": stale}


def fresh_copy(inputs: Mapping[str, Any], lr: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A copy of a training-step case's model in train mode, and an SGD optimiser holding its
    stale gradients. (Built on a forked random stream: grading leaves the caller's alone.)"""
    with torch.random.fork_rng(devices=[]):
        model = bn_model().to(inputs["x"].dtype)
    model.load_state_dict(inputs["model"].state_dict())
    model.train()
    for p, grad in zip(model.parameters(), inputs["stale"], strict=True):
        p.grad = grad.clone()
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def parameter_vector(model: nn.Module) -> np.ndarray:
    """Every parameter of ``model``, flattened into one float64 vector."""
    return torch.cat([p.detach().double().flatten() for p in model.parameters()]).numpy()
