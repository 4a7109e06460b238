"""The bubblewrap sandbox a submission runs in.

bubblewrap (``bwrap``, Debian's ``bubblewrap`` package, the tool Flatpak uses) starts the child
in new mount, PID, network, IPC and UTS namespaces. Inside, the submission sees:

- read only: the system's programs and libraries (``/usr`` and its links), the Python
  environment (the interpreter, the venv) and the ``course_adv`` package, the spec files of its
  exercise and the job's inputs (``/job``: its notebook's cells, the cases' settings and inputs);
- writable: one scratch folder (``/scratch``: working folder, home, temporary files, its own
  copy of the data cache, and ``out``, where the child writes its results);
- nothing else: not the course's ``solutions/``, not the class folder, not the hidden-cases
  file, not the grader's logs, CSV or other jobs; no network; its own ``/proc`` that shows
  only its own processes; no capabilities.

``--die-with-parent`` and the PID namespace mean that killing bwrap kills every process the
submission started, daemons included; ``--new-session`` keeps it off the grader's terminal.
When the grader runs as root, the submission runs as a user of its own (one per job slot, with
no capabilities), so that root-owned files stay read-only and the process-count limit counts
only its processes. The
address space of each process, file sizes, the number of processes and (where the grader may
create cgroups) the memory of the whole sandbox are limited.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "BOOTSTRAP",
    "SANDBOX_JOB",
    "SANDBOX_SCRATCH",
    "Binds",
    "Cgroup",
    "command",
    "limiter",
    "missing_reason",
    "own",
    "readable",
    "sandbox_uid",
]

SANDBOX_JOB = "/job"  # the job's inputs, read only
SANDBOX_SCRATCH = "/scratch"  # the one writable folder
PROCESSES = 256  # processes and threads of one sandbox
FILE_BYTES = 256 * 2**20  # no file the child writes (its logs included) grows past this
PROCESS_MEMORY = 8 * 2**30  # each process's address space: a memory bomb fails, not the machine
SANDBOX_MEMORY = 12 * 2**30  # all the sandbox's processes together, where cgroups allow
UID_BASE = 1_900_000_000  # sandbox users when the grader is root: UID_BASE + job slot
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")


def _python_paths() -> list[Path]:
    """The interpreter and environment the child needs, and the course package."""
    import course_adv

    paths = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths.add(Path(os.path.realpath(sys.executable)).parent)
    paths.add(Path(course_adv.__file__).resolve().parent)
    return sorted(p for p in paths if p.exists())


class Binds:
    """The bwrap arguments that bind folders and files into the sandbox, by descriptor: the
    grader opens each path itself (``O_PATH``), so the sandbox user needs no right to walk to
    it (the interpreter may live under a private home), and no path is resolved twice."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.fds: list[int] = []

    def add(self, source: Path, dest: str | Path, *, writable: bool = False) -> None:
        fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
        self.fds.append(fd)
        self.args += ["--bind-fd" if writable else "--ro-bind-fd", str(fd), str(dest)]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def command(
    binds: Binds, job_inputs: Path, scratch: Path, read_only: Iterable[Path], argv: list[str]
) -> list[str]:
    """The bwrap command that runs ``argv`` with ``job_inputs`` at ``/job`` (read only),
    ``scratch`` at ``/scratch`` (writable) and ``read_only`` visible at their own paths; the
    descriptors it needs are added to ``binds``."""
    args = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session"]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
    if os.getuid() == 0:  # just what the child needs to become the sandbox user (BOOTSTRAP)
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            binds.add(path, path)
    etc = [Path("/etc") / name for name in ETC if (Path("/etc") / name).exists()]
    paths = sorted({Path("/usr"), *etc, *_python_paths(), *read_only})
    paths = [p for p in paths if not any(q in p.parents for q in paths)]  # nested: bound already
    folders = sorted({a for p in paths for a in p.parents if a != Path("/")} - set(paths))
    for folder in folders:  # bwrap would make them private (0700): the sandbox user walks them
        args += ["--perms", "0755", "--dir", str(folder)]
    for path in paths:
        binds.add(path, path)
    binds.add(job_inputs, SANDBOX_JOB)
    binds.add(scratch, SANDBOX_SCRATCH, writable=True)
    args += binds.args + ["--proc", "/proc", "--dev", "/dev", "--hostname", "sandbox"]
    args += ["--chdir", "/", "--remount-ro", "/", "--"]
    return args + argv


