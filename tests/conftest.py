"""Shared test set-up: no network, a private checkpoint cache, a headless matplotlib."""

from __future__ import annotations

import os
import socket

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

_real_connect = socket.socket.connect


def _local_only_connect(self, address, *args, **kwargs):
    """Refuse any connection that leaves the machine: tests must run offline."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
            raise OSError(f"tests must not reach the network (tried to connect to {address!r})")
    return _real_connect(self, address, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _offline_and_private_cache(tmp_path_factory):
    socket.socket.connect = _local_only_connect
    cache = tmp_path_factory.mktemp("course_adv_cache")
    old = os.environ.get("COURSE_ADV_CACHE")
    os.environ["COURSE_ADV_CACHE"] = str(cache)
    yield
    socket.socket.connect = _real_connect
    if old is None:
        os.environ.pop("COURSE_ADV_CACHE", None)
    else:
        os.environ["COURSE_ADV_CACHE"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test file of many small ops: on a shared 2-core machine two
    threads that wait for each other made such files 5-10x slower (COURSE.md section 6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cpu_only(monkeypatch):
    """Train on the CPU even where a GPU exists: the seeded comparisons need determinism."""
    monkeypatch.setenv("COURSE_ADV_DEVICE", "cpu")
