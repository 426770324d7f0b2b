"""Run one unit in a fresh, locked-down subprocess and classify how it ended.

Layers (docs/traces.md has the threat model):

- `bubblewrap`: new network, pid, ipc and uts namespaces (and a user namespace when not root; as root every
  capability dropped but the two the uid drop needs), the system and the Python installation mounted
  read-only, nothing else of the host visible, a size-capped tmpfs as the working folder. `auto` and
  `bubblewrap` require it and fail with a UserError when it cannot start; only `none`, named in the build
  file, runs without it (`tempdir`: a fresh host folder, removed afterwards), with a warning per task.
- `uid-drop`: whenever the worker runs as root (every mode), the unit runs as uid/gid 65534 so RLIMIT_NPROC
  and file permissions bind it.
- `rlimits`: CPU, address space, file size, open files, processes, no core dumps.
- `audit-hook`: in-process refusal of sockets, processes, ctypes and paths outside the sandbox.
- `empty-env`: the unit sees a fixed environment, never the worker's.
- `timeout-kill`: a wall-clock deadline kills the process group; output read back is capped.
"""

from __future__ import annotations

import functools
import json
import logging
import marshal
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UserError
from pipeline.traces.config import TracesConfig
from pipeline.traces.runner import BOOTSTRAP

LOG = logging.getLogger("rnj.traces")
STATUSES = ("ok", "timeout", "memory", "forbidden", "crashed", "error")
NOBODY = 65534
SANDBOX_DIR = "/sandbox"
RUNNER = Path(__file__).with_name("runner.py")
ENVIRONMENT = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
               "LC_ALL": "C.UTF-8", "TZ": "UTC", "PATH": "/nonexistent"}
"""The whole environment of a unit: fixed values only (hash seed 0 makes set order repeatable)."""
CPU_SIGNALS = (signal.SIGXCPU, signal.SIGKILL)


@dataclass(frozen=True)
class SandboxResult:
    status: str
    """One of STATUSES."""
    detail: str | None = None
    """Why, for anything but `ok` (the exception, the signal, the refused operation)."""
    runs: list = field(default_factory=list)
    """One entry per traced call / example / script run: label, events, result, output."""
    tests: str | None = None
    truncated: bool = False
    seconds: float = 0.0
    """Wall-clock seconds, start to end."""
    cpu_seconds: float = 0.0
    """CPU the unit's interpreter reported for itself (0 when it wrote no result)."""


class SandboxUnavailable(UserError):
    """The sandbox the build file asks for cannot run on this machine."""


