"""The model zoo: trained once through the cache, loaded after; quick and full never mixed."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import replace

import pytest
import torch

from course_adv import attacks, zoo
from course_adv.cache import checkpoint_path, config_key
from course_adv.data import MNIST_CLASSES, Dataset
from course_adv.models import SmallCNN
from course_adv.training import (
    EnsembleAdversarial,
    FastFGSM,
    FGSMRegularizer,
    IterativeRegularizer,
    PGDMinMax,
    Standard,
    UniformNoise,
    seeded,
)


@pytest.fixture
def tiny_data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(320) % 10
    # a learnable toy problem: the class sets the brightness of one image row
    x = 0.1 * torch.rand(320, 1, 28, 28, generator=g)
    x[torch.arange(320), 0, 2 * y + 4, :] = 1.0
    return Dataset(x[:256], y[:256], x[256:], y[256:], MNIST_CLASSES, "toy")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_ADV_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = zoo.train

    def counting(*args, **kwargs):
        calls.append(kwargs.get("epochs"))
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo, "train", counting)
    return calls


def test_quick_and_full_mode_get_different_cache_keys(monkeypatch, tiny_data):
    monkeypatch.delenv("COURSE_ADV_QUICK", raising=False)
    full = zoo.config_for("cnn", data=tiny_data)
    monkeypatch.setenv("COURSE_ADV_QUICK", "1")
    quick = zoo.config_for("cnn", data=tiny_data)
    assert full["epochs"] == zoo.RECIPES["cnn"].epochs
    assert quick["epochs"] == zoo.RECIPES["cnn"].quick_epochs < full["epochs"]
    assert config_key(full) != config_key(quick)
    assert checkpoint_path(full) != checkpoint_path(quick)


def test_every_setting_that_changes_the_model_changes_the_key(tiny_data):
    base = zoo.config_for("cnn", data=tiny_data, epochs=2)
    other_data = dataclasses.replace(tiny_data, x_train=tiny_data.x_train.flip(0))
    variants = [
        zoo.config_for("cnn", data=tiny_data, epochs=3),
        zoo.config_for("cnn", data=tiny_data, epochs=2, seed=1),
        zoo.config_for("cnn", data=tiny_data, epochs=2, dropout=0.5),
        zoo.config_for("cnn", data=tiny_data, epochs=2, width=2),
        zoo.config_for("pool_cnn", data=tiny_data, epochs=2),
        zoo.config_for("cnn", data=other_data, epochs=2),  # same name and size, other digits
        zoo.config_for("pgd", data=tiny_data, epochs=2),
    ]
    recipe = zoo.RECIPES["cnn"]
    for change in [
        {"lr": 2e-3},
        {"batch_size": 64},
        {"optimizer": "sgd"},
        {"weight_decay": 1e-4},
        {"lr_schedule": "cyclic"},
        {"objective": UniformNoise(0.1)},
    ]:
        variants.append(zoo.config_for(replace(recipe, **change), data=tiny_data, epochs=2))
    keys = {config_key(c) for c in [base, *variants]}
    assert len(keys) == 1 + len(variants)
    assert config_key(base) == config_key(zoo.config_for("cnn", data=tiny_data, epochs=2))


def _static(seed):
    with seeded(seed):
        return SmallCNN()


def other_fgsm(model, x, y, eps):
    """A named attack function, different from the default "fgsm"."""
    return attacks.fgsm(model, x, y, eps)


# For every field of every objective: another valid value. A new field without an entry
# here fails the test below, so no setting can be left out of the cache key unnoticed.
OTHER_VALUE = {
    "eps": 0.2,
    "alpha": 0.3,
    "labels": "predicted",
    "steps": 7,
    "step_size": 0.5,
    "warmup_epochs": 3.0,
    "random_start": False,
    "stop_on_overfitting": False,
    "check_size": 100,
    "check_steps": 5,
    "drop": 0.3,
}
OBJECTIVES = [
    Standard(),
    FGSMRegularizer(0.1),
    UniformNoise(0.1),
    IterativeRegularizer(0.1, attack="bim"),
    PGDMinMax(0.1),
    FastFGSM(0.1),
    EnsembleAdversarial([_static(1)], 0.1),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: type(o).__name__)
def test_every_objective_setting_changes_the_key(objective, tiny_data):
    def key(obj):
        recipe = zoo.Recipe("cnn", obj, epochs=2, quick_epochs=1)
        return config_key(zoo.config_for(recipe, data=tiny_data))

    base = key(objective)
    assert base == key(replace(objective))  # the same settings, the same key
    other = dict(OTHER_VALUE)
    if isinstance(objective, IterativeRegularizer):
        other["attack"] = "pgd"
    if isinstance(objective, EnsembleAdversarial):
        other["attack"] = other_fgsm
        other["static"] = [_static(2)]  # same class, other weights
    for f in dataclasses.fields(objective):
        if not f.init:
            continue
        assert f.name in other, f"add another value for {type(objective).__name__}.{f.name}"
        assert key(replace(objective, **{f.name: other[f.name]})) != base, f.name


def test_static_models_are_keyed_by_their_weights_and_attacks_by_name(tiny_data):
    def key(static, attack="fgsm"):
        objective = EnsembleAdversarial(static, 0.1, attack=attack)
        return config_key(zoo.config_for(zoo.Recipe("cnn", objective, 2, 1), data=tiny_data))

    a, b = _static(1), _static(2)
    assert key([a]) == key([_static(1)])  # equal weights, equal key
    assert len({key([a]), key([b]), key([a, b]), key([b, a]), key([a], other_fgsm)}) == 5
    with pytest.raises(TypeError, match="no stable name"):
        key([a], lambda m, x, y, eps: x)


def test_second_call_loads_from_the_cache_without_training(cache, tiny_data, count_training):
    model, info = zoo.standard_model("cnn", data=tiny_data, epochs=2, device="cpu", verbose=False)
    assert count_training == [2]
    assert len(info["history"]["loss"]) == 2
    assert info["parameters"] == 166_406
    assert not model.training
    assert list(cache.glob("models/zoo-cnn-seed0-*.pt"))

    again, info2 = zoo.standard_model("cnn", data=tiny_data, epochs=2, device="cpu", verbose=False)
    assert count_training == [2], "the second call must load, not train"
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert info2["history"] == info["history"]
    assert info2["test_accuracy"] == pytest.approx(info["test_accuracy"])


def test_a_trained_model_learns_and_reports_test_accuracy(cache, tiny_data):
    model, info = zoo.standard_model(
        "softmax", data=tiny_data, epochs=5, device="cpu", verbose=False
    )
    with torch.no_grad():
        acc = (model(tiny_data.x_test).argmax(1) == tiny_data.y_test).float().mean().item()
    assert info["test_accuracy"] == pytest.approx(acc)
    assert acc > 0.5  # chance is 0.1 on this separable toy problem
    assert info["history"]["loss"][-1] < info["history"]["loss"][0]
    assert info["config"]["model"] == "softmax"


def test_verbose_says_trained_then_loaded(cache, tiny_data, capsys):
    zoo.standard_model("softmax", data=tiny_data, epochs=1, device="cpu")
    assert "training zoo-softmax" in capsys.readouterr().out
    zoo.standard_model("softmax", data=tiny_data, epochs=1, device="cpu")
    assert "loaded zoo-softmax" in capsys.readouterr().out


def test_standard_models_trains_each_name(cache, tiny_data, count_training):
    out = zoo.standard_models(("softmax", "mlp"), data=tiny_data, epochs=1, verbose=False)
    assert list(out) == ["softmax", "mlp"]
    assert count_training == [1, 1]


def test_defended_models_are_cached_like_the_standard_ones(cache, tiny_data, count_training):
    state = torch.get_rng_state()
    model, info = zoo.defended_model("fgsm", data=tiny_data, epochs=1, device="cpu", verbose=False)
    again, _ = zoo.defended_model("fgsm", data=tiny_data, epochs=1, device="cpu", verbose=False)
    assert count_training == [1]
    assert info["config"]["objective"] == {
        "objective": "fgsm_regularizer",
        "eps": zoo.EPS,
        "alpha": 0.5,
        "labels": "true",
    }
    assert list(cache.glob("models/zoo-fgsm-seed0-*.pt"))
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream untouched


def test_the_seed_fixes_the_model_and_leaves_the_callers_stream(cache, tiny_data):
    torch.manual_seed(99)
    random.seed(99)
    state, py_state = torch.get_rng_state(), random.getstate()
    a, _ = zoo.standard_model("softmax", data=tiny_data, epochs=1, device="cpu", verbose=False)
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
    b, _ = zoo.standard_model(
        "softmax", seed=1, data=tiny_data, epochs=1, device="cpu", verbose=False
    )
    assert not torch.equal(a.linear.weight, b.linear.weight)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(recipe="resnet"), ValueError, "not a zoo model"),
        (dict(recipe="cnn", epochs=0), ValueError, "epochs"),
        (dict(recipe="cnn", seed=-1), ValueError, "seed"),
        (dict(recipe="cnn", depth=3), ValueError, "unknown model options"),
        (dict(recipe="softmax", dropout=0.5), ValueError, "unknown model options"),
        (dict(recipe="cnn", data="mnist"), TypeError, "Dataset"),
    ],
)
def test_config_rejects_bad_arguments(kwargs, error, match, tiny_data):
    kwargs.setdefault("data", tiny_data)
    with pytest.raises(error, match=match):
        zoo.config_for(**kwargs)


def test_one_set_of_recipes_standard_and_defended():
    assert set(zoo.STANDARD_MODELS) == {"softmax", "mlp", "cnn", "pool_cnn"}
    assert set(zoo.DEFENDED_MODELS) == {"pgd", "fgsm", "fast_fgsm", "noise"}
    assert set(zoo.RECIPES) == set(zoo.STANDARD_MODELS) | set(zoo.DEFENDED_MODELS)
    for recipe in zoo.RECIPES.values():
        assert 1 <= recipe.quick_epochs < recipe.epochs
    for name in zoo.STANDARD_MODELS:
        assert zoo.RECIPES[name].objective == Standard()
    assert zoo.RECIPES["pgd"].objective == PGDMinMax(0.3, steps=10, warmup_epochs=8)
    assert zoo.RECIPES["fgsm"].objective == FGSMRegularizer(0.3, alpha=0.5)
    assert zoo.RECIPES["noise"].objective == UniformNoise(0.3, alpha=0.5)
    fast = zoo.RECIPES["fast_fgsm"]
    assert fast.objective == FastFGSM(0.3, warmup_epochs=8)  # step 1.25 eps, with the stop
    assert fast.lr == 5e-3 and fast.lr_schedule == "cyclic"  # Wong et al.'s peak lr


def test_standard_and_defended_names_are_kept_apart(tiny_data):
    with pytest.raises(ValueError, match="defended one: use defended_model"):
        zoo.standard_model("pgd", data=tiny_data)
    with pytest.raises(ValueError, match="standard one: use standard_model"):
        zoo.defended_model("cnn", data=tiny_data)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model": "resnet"}, "model must be one of"),
        ({"epochs": True}, "epochs must be an int"),
        ({"lr": 0}, "lr must be a number > 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"lr_schedule": "cosine"}, "lr_schedule must be one of"),
    ],
)
def test_recipes_reject_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        replace(zoo.RECIPES["cnn"], **change)
