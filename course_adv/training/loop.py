"""The training loop: seeded mini-batches, one pluggable objective, a per-epoch History.

``train(model, x, y, objective, epochs=...)`` is the only place that steps an optimiser. The
objective decides what is minimised (``course_adv.training.objectives``); the loop decides
everything else (batches, optimiser, schedule, seeding, monitoring). It touches no global
state: the caller's random stream comes back as it was, and ``torch.set_flush_denormal`` is
left to notebooks and commands.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..utils import check_data, get_device

if TYPE_CHECKING:
    from ..attacks import Attack

__all__ = ["History", "Objective", "train", "seeded", "OPTIMIZERS", "SCHEDULES"]

# objective(model, x, y, epoch) -> scalar loss; epoch is a float (2.5 = halfway through epoch 3)
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cyclic")
_TRAIN_SAMPLE = 1000  # training points whose accuracy is recorded when there is no monitor set


@dataclass
class History:
    """Per-epoch record of a training run; ``as_dict()`` is JSON-able for the checkpoint cache.

    ``loss``: mean training loss of the epoch (the objective's loss). ``clean_acc``: accuracy
    on the monitor set (or, without one, on a fixed sample of up to 1,000 training points; see
    ``clean_acc_on``). ``robust_acc``: accuracy under ``monitor_attack`` on the monitor set
    (None per epoch when no attack was given). ``seconds``: wall time of each epoch.
    ``extra``: per-epoch series an objective adds (e.g. ``eps`` during a warm-up).
    ``stop_reason``: why training stopped early, or None.
    """

    loss: list[float] = field(default_factory=list)
    clean_acc: list[float] = field(default_factory=list)
    robust_acc: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)
    clean_acc_on: str = "train"
    stop_reason: str | None = None

    def __len__(self) -> int:
        return len(self.loss)

    @property
    def epochs(self) -> list[int]:
        """Epoch numbers 1..n, for plotting."""
        return list(range(1, len(self.loss) + 1))

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of lists (JSON-able)."""
        return {
            "loss": list(self.loss),
            "clean_acc": list(self.clean_acc),
            "robust_acc": list(self.robust_acc),
            "seconds": list(self.seconds),
            "extra": {k: list(v) for k, v in self.extra.items()},
            "clean_acc_on": self.clean_acc_on,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Rebuild a History from ``as_dict()`` output (e.g. the info a cached model carries)."""
        return cls(
            loss=list(data.get("loss", [])),
            clean_acc=list(data.get("clean_acc", [])),
            robust_acc=list(data.get("robust_acc", [])),
            seconds=list(data.get("seconds", [])),
            extra={k: list(v) for k, v in data.get("extra", {}).items()},
            clean_acc_on=data.get("clean_acc_on", "train"),
            stop_reason=data.get("stop_reason"),
        )

    def __str__(self) -> str:
        lines = [f"{'epoch':>5} {'loss':>8} {'clean':>7} {'robust':>7} {'sec':>6}"]
        for i in range(len(self)):
            rob = self.robust_acc[i]
            rob_text = "-" if rob is None else f"{100 * rob:6.1f}%"
            lines.append(
                f"{i + 1:>5} {self.loss[i]:8.4f} {100 * self.clean_acc[i]:6.1f}% "
                f"{rob_text:>7} {self.seconds[i]:6.1f}"
            )
        if self.stop_reason:
            lines.append(f"stopped early: {self.stop_reason}")
        return "\n".join(lines)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block on torch's random stream seeded with ``seed``; restore the caller's after.

    ``with seeded(0): model = SmallCNN()`` gives the same initial weights every time without
    changing what the caller's next ``torch.rand`` returns (CPU and accelerator streams).
    """
    _check_int("seed", seed, minimum=0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: Objective,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    monitor: tuple[torch.Tensor, torch.Tensor] | None = None,
    monitor_attack: Attack | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train ``model`` in place on ``(x, y)`` by minimising ``objective``; return its History.

    ``x``: N x C x H x W pixels in [0, 1]; ``y``: N int64 labels. Each epoch visits a seeded
    random permutation in batches of exactly ``batch_size`` (the last partial batch is
    dropped, so every step has the same shape). ``seed`` fixes the shuffles, the attacks'
    random starts and everything else random inside, so the same seed gives the same weights
    on the same machine; the caller's random stream is left as it was. The model is moved to
    ``device`` (default ``course_adv.utils.get_device()``) and left in eval mode.

    ``optimizer``: ``"adam"`` or ``"sgd"`` (momentum 0.9). ``lr_schedule``: ``"constant"``, or
    ``"cyclic"`` (linear from 0 up to ``lr`` at 40% of training and back down to 0, the
    one-cycle schedule of Wong et al. 2020). ``monitor``: an ``(x, y)`` pair evaluated after
    every epoch; ``monitor_attack(model, x, y) -> x_adv`` adds robust accuracy on it (for
    example ``lambda m, x, y: pgd(m, x, y, 0.3, 0.01, 20)``). Monitoring never changes what is
    trained: it draws from its own random stream. ``progress`` shows a tqdm bar.

    The objective's optional hooks: ``start(model, x, y)`` once before the first batch, and
    ``end_epoch(model, epoch, history) -> str | None`` after each epoch's metrics, where a
    message stops training (``History.stop_reason``).
    """
    check_data(x, y, "x", "y")
    _check_int("epochs", epochs, minimum=1)
    _check_int("batch_size", batch_size, minimum=1)
    if batch_size > len(x):
        raise ValueError(
            f"batch_size must be at most the number of training points ({len(x)}), "
            f"got {batch_size}; pass a smaller batch_size"
        )
    _check_int("seed", seed, minimum=0)
    _check_number("lr", lr, positive=True)
    _check_number("weight_decay", weight_decay, positive=False)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    if not callable(objective):
        raise TypeError(
            "objective must be callable as objective(model, x, y, epoch) -> loss, e.g. Standard()"
        )
    if monitor is not None:
        if not (isinstance(monitor, tuple | list) and len(monitor) == 2):
            raise TypeError("monitor must be an (x, y) pair of tensors, e.g. (x_test, y_test)")
        check_data(monitor[0], monitor[1], "monitor[0]", "monitor[1]")
    if monitor_attack is not None:
        if monitor is None:
            raise ValueError("monitor_attack needs a monitor set: pass monitor=(x_test, y_test)")
        if not callable(monitor_attack):
            raise TypeError("monitor_attack must be callable as attack(model, x, y) -> x_adv")

    from ..evaluation import accuracy, robust_accuracy  # evaluation imports nothing from here

    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    x, y = x.to(device), y.to(device)
    shuffle = torch.Generator().manual_seed(seed)  # the batches; nothing else draws from it
    if monitor is not None:
        eval_x, eval_y = monitor[0].to(device), monitor[1].to(device)
    else:  # a fixed sample of training points, from a generator of its own
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        eval_x, eval_y = x[pick[:_TRAIN_SAMPLE].to(device)], y[pick[:_TRAIN_SAMPLE].to(device)]
    history = History(clean_acc_on="monitor" if monitor is not None else "train")

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    n_batches = len(x) // batch_size
    total = epochs * n_batches
    step = 0
    end_epoch = getattr(objective, "end_epoch", None)
    bar = tqdm(total=total, desc=desc or _name(objective), disable=not progress, leave=True)
    with seeded(seed), bar:  # the objective's random draws follow the seed
        start = getattr(objective, "start", None)
        if start is not None:
            start(model, x, y)
        for epoch in range(epochs):
            tic = time.perf_counter()
            model.train()
            order = torch.randperm(len(x), generator=shuffle).to(device)
            running = torch.zeros((), device=device)
            for i in range(n_batches):
                if lr_schedule == "cyclic":
                    for group in opt.param_groups:
                        group["lr"] = lr * _triangle((step + 0.5) / total)
                idx = order[i * batch_size : (i + 1) * batch_size]
                loss = objective(model, x[idx], y[idx], epoch + i / n_batches)
                if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
                    raise TypeError(
                        f"objective {_name(objective)} must return a scalar loss tensor, "
                        f"got {type(loss).__name__}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += loss.detach()
                step += 1
                bar.update(1)
            model.eval()
            # between epochs nothing draws from the training stream: monitoring (and a check
            # such as fast FGSM's) never changes the weights that follow
            with torch.random.fork_rng():
                history.loss.append(float(running) / n_batches)
                history.clean_acc.append(accuracy(model, eval_x, eval_y))
                robust = None
                if monitor_attack is not None:
                    robust = robust_accuracy(model, eval_x, eval_y, monitor_attack)
                history.robust_acc.append(robust)
                reason = end_epoch(model, epoch, history) if end_epoch is not None else None
            history.seconds.append(time.perf_counter() - tic)
            postfix = {"loss": f"{history.loss[-1]:.3f}", "acc": f"{history.clean_acc[-1]:.3f}"}
            if robust is not None:
                postfix["rob"] = f"{robust:.3f}"
            bar.set_postfix(postfix, refresh=False)
            if reason:
                history.stop_reason = str(reason)
                break
    model.eval()
    return history


def _triangle(t: float) -> float:
    """Wong et al. 2020's cyclic schedule: 0 -> 1 at t = 0.4 -> 0 at t = 1."""
    return t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6)


def _name(objective: Any) -> str:
    return getattr(objective, "name", None) or getattr(objective, "__name__", None) or "train"


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_number(name: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
