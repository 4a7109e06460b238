"""Running a submission apart from the grader, and reading back what it wrote, safely.

A job folder has three parts: ``in`` (the job's cells, cases and inputs, read only for the
child), ``scratch`` (the child's one writable folder: ``work``, ``home``, ``tmp``, ``cache``
and ``out`` for its results) and ``logs`` (the child's stdout and stderr, opened here and never
visible to it). ``run_child`` runs ``course_adv.grading.child`` on it in a fresh interpreter
(``python -I``: no environment variables, user site or current folder on the path) with a
scrubbed environment, in the bubblewrap sandbox (``sandbox``) or, without it, as a plain child
process in its own process group. Either way it has wall-clock limits, one for the cells and
one for the graded calls after them, after which everything it started is killed.

Everything the child leaves behind is untrusted: ``read_json`` and ``read_npy`` open a file
without following links or blocking (a FIFO or ``/dev/zero`` planted by the submission reads as
nothing), accept only regular files of bounded size, check a ``.npy`` header before reading,
and never unpickle. ``remove_tree`` deletes what the child left without recursion, however deep.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import sandbox
from .spec import clean

__all__ = ["make_job", "run_child", "read_json", "read_npy", "read_tail", "remove_tree"]

MAX_RESULT_BYTES = 64 * 2**20  # the largest .npy read back from a submission
MAX_JSON_BYTES = 2**20  # the largest .json read back
MAX_LOG_BYTES = 2000  # how much of the submission's stderr a report quotes
START = "import sys; sys.path.insert(0, sys.argv[3]); import course_adv.grading.child as c; "
START += "c.main(c.Path(sys.argv[4]), c.Path(sys.argv[5]))"


def make_job(folder: Path) -> None:
    """Make the job folder's parts (see the module docstring)."""
    for part in ("in/inputs", "scratch/work", "scratch/home", "scratch/tmp", "scratch/out"):
        (folder / part).mkdir(parents=True)
    (folder / "scratch" / "cache" / "data").mkdir(parents=True)
    (folder / "logs").mkdir()


def _child_env(scratch: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": f"{scratch}/home",
        "TMPDIR": f"{scratch}/tmp",
        "MPLCONFIGDIR": f"{scratch}/home/.matplotlib",
        "COURSE_ADV_QUICK": "1",
        "COURSE_ADV_CACHE": f"{scratch}/cache",
        "COURSE_ADV_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "LANG": "C.UTF-8",
    }


def run_child(
    job: Path,
    limits: tuple[float, float],
    *,
    sandboxed: bool,
    slot: int = 0,
    read_only: tuple[Path, ...] = (),
) -> tuple[str | None, int | None, str]:
    """Run the child on ``job`` under two wall-clock limits: ``limits[0]`` seconds until it has
    run the cells (``cells.json`` appears in ``out``), then ``limits[1]`` more for the graded
    calls, so slow cells never eat the graded calls' time.

    ``sandboxed``: in bubblewrap (``read_only``: extra paths it may read, such as spec files;
    ``slot``: which sandbox user), else a plain child process. Returns which limit it ran past
    (``"cells"``, ``"cases"`` or None), its exit code, and the end of its stderr.
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this course_adv
    if sandboxed:
        sandbox.own(job / "scratch", slot)
        sandbox.readable(job / "in")
        inputs, scratch = sandbox.SANDBOX_JOB, sandbox.SANDBOX_SCRATCH
        uid = sandbox.sandbox_uid(slot)
    else:
        inputs, scratch, uid = str(job / "in"), str(job / "scratch"), os.getuid()
    argv = [sys.executable, "-I", "-c", sandbox.BOOTSTRAP + START]
    argv += [str(uid), f"{scratch}/work", root, inputs, f"{scratch}/out"]
    binds = sandbox.Binds()
    cgroup = (
        sandbox.Cgroup(f"course-adv-{os.getpid()}-{slot}-{time.monotonic_ns()}")
        if sandboxed
        else None
    )
    try:
        if sandboxed:
            argv = sandbox.command(binds, job / "in", job / "scratch", read_only, argv)
        with (
            open(job / "logs" / "stdout", "w+b") as out,
            open(job / "logs" / "stderr", "w+b") as err,
        ):
            process = subprocess.Popen(
                argv,
                cwd=job / "scratch" / "work",
                env=_child_env(scratch),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=sandbox.limiter(slot, cgroup),
                pass_fds=binds.fds,
            )
            binds.close()
            timed_out = _wait(process, limits, job / "scratch" / "out" / "cells.json")
            return timed_out, process.returncode, read_tail(err)
    finally:
        binds.close()
        if cgroup is not None:
            cgroup.remove()


def _wait(process: subprocess.Popen, limits: tuple[float, float], cells_done: Path) -> str | None:
    """Wait for the child within ``limits`` (see ``run_child``), then kill its whole process
    group (in the sandbox, killing bwrap kills every process in it); return the limit it ran
    past, if any."""
    phase, deadline = "cells", time.monotonic() + limits[0]
    try:
        while True:
            try:
                process.wait(timeout=0.2)
                return None
            except subprocess.TimeoutExpired:
                pass
            if phase == "cells" and os.path.lexists(cells_done):
                phase, deadline = "cases", time.monotonic() + limits[1]
            if time.monotonic() > deadline:
                return phase
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


def read_tail(log) -> str:
    """The last ``MAX_LOG_BYTES`` of a log the grader opened itself, cleaned for printing."""
    try:
        size = os.fstat(log.fileno()).st_size
        data = os.pread(log.fileno(), MAX_LOG_BYTES, max(0, size - MAX_LOG_BYTES))
    except OSError:
        return ""
    return clean(data.decode("utf-8", "replace"), MAX_LOG_BYTES)


def _read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes (at most ``limit``), never following a link or blocking on a
    FIFO or device; None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, left = [], info.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """A small JSON file's content, or None for anything missing, large or unreadable."""
    data = _read_regular(path, MAX_JSON_BYTES)
    try:
        return None if data is None else json.loads(data.decode("utf-8"))
    except Exception:  # anything unreadable is no result
        return None


def read_npy(path: Path) -> np.ndarray | None:
    """A plain float array from a ``.npy`` file, or None: header checked first, no pickles."""
    data = _read_regular(path, MAX_RESULT_BYTES + 2**16)
    if data is None:
        return None
    import io

    try:
        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        if dtype not in (np.dtype("float32"), np.dtype("float64")) or len(shape) > 8:
            return None
        if math.prod(shape) * dtype.itemsize > MAX_RESULT_BYTES:
            return None
        f.seek(0)
        array = np.lib.format.read_array(f, allow_pickle=False)
    except Exception:
        return None
    return array if type(array) is np.ndarray else None


def remove_tree(folder: Path) -> None:
    """Delete ``folder`` and everything in it, without recursion and without long paths: each
    subfolder found is first moved up to a flat holding folder, so no depth of nesting (a
    submission may leave thousands of levels) makes it fail. Errors are ignored."""
    holding = folder.parent / f".{folder.name}-removing-{time.monotonic_ns()}"
    try:
        holding.mkdir()
    except OSError:
        return
    pending, emptied, moved = [folder], [], 0
    while pending:
        current = pending.pop()
        try:
            os.chmod(current, 0o700, follow_symlinks=False)
            entries = list(os.scandir(current))
        except OSError:
            entries = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    target = holding / str(moved)
                    moved += 1
                    os.rename(entry.path, target)
                    pending.append(target)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
        emptied.append(current)
    for current in [*reversed(emptied), holding]:
        try:
            os.rmdir(current)
        except OSError:
            pass
