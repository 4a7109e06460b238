"""Train-or-load: a checkpoint cache so a model trained in one notebook loads in the next.

A checkpoint is keyed by a hash of the training configuration and the package version, so
changing a hyperparameter or upgrading the course trains a fresh model instead of silently
reusing an old one. Writes are atomic (a temporary file in the same folder, then
``os.replace``), so a training killed midway never leaves a half-written checkpoint; loads use
``torch.load(..., weights_only=True)``, so a checkpoint cannot run code; a corrupt or stale
file is retrained with a warning, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .data import cache_dir
from .utils import get_device

__all__ = ["train_or_load", "config_key", "checkpoint_path", "tensors_digest", "model_fingerprint"]

FORMAT = 1


def config_key(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` and the package version."""
    try:
        text = json.dumps({"config": config, "version": __version__}, sort_keys=True)
    except TypeError as err:
        raise TypeError(
            f"config must be JSON-serialisable (str, int, float, bool, None, lists, dicts): {err}"
        ) from err
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes: the identity of data or of weights."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: nn.Module) -> dict[str, str]:
    """A model as a cache key sees it: its class and a SHA-256 of its state dict.

    Two models of the same class with different weights get different fingerprints, so a
    configuration that names a model (e.g. the static models of ensemble training) cannot
    load a checkpoint trained with another.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = model.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(tensors_digest(state[name]).encode())
    kind = type(model)
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "sha256": h.hexdigest()}


def checkpoint_path(config: Mapping[str, Any], folder: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint for ``config`` lives: ``<cache>/models/<name>-<hash>.pt``."""
    folder = Path(folder) if folder is not None else cache_dir() / "models"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config.get("name", "model")))[:40]
    return folder / f"{name}-{config_key(config)[:16]}.pt"


def train_or_load(
    config: Mapping[str, Any],
    build: Callable[[], nn.Module],
    fit: Callable[[nn.Module], dict | None],
    *,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    verbose: bool = True,
) -> tuple[nn.Module, dict]:
    """Return ``(model, info)``: loaded from the cache if a valid checkpoint exists, else trained.

    ``build()`` makes a fresh model; ``fit(model)`` trains it in place on ``device`` and returns a
    JSON-able dict (its history) stored beside the weights. The model comes back in eval mode.
    """
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a dict describing the model and its training, got {type(config).__name__}"
        )
    device = torch.device(device) if device is not None else get_device()
    key = config_key(config)
    path = checkpoint_path(config, cache_dir)

    model = build().to(device)
    if path.exists():
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
            if (
                not isinstance(payload, dict)
                or payload.get("format") != FORMAT
                or payload.get("key") != key
            ):
                raise ValueError("written for another configuration or package version")
            model.load_state_dict(payload["state_dict"])
            info = json.loads(payload["info"])
            if verbose:
                print(f"loaded {path.name} from the cache")
            return model.eval(), info
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is retrained
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            warnings.warn(f"checkpoint {path} is unusable ({reason}); retraining it", stacklevel=2)
            model = build().to(device)

    if verbose:
        print(f"training {config.get('name', 'model')} (not in the cache yet)")
    info = fit(model) or {}
    json.dumps(info)  # fail before writing anything if the info cannot be stored
    payload = {
        "format": FORMAT,
        "key": key,
        "config": json.dumps(config, sort_keys=True),
        "version": __version__,
        "info": json.dumps(info),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    _atomic_save(payload, path)
    return model.eval(), info


def _atomic_save(payload: dict, path: Path) -> None:
    """torch.save to a temporary file in ``path``'s folder, flush to disk, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
