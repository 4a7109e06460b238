"""The training loop and every objective, on a few batches of real digits (fast on 2 cores)."""

from __future__ import annotations

import dataclasses
import functools
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from course_adv import attacks
from course_adv.data import load_data
from course_adv.models import SmallCNN
from course_adv.training import (
    EnsembleAdversarial,
    FastFGSM,
    FGSMRegularizer,
    History,
    IterativeRegularizer,
    PGDMinMax,
    Standard,
    UniformNoise,
    describe,
    overfitting_epoch,
    seeded,
    static_augmentation,
    train,
)
from course_adv.training.loop import _triangle

N_TRAIN = 256
BATCH = 64
EPS = 0.1


pytestmark = pytest.mark.usefixtures("one_torch_thread", "cpu_only")


@pytest.fixture(scope="module")
def digits():
    data = load_data()
    return data.x_train[:N_TRAIN], data.y_train[:N_TRAIN], data.x_test[:100], data.y_test[:100]


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _model(seed: int = 0) -> nn.Module:
    with seeded(seed):
        return SmallCNN()


def named_fgsm(model, x, y, eps):
    """A module-level attack function: it has a stable name, so it can be in a cache key."""
    return attacks.fgsm(model, x, y, eps)


OBJECTIVES = {
    "standard": lambda: Standard(),
    "fgsm_true": lambda: FGSMRegularizer(EPS),
    "fgsm_predicted": lambda: FGSMRegularizer(EPS, labels="predicted"),
    "uniform_noise": lambda: UniformNoise(EPS),
    "bim": lambda: IterativeRegularizer(EPS, attack="bim", steps=3, step_size=0.4),
    "pgd_mix": lambda: IterativeRegularizer(EPS, attack="pgd", steps=3),
    "pgd_minmax": lambda: PGDMinMax(EPS, steps=3),
    "fast_fgsm": lambda: FastFGSM(EPS, stop_on_overfitting=False),
    "fast_fgsm_zero_init": lambda: FastFGSM(EPS, step_size=EPS, random_start=False),
    "ensemble": lambda: EnsembleAdversarial([_model(123)], EPS),
}


def _objective_loss(objective, model, x, y) -> float:
    """The objective's loss on a fixed batch, with the same random draws every time."""
    with seeded(7):
        model.train()
        loss = objective(model, x, y, 100.0)
        model.eval()
    return loss.item()


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_each_objective_lowers_its_loss_and_changes_the_weights(name, digits):
    x, y, _, _ = digits
    objective = OBJECTIVES[name]()
    if hasattr(objective, "start"):
        objective.start(SmallCNN(), x, y)  # e.g. the ensemble moves its static models
    model = _model()
    before = _weights(model)
    loss_before = _objective_loss(objective, model, x[:BATCH], y[:BATCH])
    history = train(
        model, x, y, objective, epochs=6, lr=3e-3, batch_size=BATCH, device="cpu", progress=False
    )
    loss_after = _objective_loss(objective, model, x[:BATCH], y[:BATCH])
    assert loss_after < loss_before - 0.1, (name, loss_before, loss_after)
    assert len(history) == 6 and all(torch.isfinite(torch.tensor(history.loss)))
    changed = [k for k, v in _weights(model).items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)  # every parameter moved
    assert not model.training


def _train_weights(objective, x, y, *, seed=0, epochs=1, **kwargs) -> dict[str, torch.Tensor]:
    model = _model()
    train(
        model,
        x,
        y,
        objective,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        device="cpu",
        progress=False,
        **kwargs,
    )
    return _weights(model)


@pytest.mark.parametrize(
    "name", ["standard", "uniform_noise", "pgd_minmax", "fast_fgsm", "ensemble"]
)
def test_same_seed_same_weights_other_seed_other_weights(name, digits):
    x, y, _, _ = digits
    a = _train_weights(OBJECTIVES[name](), x[:128], y[:128], seed=0)
    b = _train_weights(OBJECTIVES[name](), x[:128], y[:128], seed=0)
    c = _train_weights(OBJECTIVES[name](), x[:128], y[:128], seed=1)
    assert _same(a, b)
    assert not _same(a, c)