class Sandbox:
    """Runs units, one fresh process each; `mode` is `bubblewrap` or `none`, `layers` the defences active.

    `python` (the interpreter units run in) defaults to the worker's own; tests name another one.
    """

    def __init__(self, cfg: TracesConfig, *, python: str | None = None):
        self.cfg = cfg
        self.python = os.path.realpath(python or sys.executable)
        self.runner = marshal.dumps(compile(RUNNER.read_text(encoding="utf-8"), "<rnj-runner>", "exec"))
        self.roots = _python_roots(self.python) if python else _python_roots()
        self.bwrap = self._bubblewrap()
        self.mode = "bubblewrap" if self.bwrap else "none"
        self.drop_uid = os.geteuid() == 0
        if self.drop_uid and not self.bwrap and not _reachable_by_others(self.roots):
            raise SandboxUnavailable(
                f"[traces] sandbox = 'none' as root: units must run as uid {NOBODY}, which cannot reach the "
                f"interpreter under {', '.join(self.roots)} (a folder above it is not searchable by others). "
                "Run the job as a normal user, install the interpreter where others can read it (e.g. "
                "/usr/local), or use bubblewrap (sandbox = 'auto').")
        if not self.bwrap:
            LOG.warning("[traces] sandbox = 'none': units run without the namespace layer (bubblewrap), "
                        "contained only by the uid drop, rlimits, the audit hook and the timeout")
        layers = ["bubblewrap" if self.bwrap else "tempdir"]
        layers += ["uid-drop"] if self.drop_uid else []
        self.layers = tuple(layers + ["rlimits", "audit-hook", "empty-env", "timeout-kill"])

    def run_many(self, requests: list[dict]) -> list[SandboxResult]:
        """Run requests `cfg.workers` at a time; results in the same order."""
        if len(requests) <= 1 or self.cfg.workers == 1:
            return [self.run(r) for r in requests]
        with ThreadPoolExecutor(max_workers=self.cfg.workers) as pool:
            return list(pool.map(self.run, requests))

    def run(self, request: dict) -> SandboxResult:
        """Run one unit's request (see runner.py) and say how it ended. Never raises for the unit's doing."""
        start = time.monotonic()
        request = dict(request, limits=self._limits())
        workdir = None
        try:
            if self.bwrap:
                command, cwd = self.bwrap + self._python_command(), None
            else:
                workdir = tempfile.mkdtemp(prefix="rnj-trace-")
                if self.drop_uid:
                    os.chmod(workdir, 0o777)
                command, cwd = self._python_command(), workdir
            env = ENVIRONMENT if cwd is None else {**ENVIRONMENT, "HOME": cwd, "TMPDIR": cwd}
            result = self._execute(command, cwd, env, self.runner + marshal.dumps(_plain(request)))
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        return SandboxResult(**{**result.__dict__, "seconds": time.monotonic() - start})

    def _limits(self) -> dict:
        cfg = self.cfg
        return {"cpu_seconds": cfg.cpu_seconds, "memory_mb": cfg.memory_mb, "file_mb": cfg.file_mb,
                "open_files": cfg.open_files, "max_steps": cfg.max_steps, "max_trace_bytes": cfg.max_trace_bytes,
                "repr_width": cfg.repr_width, "result_bytes": cfg.max_result_repr_bytes,
                "max_output_bytes": cfg.max_output_bytes,
                "files_to_write": None if self.bwrap else max(4, cfg.disk_mb // cfg.file_mb),
                "namespaced": self.bwrap is not None}

    def _python_command(self) -> list[str]:
        command = [self.python, "-S", "-s", "-P", "-c", BOOTSTRAP]
        return command + (["--drop-uid", str(NOBODY)] if self.drop_uid else [])

    def _execute(self, command: list[str], cwd: str | None, env: dict, request: bytes) -> SandboxResult:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + self.cfg.wall_seconds
        feeder = threading.Thread(target=_feed, args=(proc.stdin, request), daemon=True)
        feeder.start()
        try:
            output, problem = _read_capped(proc, self.cfg.max_result_bytes, deadline)
        finally:
            _kill_group(proc)
            feeder.join(timeout=1)
        if problem == "timeout":
            return SandboxResult("timeout", f"still running after {self.cfg.wall_seconds:g} s (wall clock)")
        if problem == "too_large":
            return SandboxResult("error", f"the unit wrote more than {self.cfg.max_result_bytes} bytes")
        return _classify(proc.returncode, output, self.bwrap is not None)

    def _bubblewrap(self) -> list[str] | None:
        if self.cfg.sandbox == "none":
            return None
        args = bubblewrap_args(self.roots, self.cfg.disk_mb, os.geteuid() == 0, self.cfg.bubblewrap_binary)
        problem = _probe(tuple(args), self.python)
        if problem is None:
            return args
        raise SandboxUnavailable(
            f"[traces] sandbox = {self.cfg.sandbox!r} needs bubblewrap ({self.cfg.bubblewrap_binary}), which "
            f"cannot run here: {problem}. Fix: install it (apt-get install bubblewrap) or set "
            "[traces] bubblewrap_binary; allow unprivileged user namespaces (sysctl "
            "kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0); on Kubernetes (GKE) run "
            "the pod with seccompProfile Unconfined and AppArmor unconfined (or privileged) so that it may "
            "create namespaces, see docs/traces.md. Or accept the weaker in-process layers by naming them: "
            "sandbox = 'none'.")


def _plain(value):
    """The request as marshal-able plain values (tuples of JSON inputs become lists, as JSON would)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def bubblewrap_args(roots: tuple[str, ...], disk_mb: int, as_root: bool, binary: str = "bwrap") -> list[str]:
    """The bwrap command line before the program: fresh namespaces, read-only system, tmpfs working folder.

    As root no user namespace is made (root's would map to the host's root, so files would still be owned
    by uid 0): bwrap drops every capability but the two the runner needs to switch to uid 65534 (CAP_SETUID,
    CAP_SETGID), and that switch, before any unit code, clears those too; with `no_new_privs` (bwrap sets it)
    nothing can raise them again. As anyone else `--unshare-all --cap-drop ALL`.
    """
    args = [shutil.which(binary) or binary, "--die-with-parent", "--new-session"]
    if as_root:
        args += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-all", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    made = set()
    for root in roots:
        if root == "/usr" or root.startswith("/usr/"):
            continue
        for parent in reversed(Path(root).parents):
            if str(parent) != "/" and str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]  # bwrap would copy a 0700 /root
        args += ["--ro-bind", root, root]
    args += ["--dev", "/dev", "--perms", "01777", "--size", str(disk_mb << 20), "--tmpfs", SANDBOX_DIR,
             "--chdir", SANDBOX_DIR, "--setenv", "TMPDIR", SANDBOX_DIR, "--setenv", "HOME", SANDBOX_DIR, "--"]
    return args


@functools.lru_cache(maxsize=8)
def _probe(args: tuple[str, ...], python: str) -> str | None:
    """None when bwrap can start the interpreter with these arguments here, else what went wrong."""
    if shutil.which(args[0]) is None:
        return f"{args[0]} is not installed (or not executable)"
    try:
        done = subprocess.run([*args, python, "-S", "-c", "pass"], env=ENVIRONMENT, capture_output=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap did not start: {err}"
    if done.returncode != 0:
        return done.stderr.decode("utf-8", "replace").strip()[:300] or f"bwrap exited with {done.returncode}"
    return None


def _python_roots(python: str | None = None) -> tuple[str, ...]:
    """The folders holding an interpreter and its standard library (the worker's own by default)."""
    if python is None:
        prefixes = (sys.base_prefix, sys.base_exec_prefix)
    else:
        code = "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)"
        prefixes = tuple(subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, check=True,
                                        timeout=20).stdout.split())
    return tuple(sorted({os.path.realpath(p) for p in prefixes}))


def _reachable_by_others(roots: tuple[str, ...]) -> bool:
    """Whether uid 65534 could run this interpreter (every folder above it searchable by others)."""
    for root in roots:
        for folder in [Path(root), *Path(root).parents]:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
    return True


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _read_capped(proc: subprocess.Popen, cap: int, deadline: float) -> tuple[bytes, str | None]:
    """stdout until it closes and the process ends, at most `cap` bytes, before `deadline`.

    stderr is drained and dropped. A pidfd tells when the process has ended, so nothing polls.
    """
    output = bytearray()
    pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            selector.register(proc.stderr, selectors.EVENT_READ)
            selector.register(pidfd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return bytes(output), "timeout"
                for key, _ in selector.select(remaining):
                    if key.fileobj == pidfd:
                        selector.unregister(pidfd)
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.fileobj is proc.stdout:
                        output += chunk
                        if len(output) > cap:
                            return bytes(output), "too_large"
    finally:
        os.close(pidfd)
    return bytes(output), None


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill whatever is left of the unit's process group (it is its own session), then reap the leader.

    The leader is not reaped before the kill (no poll), so its pid, the group id, cannot have been reused.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()


def _text(value) -> str | None:
    return None if value is None else str(value)[:1000]


def _classify(returncode: int, output: bytes, bubblewrap: bool) -> SandboxResult:
    """The runner's own verdict when it wrote one, else what the exit status says."""
    try:
        payload = json.loads(output) if output else None
    except ValueError:
        payload = None
    valid = isinstance(payload, dict) and payload.get("status") in STATUSES and isinstance(payload.get("runs"), list)
    if valid and returncode == 0:
        return SandboxResult(payload["status"], payload.get("detail"), payload["runs"],
                                 payload.get("tests"), bool(payload.get("truncated")),
                                 cpu_seconds=float(payload.get("cpu") or 0.0))
    signum = -returncode if returncode < 0 else returncode - 128 if bubblewrap and returncode > 128 else None
    if signum in CPU_SIGNALS:
        return SandboxResult("timeout", f"killed by {signal.Signals(signum).name} (CPU limit)")
    if signum is not None and signum in signal.Signals._value2member_map_:
        return SandboxResult("crashed", f"killed by {signal.Signals(signum).name}")
    if payload is None and output:
        return SandboxResult("error", "the sandbox wrote something that is not a result")
    return SandboxResult("crashed", f"exited with status {returncode} without a result")
