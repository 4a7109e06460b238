import os
import subprocess
import sys
import textwrap

import pytest
import torch

from course_adv import cache
from course_adv.cache import checkpoint_path, config_key, train_or_load
from course_adv.models import SoftmaxRegression

CONFIG = {"name": "toy softmax", "lr": 0.1, "epochs": 1}


class Fit:
    """A stand-in for training: nudges the weights and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return {"loss": [1.0, 0.5]}


def _build():
    torch.manual_seed(0)
    return SoftmaxRegression()


def test_trains_once_then_loads(tmp_path):
    fit = Fit()
    model, info = train_or_load(
        CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False
    )
    again, info2 = train_or_load(
        CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False
    )
    assert fit.calls == 1
    assert info == info2 == {"loss": [1.0, 0.5]}
    assert not again.training and not model.training
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_path(CONFIG, tmp_path).name]


def test_key_depends_on_config_and_version(monkeypatch):
    assert config_key(CONFIG) == config_key(dict(reversed(list(CONFIG.items()))))
    assert config_key(CONFIG) != config_key({**CONFIG, "lr": 0.2})
    before = config_key(CONFIG)
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert config_key(CONFIG) != before


def test_version_change_retrains(tmp_path, monkeypatch):
    fit = Fit()
    train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    monkeypatch.setattr(cache, "__version__", "99.0")
    train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    assert fit.calls == 2


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage that is not a checkpoint", b"PK\x03\x04 truncated zip"],
    ids=["empty", "garbage", "truncated"],
)
def test_corrupt_checkpoint_is_retrained_with_a_warning(tmp_path, content):
    path = checkpoint_path(CONFIG, tmp_path)
    path.write_bytes(content)
    fit = Fit()
    with pytest.warns(UserWarning, match="unusable.*retraining"):
        model, _ = train_or_load(
            CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False
        )
    assert fit.calls == 1
    # the retrained checkpoint replaced the corrupt one and now loads
    train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    assert fit.calls == 1


def test_checkpoint_of_another_configuration_is_stale(tmp_path):
    path = checkpoint_path(CONFIG, tmp_path)
    torch.save({"format": 1, "key": "0" * 64, "state_dict": {}, "info": "{}"}, path)
    fit = Fit()
    with pytest.warns(UserWarning, match="another configuration"):
        train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    assert fit.calls == 1


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_loads_with_weights_only(tmp_path, monkeypatch):
    path = checkpoint_path(CONFIG, tmp_path)
    torch.save({"format": 1, "key": config_key(CONFIG), "evil": _Payload()}, path)
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd))
    fit = Fit()
    with pytest.warns(UserWarning, match="unusable"):
        train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    assert calls == [] and fit.calls == 1


def test_write_killed_midway_leaves_no_checkpoint(tmp_path):
    """A process killed (SIGKILL) while writing leaves the old checkpoint or none, never half of one."""
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from course_adv import cache
        from course_adv.models import SoftmaxRegression
        real_save = torch.save
        def save_then_die(obj, f):
            real_save(obj, f)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
        cache.torch.save = save_then_die
        cache.train_or_load({CONFIG!r}, SoftmaxRegression, lambda m: {{}}, cache_dir={str(tmp_path)!r},
                            device="cpu", verbose=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not checkpoint_path(CONFIG, tmp_path).exists()
    fit = Fit()
    train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    assert fit.calls == 1


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    fit = Fit()
    first, _ = train_or_load(CONFIG, _build, fit, cache_dir=tmp_path, device="cpu", verbose=False)
    path = checkpoint_path(CONFIG, tmp_path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the user pressed stop during the write

    monkeypatch.setattr(cache.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        cache._atomic_save({"x": 1}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_bad_config_and_info():
    with pytest.raises(TypeError, match="JSON"):
        config_key({"name": object()})
    with pytest.raises(TypeError, match="config must be a dict"):
        train_or_load(["not", "a", "dict"], _build, Fit(), device="cpu")


def test_unstorable_info_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        train_or_load(
            CONFIG, _build, lambda m: {"t": torch.zeros(1)}, cache_dir=tmp_path, device="cpu"
        )
    assert not any(tmp_path.iterdir())


def test_fingerprints_identify_weights_and_data():
    """Cache keys name models by a hash of their weights and data by a hash of its tensors."""
    a, b = _build(), _build()
    assert cache.model_fingerprint(a) == cache.model_fingerprint(b)
    assert cache.model_fingerprint(a)["class"] == "course_adv.models.SoftmaxRegression"
    with torch.no_grad():
        b.linear.bias[3] += 1e-6  # one weight, barely moved
    assert cache.model_fingerprint(a) != cache.model_fingerprint(b)
    x = torch.arange(6.0)
    digests = {
        cache.tensors_digest(x),
        cache.tensors_digest(x.double()),  # same values, other dtype
        cache.tensors_digest(x.reshape(2, 3)),  # same bytes, other shape
        cache.tensors_digest(x.flip(0)),
        cache.tensors_digest(x, x),
    }
    assert len(digests) == 5
    assert cache.tensors_digest(x) == cache.tensors_digest(torch.arange(6.0))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        cache.model_fingerprint("cnn")