def test_monitoring_does_not_change_what_is_trained(digits):
    """Issue 9: with the same seed, monitor= and monitor_attack= (an attack with random starts)
    leave the trained weights exactly as they are without them."""
    x, y, xt, yt = digits

    def random_start_pgd(m, a, b):
        return attacks.pgd(m, a, b, 0.1, 0.05, 2)  # draws its random start

    plain = _train_weights(UniformNoise(EPS), x[:128], y[:128], epochs=2)
    monitored = _train_weights(UniformNoise(EPS), x[:128], y[:128], epochs=2, monitor=(xt, yt))
    attacked = _train_weights(
        UniformNoise(EPS),
        x[:128],
        y[:128],
        epochs=2,
        monitor=(xt, yt),
        monitor_attack=random_start_pgd,
    )
    assert _same(plain, monitored)
    assert _same(plain, attacked)


def test_fast_fgsm_check_does_not_change_what_is_trained(digits):
    """The overfitting check (a PGD with random starts after each epoch) draws nothing from
    the training stream: check settings that never stop training give the same weights."""
    x, y, _, _ = digits
    a = _train_weights(FastFGSM(EPS, check_steps=1), x[:128], y[:128], epochs=2)
    b = _train_weights(FastFGSM(EPS, check_steps=4, check_size=7), x[:128], y[:128], epochs=2)
    assert _same(a, b)


def test_train_leaves_the_callers_global_state_alone(digits):
    x, y, xt, yt = digits
    model = SmallCNN()
    supported = torch.set_flush_denormal(False)
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(5)
    torch_state, py_state, np_state = (
        torch.get_rng_state(),
        random.getstate(),
        np.random.get_state(),
    )
    train(
        model,
        x[:128],
        y[:128],
        FastFGSM(EPS),
        epochs=1,
        batch_size=32,
        seed=3,
        monitor=(xt, yt),
        progress=False,
    )
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    if supported:  # a denormal float32 survives arithmetic: flushing was not switched on
        assert (torch.tensor([1e-39]) * 1.0).item() != 0.0


