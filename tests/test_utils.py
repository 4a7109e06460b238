import pytest
import torch

from course_adv.models import SmallCNN
from course_adv.utils import full_or_quick, get_device, quick_mode, seed_everything


def test_device_override(monkeypatch):
    monkeypatch.setenv("COURSE_ADV_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


def test_device_default_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("COURSE_ADV_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("course_adv.utils._mps_available", lambda: True)
    assert get_device().type == "mps"
    monkeypatch.setattr("course_adv.utils._mps_available", lambda: False)
    assert get_device().type == "cpu"


def test_device_override_to_missing_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COURSE_ADV_DEVICE", "cuda")
    with pytest.raises(ValueError, match="COURSE_ADV_DEVICE"):
        get_device()
    monkeypatch.setenv("COURSE_ADV_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="not a device name"):
        get_device()


def test_quick_mode(monkeypatch):
    monkeypatch.setenv("COURSE_ADV_QUICK", "1")
    assert quick_mode() and full_or_quick(10, 2) == 2
    monkeypatch.setenv("COURSE_ADV_QUICK", "0")
    assert not quick_mode() and full_or_quick(10, 2) == 10
    monkeypatch.delenv("COURSE_ADV_QUICK")
    assert not quick_mode()


def _train_a_little(seed: int) -> torch.Tensor:
    generator = seed_everything(seed)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))
    for _ in range(3):
        idx = torch.randperm(64, generator=generator)[:32]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_seeding_gives_identical_weights_for_two_trainings():
    assert torch.equal(_train_a_little(7), _train_a_little(7))
    assert not torch.equal(_train_a_little(7), _train_a_little(8))


def test_seed_validation():
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
