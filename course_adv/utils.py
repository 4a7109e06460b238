"""Device choice, seeding, quick mode, and the small helpers every module shares.

Quick mode (``COURSE_ADV_QUICK=1``, set by ``make test``) is read here and only here, so
one environment variable shrinks every epoch count and evaluation set in the course.
``eval_mode`` (run a model in eval mode, give every submodule its mode back), ``device_of``
and ``check_data`` (one validator for an ``(x, y)`` pair) are defined once, here, and used by
the attacks, the training loop, the evaluation, the plots and the widgets alike.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "get_device",
    "seed_everything",
    "quick_mode",
    "full_or_quick",
    "eval_mode",
    "device_of",
    "check_data",
]

_DEVICE_ENV = "COURSE_ADV_DEVICE"
_QUICK_ENV = "COURSE_ADV_QUICK"


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or the ``COURSE_ADV_DEVICE`` environment variable, e.g. ``cpu`` or
    ``cuda:1``) overrides the automatic choice. Asking for a device that is not there is
    an error rather than a silent fallback, so a notebook never claims a GPU run it did
    not make.
    """
    choice = prefer if prefer is not None else os.environ.get(_DEVICE_ENV, "").strip()
    if choice:
        try:
            device = torch.device(choice)
        except RuntimeError as err:
            raise ValueError(
                f"device {choice!r} (from {'prefer' if prefer else _DEVICE_ENV}) is not a "
                "device name; use 'cpu', 'cuda', 'cuda:0' or 'mps'"
            ) from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {choice!r} was asked for but CUDA is not available; "
                f"unset {_DEVICE_ENV} or set it to 'cpu'"
            )
        if device.type == "mps" and not _mps_available():
            raise ValueError(
                f"device {choice!r} was asked for but Apple MPS is not available; "
                f"unset {_DEVICE_ENV} or set it to 'cpu'"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded alike.

    Pass the returned generator to data loaders so the shuffling order is fixed too.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def quick_mode() -> bool:
    """True when ``COURSE_ADV_QUICK`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(_QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def full_or_quick(full: int, quick: int) -> int:
    """``full`` at teaching scale, ``quick`` in quick mode (epochs, test-set sizes...)."""
    return quick if quick_mode() else full


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block; afterwards every submodule has its old mode.

    Restoring module by module (rather than ``model.train(was_training)``) keeps mixed set-ups
    intact, e.g. a frozen BatchNorm inside a model that is otherwise training. Eval mode also
    means BatchNorm uses (and never updates) its running statistics, and dropout is off.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def check_data(x: Any, y: Any, x_name: str = "x", y_name: str = "y") -> None:
    """Check an ``(x, y)`` pair: float pixels, 1-D int64 labels, non-empty, equal lengths.

    The names appear in the messages, so a caller checking ``monitor`` can say ``monitor[0]``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{x_name} must be a float tensor of pixels in [0, 1], got {kind}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        kind = (
            f"{y.dtype} of shape {tuple(y.shape)}"
            if isinstance(y, torch.Tensor)
            else type(y).__name__
        )
        raise TypeError(
            f"{y_name} must be a 1-D int64 tensor of class labels, got {kind}; e.g. {y_name}.long()"
        )
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{x_name} and {y_name} must be non-empty and of equal length, got {len(x)} and {len(y)}"
        )