class _ModeRecorder(nn.Module):
    """Records the train/eval mode of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


def test_attacks_run_in_eval_mode_and_the_loss_in_train_mode(digits):
    x, y, _, _ = digits
    recorder = _ModeRecorder()
    model = nn.Sequential(recorder, SmallCNN())
    train(model, x[:128], y[:128], FGSMRegularizer(EPS), epochs=1, batch_size=64, progress=False)
    # per batch: the attack (eval) then the mixed loss (train)
    assert True in recorder.modes and False in recorder.modes
    assert recorder.modes.count(True) == 2  # one loss forward per batch, 2 batches
    assert not model.training


def test_the_mixed_loss_is_eq_2(digits):
    x, y, _, _ = digits
    model = _model().double()
    xb, yb = x[:32].double(), y[:32]
    ce = nn.functional.cross_entropy
    for alpha in (0.0, 0.3, 1.0):
        got = FGSMRegularizer(EPS, alpha=alpha)(model, xb, yb, 0.0)
        x_adv = attacks.fgsm(model, xb, yb, EPS)
        want = alpha * ce(model(xb), yb) + (1 - alpha) * ce(model(x_adv), yb)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_uniform_noise_is_eq_2_with_fresh_noise_in_the_eps_ball(digits):
    """Goodfellow et al.'s control: the FGSM half of eq. (2) replaced by U(-eps, eps) noise,
    drawn afresh for every batch, kept in [0, 1]."""
    x, y, _, _ = digits
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model().double()

        def forward(self, inp):
            seen.append(inp.detach())
            return self.net(inp)

    xb, yb = x[:32].double(), y[:32]
    spy = Spy().train()
    objective = UniformNoise(EPS, alpha=0.3)
    with seeded(11):
        got = objective(spy, xb, yb, 0.0)
    with seeded(11):
        noisy = (xb + torch.empty_like(xb).uniform_(-EPS, EPS)).clamp(0, 1)
    ce = nn.functional.cross_entropy
    want = 0.3 * ce(spy.net(xb), yb) + 0.7 * ce(spy.net(noisy), yb)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    first = seen[0][32:]
    objective(spy, xb, yb, 0.0)
    second = seen[-1][32:]
    for batch in (first, second):
        assert (batch - xb).abs().max() <= EPS + 1e-12
        assert batch.min() >= 0 and batch.max() <= 1
        assert (batch - xb).abs().max() > EPS / 2  # it did move
    assert not torch.equal(first, second)  # fresh noise per batch


def test_pgd_minmax_loss_is_cross_entropy_at_madrys_final_iterate(digits):
    """Issue 9: eq. (3)'s loss is exactly CE(model(pgd(..., freeze_fooled=False)), y) with the
    same random start (float64, so the comparison can be exact)."""
    x, y, _, _ = digits
    model = _model().double().train()
    xb, yb = x[:48].double(), y[:48]
    objective = PGDMinMax(0.2, steps=4)
    with seeded(5):
        got = objective(model, xb, yb, 10.0)
    with seeded(5):
        x_adv = attacks.pgd(model, xb, yb, 0.2, 0.2 * 2.5 / 4, 4, freeze_fooled=False)
    want = nn.functional.cross_entropy(model(x_adv), yb)
    assert torch.equal(got, want)
    assert model.training  # the attack gave the mode back


def test_pgd_minmax_warmup_ramps_eps_linearly(digits):
    x, y, _, _ = digits
    objective = PGDMinMax(0.3, steps=2, warmup_epochs=2)
    assert objective.eps_at(0.0) == 0.0
    assert objective.eps_at(1.0) == pytest.approx(0.15)
    assert objective.eps_at(5.0) == pytest.approx(0.3)
    history = train(
        SmallCNN(), x[:128], y[:128], objective, epochs=3, batch_size=64, progress=False
    )
    assert history.extra["eps"] == pytest.approx([0.15, 0.3, 0.3])
    # at eps = 0 the objective is plain cross-entropy
    model = _model().double()
    clean = nn.functional.cross_entropy(model(x[:16].double()), y[:16])
    assert torch.equal(objective(model, x[:16].double(), y[:16], 0.0), clean)


def test_the_overfitting_rule_sees_a_collapse_spread_over_epochs():
    """Issue 9, seed 2: PGD accuracy at the current eps fell 0.53 -> 0.51 -> 0.37 -> 0.20 ->
    0.03; no single epoch fell by 0.2, so comparing with the previous epoch never fired."""
    collapse = [0.53, 0.51, 0.37, 0.20, 0.03]
    assert (
        max(a - b for a, b in zip(collapse[:-1], collapse[1:], strict=True)) < 0.2
    )  # the old rule's blind spot
    assert overfitting_epoch(collapse, 0.2) == 3  # 0.20 is 0.33 below the best, 0.53
    assert overfitting_epoch([0.6, 0.1], 0.2) == 1  # a sudden collapse too
    assert overfitting_epoch([0.2, 0.4, 0.35, 0.5, 0.45, 0.6], 0.2) is None  # noise, no collapse
    assert overfitting_epoch([], 0.2) is None and overfitting_epoch([0.9], 0.2) is None


def test_fast_fgsm_stops_on_a_collapse_and_restores_the_best_epoch(digits, monkeypatch):
    x, y, _, _ = digits
    accs = iter([0.5, 0.6, 0.55, 0.45, 0.39])  # best 0.6 in epoch 2, 0.39 is 0.21 below
    seen_eps = []

    def fake_check(self, model, eps):
        seen_eps.append(eps)
        return next(accs, 0.5), 0.9

    monkeypatch.setattr(FastFGSM, "check_accuracy", fake_check)
    model = _model()
    objective = FastFGSM(EPS, warmup_epochs=4)
    history = train(model, x, y, objective, epochs=6, batch_size=BATCH, progress=False)
    assert len(history) == 5
    assert history.stop_reason and "catastrophic overfitting in epoch 5" in history.stop_reason
    assert "epoch 2" in history.stop_reason
    assert history.extra["check_robust_acc"] == [0.5, 0.6, 0.55, 0.45, 0.39]
    # checked at the eps of the warm-up at the end of each epoch, not at the final eps
    assert seen_eps == pytest.approx([EPS / 4, EPS / 2, 3 * EPS / 4, EPS, EPS])
    assert history.extra["eps"] == pytest.approx(seen_eps)

    seen_eps.clear()
    two_epochs = _model()
    train(
        two_epochs, x, y, FastFGSM(EPS, warmup_epochs=4), epochs=2, batch_size=BATCH, progress=False
    )
    assert _same(_weights(model), _weights(two_epochs))  # the best epoch's weights came back


def test_fast_fgsm_without_the_stop_trains_on(digits, monkeypatch):
    x, y, _, _ = digits
    accs = iter([0.6, 0.1, 0.1])
    monkeypatch.setattr(FastFGSM, "check_accuracy", lambda self, model, eps: (next(accs), 0.9))
    objective = FastFGSM(EPS, stop_on_overfitting=False)
    history = train(SmallCNN(), x, y, objective, epochs=3, batch_size=BATCH, progress=False)
    assert len(history) == 3 and history.stop_reason is None


def test_fast_fgsm_check_is_pgd_and_fgsm_accuracy_on_a_fixed_batch(digits):
    x, y, _, _ = digits
    objective = FastFGSM(EPS, check_size=50)
    with pytest.raises(RuntimeError, match="start"):
        objective.check_accuracy(SmallCNN(), EPS)
    objective.start(SmallCNN(), x, y)
    model = _model()
    train(model, x, y, Standard(), epochs=2, batch_size=BATCH, progress=False)
    clean = (model(x[:50]).argmax(1) == y[:50]).float().mean().item()
    with seeded(0):
        pgd_acc, fgsm_acc = objective.check_accuracy(model, EPS)
    assert pgd_acc < clean and fgsm_acc < clean  # the attacks do hurt
    assert pgd_acc <= fgsm_acc + 0.04  # 10 PGD steps are no weaker than one FGSM step
    assert objective.check_accuracy(model, 0.0) == (clean, clean)


def test_fast_fgsm_stays_in_the_eps_ball(digits):
    x, y, _, _ = digits
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

        def forward(self, inp):
            if self.training:
                seen.append(inp.detach())
            return self.net(inp)

    FastFGSM(EPS)(Spy().train(), x[:32], y[:32], 0.0)
    x_adv = seen[-1]
    assert (x_adv - x[:32]).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x[:32]).abs().max() > EPS / 2  # it did move


def test_ensemble_draws_sources_from_all_models(digits):
    x, y, _, _ = digits
    static = [_model(123), _model(124)]
    objective = EnsembleAdversarial(static, EPS)
    before = _weights(static[0])
    train(SmallCNN(), x, y, objective, epochs=3, batch_size=32, progress=False)
    assert sum(objective.source_counts) == 3 * (N_TRAIN // 32)
    assert all(count > 0 for count in objective.source_counts)
    assert _same(before, _weights(static[0]))  # static models never train


def test_static_augmentation_adds_fixed_adversarial_copies(digits):
    x, y, _, _ = digits
    source = _model(123)
    x_aug, y_aug = static_augmentation(source, x[:40], y[:40], EPS)
    assert x_aug.shape == (80, 1, 28, 28) and torch.equal(y_aug, torch.cat([y[:40], y[:40]]))
    assert torch.equal(x_aug[:40], x[:40])
    assert torch.allclose(x_aug[40:], attacks.fgsm(source, x[:40], y[:40], EPS), atol=1e-6)
    x_bim, _ = static_augmentation(source, x[:40], y[:40], EPS, attack="bim")
    assert (x_bim[40:] - x[:40]).abs().max() <= EPS + 1e-6


def test_monitor_history_and_json_round_trip(digits):
    x, y, xt, yt = digits
    history = train(
        SmallCNN(),
        x,
        y,
        Standard(),
        epochs=2,
        batch_size=BATCH,
        monitor=(xt, yt),
        monitor_attack=lambda m, a, b: attacks.fgsm(m, a, b, 0.3),
        progress=False,
    )
    assert history.clean_acc_on == "monitor"
    assert all(
        r is not None and 0 <= r <= c
        for r, c in zip(history.robust_acc, history.clean_acc, strict=True)
    )
    data = json.loads(json.dumps(history.as_dict()))
    assert History.from_dict(data).as_dict() == history.as_dict()
    assert "epoch" in str(history)
    plain = train(SmallCNN(), x, y, Standard(), epochs=1, batch_size=BATCH, progress=False)
    assert plain.clean_acc_on == "train" and plain.robust_acc == [None]


def test_progress_bar_and_cyclic_schedule(digits, capsys):
    x, y, _, _ = digits
    train(SmallCNN(), x[:128], y[:128], Standard(), epochs=1, batch_size=64, lr_schedule="cyclic")
    assert "standard" in capsys.readouterr().err
    assert _triangle(0.0) == 0.0 and _triangle(0.4) == pytest.approx(1.0)
    assert _triangle(0.7) == pytest.approx(0.5) and _triangle(1.0) == 0.0


def test_objectives_are_frozen_dataclasses_with_generated_repr():
    objective = PGDMinMax(0.3, warmup_epochs=8)
    assert repr(objective).startswith("PGDMinMax(eps=0.3, steps=10, step_size=0.25")
    assert objective == PGDMinMax(0.3, steps=10, step_size=0.25, warmup_epochs=8.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        objective.eps = 0.1
    # a copy starts with fresh state: nothing of an earlier run carries over
    fast = FastFGSM(0.3)
    fast.start(SmallCNN(), torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    assert dataclasses.replace(fast)._state == {} and fast == dataclasses.replace(fast)


def test_describe_is_complete_json_for_the_cache():
    for make in OBJECTIVES.values():
        config = describe(make())
        assert json.loads(json.dumps(config)) == config and "objective" in config
    assert describe(PGDMinMax(0.3)) == {
        "objective": "pgd_minmax",
        "eps": 0.3,
        "steps": 10,
        "step_size": 0.25,
        "warmup_epochs": 0.0,
        "random_start": True,
    }
    static = describe(EnsembleAdversarial([_model(1)], 0.3))["static"][0]
    assert static["class"] == "course_adv.models.SmallCNN" and len(static["sha256"]) == 64
    named = describe(EnsembleAdversarial([_model(1)], 0.3, attack=named_fgsm))["attack"]
    assert named == f"{__name__}.named_fgsm"


@pytest.mark.parametrize(
    "attack",
    [lambda m, x, y, eps: x, functools.partial(named_fgsm)],
    ids=["lambda", "partial"],
)
def test_describe_refuses_callables_without_a_stable_name(attack):
    objective = EnsembleAdversarial([_model(1)], 0.3, attack=attack)
    with pytest.raises(TypeError, match="no stable name.*module-level function.*'fgsm'"):
        describe(objective)
    with pytest.raises(TypeError, match="no stable name"):
        describe(lambda m, x, y, e: None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs must be an int >= 1"),
        ({"epochs": True}, ValueError, "epochs must be an int"),
        ({"epochs": 2.0}, ValueError, "epochs must be an int"),
        ({"batch_size": 10_000}, ValueError, r"batch_size must be at most .* \(256\)"),
        ({"batch_size": True}, ValueError, "batch_size must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"seed": True}, ValueError, "seed must be an int"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of"),
        ({"lr_schedule": "cosine"}, ValueError, "lr_schedule must be one of"),
        ({"lr": -1.0}, ValueError, "lr must be a number > 0"),
        ({"lr": True}, ValueError, "lr must be a number"),
        ({"lr": float("nan")}, ValueError, "lr must be a number"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be a number >= 0"),
        ({"monitor_attack": lambda m, x, y: x}, ValueError, "monitor_attack needs a monitor"),
        ({"monitor": "test set"}, TypeError, r"monitor must be an \(x, y\) pair"),
        ({"monitor": (torch.zeros(3, 1, 28, 28), torch.zeros(3))}, TypeError, r"monitor\[1\]"),
    ],
)
def test_train_rejects_bad_arguments(kwargs, error, match, digits):
    x, y, _, _ = digits
    args = {"epochs": 1, "progress": False, **kwargs}
    model = SmallCNN()
    before = _weights(model)
    with pytest.raises(error, match=match):
        train(model, x, y, Standard(), **args)
    assert _same(before, _weights(model))  # nothing trained before the error


def test_train_rejects_bad_data_and_objectives(digits):
    x, y, _, _ = digits
    with pytest.raises(TypeError, match="y must be a 1-D int64"):
        train(SmallCNN(), x, y.float(), Standard(), epochs=1, progress=False)
    with pytest.raises(TypeError, match="objective must be callable"):
        train(SmallCNN(), x, y, "pgd", epochs=1, progress=False)
    with pytest.raises(TypeError, match="scalar loss"):
        train(SmallCNN(), x, y, lambda m, a, b, e: 1.0, epochs=1, progress=False)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: FGSMRegularizer(0.3, labels="leaky"), ValueError, "labels must be 'true'"),
        (lambda: FGSMRegularizer(0.3, alpha=1.5), ValueError, "alpha"),
        (lambda: FGSMRegularizer(True), ValueError, "eps must be a number in"),
        (lambda: UniformNoise(1.5), ValueError, "eps must be a number in"),
        (lambda: PGDMinMax(-0.1), ValueError, "eps must be a number in"),
        (lambda: PGDMinMax(0.3, steps=True), ValueError, "steps must be an int"),
        (lambda: PGDMinMax(0.3, steps=2.5), ValueError, "steps must be an int"),
        (lambda: PGDMinMax(0.3, step_size=0), ValueError, "step_size"),
        (lambda: PGDMinMax(0.3, warmup_epochs=-1), ValueError, "warmup_epochs"),
        (lambda: PGDMinMax(0.3, random_start="yes"), TypeError, "random_start"),
        (lambda: IterativeRegularizer(0.3, attack="cw"), ValueError, "attack must be 'bim'"),
        (lambda: IterativeRegularizer(0.3, steps=True), ValueError, "steps must be an int"),
        (lambda: FastFGSM(0.3, check_size=True), ValueError, "check_size must be an int"),
        (lambda: FastFGSM(0.3, check_steps=0), ValueError, "check_steps must be an int"),
        (lambda: FastFGSM(0.3, drop=0), ValueError, "drop"),
        (lambda: FastFGSM(0.3, stop_on_overfitting=1), TypeError, "stop_on_overfitting"),
        (lambda: EnsembleAdversarial([], 0.3), TypeError, "static must be a non-empty list"),
        (lambda: EnsembleAdversarial(SmallCNN(), 0.3), TypeError, r"e\.g\. \[model\]"),
        (lambda: PGDMinMax(0.3, warmup_epochs=float("inf")), ValueError, "warmup_epochs"),
        (lambda: EnsembleAdversarial([SmallCNN()], 0.3, attack="cw"), ValueError, "attack"),
        (
            lambda: static_augmentation(SmallCNN(), torch.zeros(2, 1, 28, 28), None, 0.1),
            TypeError,
            "y",
        ),
    ],
)
def test_objectives_reject_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda(digits):
    x, y, xt, yt = digits
    model = SmallCNN()
    history = train(
        model,
        x,
        y,
        PGDMinMax(EPS, steps=2),
        epochs=1,
        batch_size=BATCH,
        device="cuda",
        monitor=(xt, yt),
        monitor_attack=lambda m, a, b: attacks.fgsm(m, a, b, EPS),
        progress=False,
    )
    assert next(model.parameters()).is_cuda and len(history) == 1
