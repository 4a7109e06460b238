"""The model zoo: every model the notebooks share, standard and defended, trained once and
then loaded from the checkpoint cache.

``standard_model("cnn")`` trains the small CNN with plain cross-entropy, stores it through
``course_adv.cache.train_or_load``, and loads it from there on every later call, in this
notebook or the next. ``defended_model("pgd")`` does the same for the lecture's defences.
The cache key is the complete training configuration (``config_for``): the architecture, the
objective with every setting (``course_adv.training.describe``), a hash of the training
data, epochs, optimiser, schedule and seed. Quick mode shrinks the epochs, so quick and full
runs never share a checkpoint.

    model, info = standard_model("cnn")        # the 166,406-parameter CNN of notebook 02
    model, info = defended_model("pgd")        # PGD min-max training at eps = 0.3 (eq. 3)
    info["test_accuracy"], info["history"]     # how it trained

The recipes (epochs at teaching scale / in quick mode) live in ``RECIPES``, one for each
name in ``STANDARD_MODELS`` and ``DEFENDED_MODELS``. A notebook with a training of its own
(a wider model, static models for ensemble training, augmented data) builds a ``Recipe`` and
calls ``trained_model(recipe, ...)``, which caches it the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .cache import tensors_digest, train_or_load
from .data import Dataset, load_data
from .evaluation import accuracy
from .models import MODELS, build_model, count_parameters
from .training import (
    FastFGSM,
    FGSMRegularizer,
    Objective,
    PGDMinMax,
    Standard,
    UniformNoise,
    describe,
    seeded,
    train,
)
from .training.loop import OPTIMIZERS, SCHEDULES, _check_int, _check_number
from .utils import full_or_quick, get_device

__all__ = [
    "Recipe",
    "RECIPES",
    "EPS",
    "STANDARD_MODELS",
    "DEFENDED_MODELS",
    "config_for",
    "trained_model",
    "standard_model",
    "standard_models",
    "defended_model",
]

EPS = 0.3  # the defences' budget: Madry et al.'s MNIST eps, 76/255


@dataclass(frozen=True)
class Recipe:
    """How a model of the zoo is trained: the architecture (a name of
    ``course_adv.models.MODELS``), the objective, epochs at teaching scale and in quick mode,
    and the optimiser's settings (see ``course_adv.training.train``)."""

    model: str
    objective: Objective
    epochs: int
    quick_epochs: int
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if not callable(self.objective):
            raise TypeError("objective must be an objective such as Standard() or PGDMinMax(0.3)")
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("quick_epochs", self.quick_epochs, minimum=1)
        _check_number("lr", self.lr, positive=True)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_number("weight_decay", self.weight_decay, positive=False)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")


RECIPES: dict[str, Recipe] = {
    # the standard models of notebook 00: plain cross-entropy, Adam
    "softmax": Recipe("softmax", Standard(), epochs=20, quick_epochs=5, lr=5e-3),
    "mlp": Recipe("mlp", Standard(), epochs=20, quick_epochs=5),
    "cnn": Recipe("cnn", Standard(), epochs=20, quick_epochs=5),
    "pool_cnn": Recipe("pool_cnn", Standard(), epochs=10, quick_epochs=2),
    # Madry et al. eq. (3): 10 PGD steps of 0.25 eps, eps ramped from 0 over 8 epochs,
    # one-cycle lr with peak 3e-3
    "pgd": Recipe(
        "cnn",
        PGDMinMax(EPS, steps=10, warmup_epochs=8),
        epochs=30,
        quick_epochs=3,
        lr=3e-3,
        lr_schedule="cyclic",
    ),
    # Goodfellow et al. eq. (2): alpha = 0.5, FGSM from x itself (a zero start), true labels
    "fgsm": Recipe("cnn", FGSMRegularizer(EPS, alpha=0.5), epochs=20, quick_epochs=5),
    # Wong et al. 2020: random start, step 1.25 eps, peak lr 5e-3 (theirs), the warm-up and
    # schedule of "pgd", stopped on catastrophic overfitting (which it meets in the warm-up,
    # near eps = 0.2, on seeds 0-2: the notebook 06 sidebar)
    "fast_fgsm": Recipe(
        "cnn",
        FastFGSM(EPS, warmup_epochs=8),
        epochs=30,
        quick_epochs=3,
        lr=5e-3,
        lr_schedule="cyclic",
    ),
    # Goodfellow et al.'s control: eq. (2) with uniform noise of the same size instead of FGSM
    "noise": Recipe("cnn", UniformNoise(EPS, alpha=0.5), epochs=20, quick_epochs=5),
}
STANDARD_MODELS: tuple[str, ...] = ("softmax", "mlp", "cnn", "pool_cnn")
DEFENDED_MODELS: tuple[str, ...] = ("pgd", "fgsm", "fast_fgsm", "noise")
_OPTIONS = {  # the keyword options of each architecture a recipe may vary
    "softmax": set(),
    "mlp": {"hidden", "depth", "width", "dropout"},
    "cnn": {"width", "dropout"},
    "pool_cnn": {"width", "dropout"},
}


def _recipe(recipe: str | Recipe) -> tuple[str, Recipe]:
    if isinstance(recipe, Recipe):
        return f"{recipe.model}-{describe(recipe.objective)['objective']}", recipe
    if recipe not in RECIPES:
        raise ValueError(
            f"name {recipe!r} is not a zoo model; choose one of {STANDARD_MODELS} (standard) "
            f"or {DEFENDED_MODELS} (defended), or pass a Recipe"
        )
    return recipe, RECIPES[recipe]