@functools.lru_cache(maxsize=1)
def missing_reason() -> str | None:
    """Why the sandbox cannot run here (None when it can): bwrap missing or refused."""
    if sys.platform != "linux":
        return f"bubblewrap needs Linux; this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    binds = Binds()
    with tempfile.TemporaryDirectory(prefix="course-adv-probe-") as tmp:
        (Path(tmp) / "work").mkdir()
        own(Path(tmp), 0)
        code = BOOTSTRAP + "import course_adv"
        argv = [sys.executable, "-I", "-c", code, str(sandbox_uid(0)), f"{SANDBOX_SCRATCH}/work"]
        try:
            done = subprocess.run(
                command(binds, Path(tmp), Path(tmp), [], argv),
                preexec_fn=limiter(0),
                pass_fds=binds.fds,
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as err:
            return f"bubblewrap does not run here: {err}"
        finally:
            binds.close()
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:300]
        return f"bubblewrap does not run here (are user namespaces allowed?): {detail}"
    return None


def sandbox_uid(slot: int) -> int:
    """The user a sandbox runs as: its own per job slot when the grader is root."""
    return UID_BASE + slot if os.getuid() == 0 else os.getuid()


def own(folder: Path, slot: int) -> None:
    """Give ``folder`` and what is in it to the sandbox user of ``slot``."""
    uid = sandbox_uid(slot)
    if uid != os.getuid():
        for path in [folder, *folder.rglob("*")]:
            os.lchown(path, uid, uid)


def readable(folder: Path) -> None:
    """Let the sandbox user read ``folder`` whatever the grader's umask."""
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def _processes_of(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count


# the first statements the child's interpreter runs, with argv [uid, working folder, ...]: as
# root, become the sandbox user (bwrap left root only the capabilities to do that, and setuid
# drops them too); then move to the working folder
BOOTSTRAP = (
    "import os, sys\n"
    "if os.getuid() == 0 and int(sys.argv[1]) != 0:\n"
    "    os.setgroups([]); os.setgid(int(sys.argv[1])); os.setuid(int(sys.argv[1]))\n"
    "os.chdir(sys.argv[2])\n"
)


def limiter(slot: int, cgroup: Cgroup | None = None) -> Callable[[], None]:
    """What runs between fork and exec of bwrap: join the cgroup and set the limits (inherited
    by every process of the sandbox; the process count is the sandbox user's own)."""
    uid = sandbox_uid(slot)
    processes = PROCESSES if os.getuid() == 0 else _processes_of(uid) + PROCESSES

    def limit() -> None:
        import resource

        if cgroup is not None:
            cgroup.join()
        for kind, value in (
            (resource.RLIMIT_FSIZE, FILE_BYTES),
            (resource.RLIMIT_AS, PROCESS_MEMORY),
            (resource.RLIMIT_NPROC, processes),
            (resource.RLIMIT_CORE, 0),
        ):
            try:
                resource.setrlimit(kind, (value, value))
            except (ValueError, OSError):  # not every platform allows every limit
                pass

    return limit


class Cgroup:
    """A memory and process cgroup (v1 or v2) for one sandbox, where the grader may make one."""

    def __init__(self, name: str) -> None:
        self.folders: list[Path] = []
        for controller, files in (
            ("memory", {"memory.limit_in_bytes": SANDBOX_MEMORY, "memory.max": SANDBOX_MEMORY}),
            ("pids", {"pids.max": PROCESSES}),
        ):
            folder = self._make(controller, name)
            if folder is None:
                continue
            for file, value in files.items():
                if (folder / file).exists():
                    try:
                        (folder / file).write_text(str(value))
                    except OSError:
                        pass
            self.folders.append(folder)

    @staticmethod
    def _make(controller: str, name: str) -> Path | None:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, own = line.split(":", 2)
            if controller in controllers.split(","):
                base = Path("/sys/fs/cgroup") / controller
                break
        else:
            return None
        folder = base / own.lstrip("/") / name
        try:
            folder.mkdir()
        except OSError:
            return None
        return folder

    def join(self) -> None:  # in the child, before exec
        for folder in self.folders:
            try:
                (folder / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def remove(self) -> None:
        """Remove the cgroup once its killed processes are gone (the kernel may take a
        moment)."""
        for folder in self.folders:
            for _ in range(100):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
