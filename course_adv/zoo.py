"""The standard models every notebook reuses: trained once, then loaded from the cache.

``standard_model("cnn")`` trains the small CNN with plain cross-entropy
(``course_adv.training.train`` with ``Standard()``) on the default data, stores it through
``course_adv.cache.train_or_load``, and loads it from there on every later call, in this
notebook or the next. The cache key is the full training configuration, including the
number of epochs, which quick mode shrinks: quick and full runs never share a checkpoint.

    model, info = standard_model("cnn")        # the 166,406-parameter CNN of notebook 02
    info["test_accuracy"], info["history"]     # how it trained

Recipes (epochs at teaching scale / in quick mode) live in ``RECIPES``; the names trained
by notebook 00 are ``STANDARD_MODELS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .cache import train_or_load
from .data import Dataset, load_data
from .evaluation import accuracy
from .models import MODELS, build_model, count_parameters
from .training import Standard, describe, train
from .utils import get_device, full_or_quick, seed_everything

__all__ = [
    "Recipe",
    "RECIPES",
    "STANDARD_MODELS",
    "standard_model",
    "standard_models",
    "config_for",
]


@dataclass(frozen=True)
class Recipe:
    """How a standard model is trained: epochs (full / quick), Adam step size, batch size."""

    epochs: int
    quick_epochs: int
    lr: float = 1e-3
    batch_size: int = 128


RECIPES: dict[str, Recipe] = {
    "softmax": Recipe(epochs=20, quick_epochs=5, lr=5e-3),
    "mlp": Recipe(epochs=20, quick_epochs=5),
    "cnn": Recipe(epochs=20, quick_epochs=5),
    "pool_cnn": Recipe(epochs=10, quick_epochs=2),
}
STANDARD_MODELS: tuple[str, ...] = tuple(RECIPES)
_OPTIONS = {
    "softmax": set(),
    "mlp": {"hidden", "depth", "width", "dropout"},
    "cnn": {"width", "dropout"},
    "pool_cnn": {"width", "dropout"},
}


def config_for(
    name: str = "cnn",
    *,
    seed: int = 0,
    epochs: int | None = None,
    data: Dataset | None = None,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """The JSON-able training configuration of a standard model (the cache key).

    ``epochs=None`` takes the recipe's epochs, or its quick-mode epochs in quick mode.
    ``model_kwargs`` (``width``, ``dropout``, ...) go to ``course_adv.models.build_model``.
    """
    if name not in RECIPES:
        raise ValueError(f"name {name!r} is not a standard model; choose one of {STANDARD_MODELS}")
    if epochs is not None and (
        not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1
    ):
        raise ValueError(f"epochs must be an int >= 1 or None (the recipe's), got {epochs!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if data is not None and not isinstance(data, Dataset):
        raise TypeError("data must be a course_adv.data.Dataset (from load_data) or None")
    allowed = _OPTIONS[name]
    if not set(model_kwargs) <= allowed:
        raise ValueError(
            f"unknown model options {sorted(set(model_kwargs) - allowed)} for {name!r}; "
            f"{MODELS[name].__name__} takes {sorted(allowed)}"
        )
    data = data if data is not None else load_data()
    recipe = RECIPES[name]
    suffix = "".join(f"-{k}{v}" for k, v in sorted(model_kwargs.items()))
    return {
        "name": f"zoo-{name}{suffix}-seed{seed}",
        "model": name,
        "model_kwargs": dict(sorted(model_kwargs.items())),
        "objective": describe(Standard()),
        "data": data.name,
        "n_train": len(data.y_train),
        "epochs": epochs if epochs is not None else full_or_quick(recipe.epochs, recipe.quick_epochs),
        "lr": recipe.lr,
        "batch_size": recipe.batch_size,
        "optimizer": "adam",
        "seed": seed,
    }


def standard_model(
    name: str = "cnn",
    *,
    seed: int = 0,
    epochs: int | None = None,
    data: Dataset | None = None,
    device: torch.device | str | None = None,
    verbose: bool = True,
    **model_kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """A normally trained model from the cache, trained first if it is not there yet.

    ``name``: one of ``STANDARD_MODELS`` (``softmax``, ``mlp``, ``cnn``, ``pool_cnn``).
    ``data``: the Dataset to train on (default ``load_data()``, the offline 5,000 digits).
    Returns ``(model, info)``: the model in eval mode on ``device`` (default
    ``get_device()``), and ``info`` with ``history`` (per epoch: loss, test accuracy,
    seconds), ``test_accuracy``, ``parameters`` and ``config``. ``verbose`` prints whether
    the model was loaded or trained and shows the training progress bar.
    """
    data_ = data if data is not None else load_data()
    config = config_for(name, seed=seed, epochs=epochs, data=data_, **model_kwargs)
    device = torch.device(device) if device is not None else get_device()
    recipe = RECIPES[name]

    def build() -> nn.Module:
        seed_everything(seed)  # the same seed gives the same initial weights
        return build_model(name, **model_kwargs)

    def fit(model: nn.Module) -> dict[str, Any]:
        history = train(
            model,
            data_.x_train,
            data_.y_train,
            Standard(),
            epochs=config["epochs"],
            lr=recipe.lr,
            batch_size=recipe.batch_size,
            seed=seed,
            device=device,
            monitor=(data_.x_test, data_.y_test),
            progress=verbose,
            desc=config["name"],
        )
        return {"history": history.as_dict()}

    model, info = train_or_load(config, build, fit, device=device, verbose=verbose)
    info = dict(info)
    info["config"] = config
    info["parameters"] = count_parameters(model)
    info["test_accuracy"] = accuracy(model, data_.x_test.to(device), data_.y_test.to(device))
    return model, info


def standard_models(
    names: tuple[str, ...] = STANDARD_MODELS, **kwargs: Any
) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """``{name: standard_model(name, **kwargs)}`` for each name, trained one after another."""
    return {name: standard_model(name, **kwargs) for name in names}