def config_for(
    recipe: str | Recipe = "cnn",
    *,
    seed: int = 0,
    epochs: int | None = None,
    data: Dataset | None = None,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """The complete JSON-able training configuration of a zoo model: its cache key.

    ``recipe``: a name of ``RECIPES`` or a ``Recipe``. ``epochs=None`` takes the recipe's
    epochs, or its quick-mode epochs in quick mode. ``model_kwargs`` (``width``,
    ``dropout``, ...) go to ``course_adv.models.build_model``. Every setting that changes
    the trained weights is in it; what only changes the printout (progress bars, the
    monitor set) is not.
    """
    name, recipe = _recipe(recipe)
    if epochs is not None:
        _check_int("epochs", epochs, minimum=1)
    _check_int("seed", seed, minimum=0)
    if data is not None and not isinstance(data, Dataset):
        raise TypeError("data must be a course_adv.data.Dataset (from load_data) or None")
    allowed = _OPTIONS[recipe.model]
    if not set(model_kwargs) <= allowed:
        raise ValueError(
            f"unknown model options {sorted(set(model_kwargs) - allowed)} for {recipe.model!r}; "
            f"{MODELS[recipe.model].__name__} takes {sorted(allowed)}"
        )
    data = data if data is not None else load_data()
    suffix = "".join(f"-{k}{v}" for k, v in sorted(model_kwargs.items()))
    return {
        "name": f"zoo-{name}{suffix}-seed{seed}",
        "model": recipe.model,
        "model_kwargs": dict(sorted(model_kwargs.items())),
        "objective": describe(recipe.objective),
        "data": {
            "name": data.name,
            "n_train": len(data.y_train),
            "sha256": tensors_digest(data.x_train, data.y_train),
        },
        "epochs": epochs
        if epochs is not None
        else full_or_quick(recipe.epochs, recipe.quick_epochs),
        "lr": float(recipe.lr),
        "batch_size": recipe.batch_size,
        "optimizer": recipe.optimizer,
        "weight_decay": float(recipe.weight_decay),
        "lr_schedule": recipe.lr_schedule,
        "seed": seed,
    }


def trained_model(
    recipe: str | Recipe,
    *,
    seed: int = 0,
    epochs: int | None = None,
    data: Dataset | None = None,
    device: torch.device | str | None = None,
    verbose: bool = True,
    **model_kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model trained by ``recipe`` (a name of ``RECIPES`` or a ``Recipe``), from the cache,
    trained first if it is not there yet.

    ``seed`` fixes the initial weights and the training (shuffles, random starts);
    ``data``: the Dataset to train on (default ``load_data()``, the offline 5,000 digits).
    Returns ``(model, info)``: the model in eval mode on ``device`` (default
    ``get_device()``), and ``info`` with ``history`` (per epoch: loss, test accuracy,
    seconds, the objective's extra series), ``test_accuracy``, ``parameters`` and
    ``config``. ``verbose`` prints whether the model was loaded or trained and shows the
    training progress bar.
    """
    data_ = data if data is not None else load_data()
    config = config_for(recipe, seed=seed, epochs=epochs, data=data_, **model_kwargs)
    _, recipe_ = _recipe(recipe)
    device = torch.device(device) if device is not None else get_device()

    def build() -> nn.Module:
        with seeded(seed):  # the same seed gives the same initial weights
            return build_model(recipe_.model, **model_kwargs)

    def fit(model: nn.Module) -> dict[str, Any]:
        objective = recipe_.objective
        if dataclasses.is_dataclass(objective):  # a fresh copy: no state from an earlier run
            objective = dataclasses.replace(objective)
        history = train(
            model,
            data_.x_train,
            data_.y_train,
            objective,
            epochs=config["epochs"],
            lr=recipe_.lr,
            batch_size=recipe_.batch_size,
            seed=seed,
            device=device,
            optimizer=recipe_.optimizer,
            weight_decay=recipe_.weight_decay,
            lr_schedule=recipe_.lr_schedule,
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


def standard_model(name: str = "cnn", **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A normally trained model (one of ``STANDARD_MODELS``: ``softmax``, ``mlp``, ``cnn``,
    ``pool_cnn``) from the cache; the keywords are those of ``trained_model``."""
    if name not in STANDARD_MODELS:
        raise ValueError(
            f"name {name!r} is not a standard model; choose one of {STANDARD_MODELS}"
            + (" (it is a defended one: use defended_model)" if name in DEFENDED_MODELS else "")
        )
    return trained_model(name, **kwargs)


def standard_models(
    names: tuple[str, ...] = STANDARD_MODELS, **kwargs: Any
) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """``{name: standard_model(name, **kwargs)}`` for each name, trained one after another."""
    return {name: standard_model(name, **kwargs) for name in names}


def defended_model(name: str = "pgd", **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """An adversarially trained small CNN (one of ``DEFENDED_MODELS``) from the cache.

    ``pgd``: Madry et al.'s eq. (3) at eps = 0.3 with a warm-up; ``fgsm``: Goodfellow et
    al.'s eq. (2), alpha = 0.5; ``fast_fgsm``: Wong et al. 2020; ``noise``: eq. (2) with
    uniform noise, the control that does not help. The keywords are those of
    ``trained_model``; single-step recipes are seed-sensitive, so compare a few seeds.
    """
    if name not in DEFENDED_MODELS:
        raise ValueError(
            f"name {name!r} is not a defended model; choose one of {DEFENDED_MODELS}"
            + (" (it is a standard one: use standard_model)" if name in STANDARD_MODELS else "")
        )
    return trained_model(name, **kwargs)
