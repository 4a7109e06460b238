"""The model zoo: trained once through the cache, loaded after; quick and full never mixed."""

from __future__ import annotations

import pytest
import torch

from course_adv import zoo
from course_adv.cache import checkpoint_path, config_key
from course_adv.data import MNIST_CLASSES, Dataset


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
    variants = [
        zoo.config_for("cnn", data=tiny_data, epochs=3),
        zoo.config_for("cnn", data=tiny_data, epochs=2, seed=1),
        zoo.config_for("cnn", data=tiny_data, epochs=2, dropout=0.5),
        zoo.config_for("cnn", data=tiny_data, epochs=2, width=2),
        zoo.config_for("pool_cnn", data=tiny_data, epochs=2),
    ]
    keys = {config_key(c) for c in [base, *variants]}
    assert len(keys) == 1 + len(variants)
    assert config_key(base) == config_key(zoo.config_for("cnn", data=tiny_data, epochs=2))


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


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(name="resnet"), ValueError, "not a standard model"),
        (dict(name="cnn", epochs=0), ValueError, "epochs"),
        (dict(name="cnn", seed=-1), ValueError, "seed"),
        (dict(name="cnn", depth=3), ValueError, "unknown model options"),
        (dict(name="softmax", dropout=0.5), ValueError, "unknown model options"),
        (dict(name="cnn", data="mnist"), TypeError, "Dataset"),
    ],
)
def test_config_rejects_bad_arguments(kwargs, error, match, tiny_data):
    kwargs.setdefault("data", tiny_data)
    with pytest.raises(error, match=match):
        zoo.config_for(**kwargs)


def test_recipes_cover_every_standard_model():
    assert set(zoo.STANDARD_MODELS) == {"softmax", "mlp", "cnn", "pool_cnn"}
    for recipe in zoo.RECIPES.values():
        assert 1 <= recipe.quick_epochs < recipe.epochs
