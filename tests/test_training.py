"""The training loop and every objective, on a few batches of real digits (fast on 2 cores)."""

from __future__ import annotations

import json

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
    _triangle,
    describe,
    static_augmentation,
    train,
)

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


def _static_model() -> nn.Module:
    torch.manual_seed(123)
    return SmallCNN()


OBJECTIVES = {
    "standard": lambda: Standard(),
    "fgsm_true": lambda: FGSMRegularizer(EPS),
    "fgsm_predicted": lambda: FGSMRegularizer(EPS, labels="predicted"),
    "bim": lambda: IterativeRegularizer(EPS, attack="bim", steps=3, step_size=0.4),
    "pgd_mix": lambda: IterativeRegularizer(EPS, attack="pgd", steps=3),
    "pgd_minmax": lambda: PGDMinMax(EPS, steps=3),
    "fast_fgsm": lambda: FastFGSM(EPS, early_stop=False),
    "fast_fgsm_zero_init": lambda: FastFGSM(EPS, step_size=EPS, random_start=False),
    "ensemble": lambda: EnsembleAdversarial([_static_model()], EPS),
}


def _objective_loss(objective, model, x, y) -> float:
    """The objective's loss on a fixed batch, with the same random draws every time."""
    torch.manual_seed(7)
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
    torch.manual_seed(0)
    model = SmallCNN()
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


@pytest.mark.parametrize("name", ["standard", "pgd_minmax", "fast_fgsm", "ensemble"])
def test_same_seed_same_weights_other_seed_other_weights(name, digits):
    x, y, _, _ = digits

    def run(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = SmallCNN()
        train(
            model,
            x[:128],
            y[:128],
            OBJECTIVES[name](),
            epochs=1,
            batch_size=32,
            seed=seed,
            device="cpu",
            progress=False,
        )
        return _weights(model)

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


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
    torch.manual_seed(0)
    model = SmallCNN()
    xb, yb = x[:32], y[:32]
    for alpha in (0.0, 0.3, 1.0):
        got = FGSMRegularizer(EPS, alpha=alpha)(model, xb, yb, 0.0)
        x_adv = attacks.fgsm(model, xb, yb, EPS)
        ce = nn.functional.cross_entropy
        want = alpha * ce(model(xb), yb) + (1 - alpha) * ce(model(x_adv), yb)
        assert torch.allclose(got, want, atol=1e-6)


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
    model = SmallCNN()
    clean = nn.functional.cross_entropy(model(x[:16]), y[:16])
    assert torch.allclose(objective(model, x[:16], y[:16], 0.0), clean)


def test_fast_fgsm_stops_on_a_collapse_and_restores_the_previous_weights(digits):
    x, y, _, _ = digits
    objective = FastFGSM(EPS)
    accs = iter([0.6, 0.55, 0.1, 0.5])
    objective.check_accuracy = lambda model: next(accs)  # a collapse in the third epoch
    torch.manual_seed(0)
    model = SmallCNN()
    history = train(model, x, y, objective, epochs=4, batch_size=BATCH, progress=False)
    assert len(history) == 3
    assert history.stop_reason and "catastrophic overfitting" in history.stop_reason
    assert history.extra["check_robust_acc"] == [0.6, 0.55, 0.1]

    torch.manual_seed(0)
    two_epochs = SmallCNN()
    plain = FastFGSM(EPS)
    plain.check_accuracy = lambda model: 0.5  # same random draws as above: no real check
    train(two_epochs, x, y, plain, epochs=2, batch_size=BATCH, progress=False)
    restored, expected = _weights(model), _weights(two_epochs)
    assert all(torch.equal(restored[k], expected[k]) for k in expected)


def test_fast_fgsm_check_is_pgd_accuracy_on_a_fixed_batch(digits):
    x, y, _, _ = digits
    objective = FastFGSM(EPS, check_size=50)
    objective.start(SmallCNN(), x, y)
    assert torch.equal(objective._check[0], x[:50])
    torch.manual_seed(0)
    model = SmallCNN()
    train(model, x, y, Standard(), epochs=2, batch_size=BATCH, progress=False)
    clean = (model(x[:50]).argmax(1) == y[:50]).float().mean().item()
    assert 0.0 <= objective.check_accuracy(model) < clean  # the attack does hurt


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
    static = [_static_model(), _static_model()]
    objective = EnsembleAdversarial(static, EPS)
    before = _weights(static[0])
    train(SmallCNN(), x, y, objective, epochs=3, batch_size=32, progress=False)
    assert sum(objective.source_counts) == 3 * (N_TRAIN // 32)
    assert all(count > 0 for count in objective.source_counts)
    after = _weights(static[0])
    assert all(torch.equal(before[k], after[k]) for k in before)  # static models never train


def test_static_augmentation_adds_fixed_adversarial_copies(digits):
    x, y, _, _ = digits
    source = _static_model()
    x_aug, y_aug = static_augmentation(source, x[:40], y[:40], EPS)
    assert x_aug.shape == (80, 1, 28, 28) and torch.equal(y_aug, torch.cat([y[:40], y[:40]]))
    assert torch.equal(x_aug[:40], x[:40])
    assert torch.allclose(x_aug[40:], attacks.fgsm(source, x[:40], y[:40], EPS))
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


def test_describe_is_json_for_the_cache():
    for make in OBJECTIVES.values():
        config = describe(make())
        assert json.loads(json.dumps(config)) == config and "objective" in config
    assert describe(lambda m, x, y, e: None) == {"objective": "<lambda>"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epochs": 0}, ValueError),
        ({"batch_size": 10_000}, ValueError),
        ({"optimizer": "rmsprop"}, ValueError),
        ({"lr_schedule": "cosine"}, ValueError),
        ({"lr": -1.0}, ValueError),
        ({"monitor_attack": lambda m, x, y: x}, ValueError),
        ({"monitor": "test set"}, TypeError),
    ],
)
def test_train_rejects_bad_arguments(kwargs, error, digits):
    x, y, _, _ = digits
    args = {"epochs": 1, "progress": False, **kwargs}
    with pytest.raises(error):
        train(SmallCNN(), x, y, Standard(), **args)


def test_objectives_reject_bad_arguments(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="labels"):
        FGSMRegularizer(0.3, labels="leaky")
    with pytest.raises(ValueError, match="alpha"):
        FGSMRegularizer(0.3, alpha=1.5)
    with pytest.raises(ValueError, match="eps"):
        PGDMinMax(-0.1)
    with pytest.raises(ValueError, match="warmup"):
        PGDMinMax(0.3, warmup_epochs=-1)
    with pytest.raises(ValueError, match="attack"):
        IterativeRegularizer(0.3, attack="cw")
    with pytest.raises(TypeError, match="static"):
        EnsembleAdversarial([], 0.3)
    with pytest.raises(TypeError, match="scalar loss"):
        train(SmallCNN(), x, y, lambda m, a, b, e: 1.0, epochs=1, progress=False)


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
