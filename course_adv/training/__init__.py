"""One training loop, many defences: the objective is the only thing that changes.

``train(model, x, y, objective, epochs=...)`` (in ``loop``) runs a seeded mini-batch loop
(Adam or SGD, fixed batch shapes, a tqdm progress bar that works in JupyterLab and in a
terminal) and returns a ``History`` of per-epoch loss, clean accuracy and, when asked,
accuracy under an attack on a fixed monitor set. The objectives (in ``objectives``) are the
lecture's defences, one frozen dataclass each:

    from course_adv.training import PGDMinMax, train
    history = train(model, x_train, y_train, PGDMinMax(0.3, warmup_epochs=8), epochs=30)

``describe(objective)`` gives an objective's complete JSON-able settings, the part of a
checkpoint-cache key it contributes (``course_adv.zoo`` builds the rest).
"""

from .loop import History, Objective, seeded, train
from .objectives import (
    EnsembleAdversarial,
    FastFGSM,
    FGSMRegularizer,
    IterativeRegularizer,
    PGDMinMax,
    Standard,
    UniformNoise,
    describe,
    overfitting_epoch,
    static_augmentation,
)

__all__ = [
    "History",
    "Objective",
    "train",
    "seeded",
    "describe",
    "Standard",
    "static_augmentation",
    "FGSMRegularizer",
    "UniformNoise",
    "IterativeRegularizer",
    "PGDMinMax",
    "FastFGSM",
    "overfitting_epoch",
    "EnsembleAdversarial",
]
