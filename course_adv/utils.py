"""Device choice, seeding and quick mode: the three settings every notebook shares.

Quick mode (``COURSE_ADV_QUICK=1``, set by ``make test``) is read here and only here, so
one environment variable shrinks every epoch count and evaluation set in the course.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "quick_mode", "scaled"]

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


def scaled(full: int, quick: int) -> int:
    """``full`` at teaching scale, ``quick`` in quick mode (epochs, test-set sizes...)."""
    return quick if quick_mode() else full
