"""The hostile-unit suite: every unit ends as a status, nothing outside the sandbox changes, no secret leaks.

The suite runs once per sandbox mode: `bubblewrap` (skipped where it cannot create namespaces) and `none`
(the in-process, rlimit and timeout layers alone). All units of a mode run in parallel with low limits.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from pipeline.errors import UserError
from pipeline.traces.config import TracesConfig
from pipeline.traces.generate import _unit_row, trace_rows
from pipeline.traces.sandbox import (
    ENVIRONMENT,
    NOBODY,
    Sandbox,
    SandboxUnavailable,
    bubblewrap_args,
)
from pipeline.traces.units import unit_from_record
from tests.pipeline.traces.sandboxes import bubblewrap_usable, sandbox_in

SECRET = "rnj-secret-7f3a9c1e"
LIMITS = {"cpu_seconds": 1, "wall_seconds": 4.0, "memory_mb": 256, "file_mb": 1, "disk_mb": 4, "workers": 8}


def sandbox_for(mode: str, **limits) -> Sandbox:
    """A sandbox in `mode` (skipped where bubblewrap cannot run; `none` as root on a reachable interpreter)."""
    return sandbox_in(mode, TracesConfig(enabled=True, sandbox=mode, **{**LIMITS, **limits}))


def script(code: str) -> dict:
    return {"kind": "script", "code": code}


def function(code: str, entry: str, *inputs) -> dict:
    return {"kind": "function", "code": code, "entry_point": entry, "inputs": [list(i) for i in inputs] or [[]]}


NO_OP = "lambda *a, **k: True"
BYPASSES = {
    # The three lines that switched the old guard off (it read these module globals of the runner).
    "main_globals": "import __main__\n__main__.BLOCKED_EVENTS = ()\n__main__._inside = lambda p, r: True\n",
    # Every function, table and class method of the runner module replaced.
    "runner_module": (
        "import __main__\nfor name, value in list(vars(__main__).items()):\n"
        "    if name.startswith('__'):\n        continue\n"
        "    if isinstance(value, type):\n        for attr, member in list(vars(value).items()):\n"
        "            if callable(member) and attr in ('hook', 'refuse', '_check_path'):\n"
        f"                setattr(value, attr, {NO_OP})\n"
        f"    elif callable(value):\n        setattr(__main__, name, {NO_OP})\n"
        "    elif isinstance(value, (tuple, frozenset, dict)):\n        setattr(__main__, name, type(value)())\n"
        "for fn in [v for v in vars(__main__).values() if hasattr(v, '__code__')]:\n"
        "    fn.__code__ = (lambda *a, **k: True).__code__\n"),
    "builtins": "import builtins\n" + "".join(
        f"builtins.{name} = {NO_OP}\n" for name in ("isinstance", "any", "len", "bool", "repr", "next", "reversed")),
    "os": ("import os, posixpath\nos.path.realpath = posixpath.realpath = lambda p, **k: '/sandbox/x'\n"
           "os.fsdecode = os.fspath = lambda p: 'x'\nos.path.join = posixpath.join = lambda *a: 'x'\n"
           "os.lstat = os.readlink = None\n"),
    "sys": ("import sys\nsys.addaudithook = sys.audit = lambda *a: None\nsys.modules['posixpath'] = None\n"
            "sys.modules['__main__'] = None\n"),
    # Every closure cell reachable from the stack replaced, every list on it emptied.
    "frames": (
        "import sys\nframe = sys._getframe()\nwhile frame is not None:\n"
        "    for value in [*frame.f_locals.values(), *frame.f_globals.values()]:\n"
        "        for cell in getattr(value, '__closure__', None) or ():\n"
        f"            cell.cell_contents = {NO_OP}\n"
        "        if type(value) is list:\n            value.clear()\n"
        "    frame = frame.f_back\n"),
}


def bypass_units(canary, secret_file, port: int) -> dict[str, tuple[dict, set[str]]]:
    """Each bypass followed by each harm: all must still be refused."""
    harms = {
        "read_secret": f"print(open({str(secret_file)!r}).read())\n",
        "overwrite_canary": f"open({str(canary)!r}, 'w').write('gone')\n",
        "socket": f"import _socket\n_socket.socket().connect(('127.0.0.1', {port}))\n",
        "fork": "import posix\nposix.fork()\n",
    }
    return {f"bypass_{bypass}_then_{harm}": (script(preamble + action), {"forbidden"})
            for bypass, preamble in BYPASSES.items() for harm, action in harms.items()}


def more_hostile_units(canary, outside) -> dict[str, tuple[dict, set[str]]]:
    return {
        "symlink_relative_escape": (script(
            f"import os\nos.symlink('../../../../../..{canary}', 'link')\nopen('link', 'w').write('gone')\n"),
            {"forbidden"}),
        "symlink_to_root": (script("import os\nos.symlink('/', 'root')\nprint(os.listdir('root/etc'))\n"),
                            {"forbidden"}),
        "hardlink_canary": (script(f"import os\nos.link({str(canary)!r}, 'l')\nopen('l', 'w').write('gone')\n"),
                            {"forbidden"}),
        "rename_into_outside": (script(
            f"open('x', 'w').write('x')\nimport os\nos.rename('x', {str(outside / 'moved')!r})\n"), {"forbidden"}),
        "chdir_then_write": (script("import os, sys\nos.chdir(sys.base_prefix)\nopen('rnj-evil', 'w')\n"),
                             {"forbidden"}),
        "fchdir_then_write": (script(
            "import os, sys\nos.fchdir(os.open(sys.base_prefix, os.O_RDONLY))\nopen('rnj-evil', 'w')\n"),
            {"forbidden"}),
        "proc_self_environ": (script("print(open('/proc/self/environ', 'rb').read())\n"), {"forbidden"}),
        "proc_parent_mem": (script("import os\nopen(f'/proc/{os.getppid()}/mem', 'r+b').write(b'x')\n"),
                            {"forbidden"}),
        "dev_shm": (script("open('/dev/shm/rnj-evil', 'w').write('x')\n"), {"forbidden"}),
        "huge_argument": (function("def f(s):\n    return len(s)\n", "f", ["x" * 3_000_000]), {"ok"}),
        "huge_exec_argv": (script("import os\nos.execv('/bin/true', ['true', 'x' * 10**7])\n"), {"forbidden"}),
        "setuid_root": (function("import os\ndef f():\n    os.setuid(0)\n    return os.getuid()\n", "f"),
                        {"ok", "forbidden"}),
        "ptrace_parent": (script(
            "import os, ctypes\nctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)\n"), {"forbidden"}),
        "ptrace_reimported_ctypes": (script("import importlib\nimportlib.import_module('_ctypes')\n"),
                                     {"forbidden"}),
        "controlling_tty": (script("open('/dev/tty', 'w').write('x')\n"), {"forbidden"}),
        "tty_keystrokes": (script("import fcntl, termios\nfcntl.ioctl(0, termios.TIOCSTI, b'x')\n"),
                           {"forbidden"}),
        "reimported_thread": (script(
            "import sys\ndel sys.modules['_thread']\nimport _thread\n"
            "_thread.start_new_thread(print, ('thread ran',))\n"), {"forbidden", "ok"}),
    }


def hostile_units(canary, secret_file, port: int) -> dict[str, tuple[dict, set[str]]]:
    """name -> (request, statuses it may end with)."""
    outside = canary.parent
    return {
        "infinite_loop": (script("while True:\n    pass\n"), {"timeout"}),
        "fork_bomb": (script("import os\nwhile True:\n    os.fork()\n"), {"forbidden"}),
        "memory_bomb": (script("x = []\nwhile True:\n    x.append(bytearray(10**6))\n"), {"memory"}),
        "huge_allocation": (script("b = bytearray(10**12)\n"), {"memory"}),
        "print_flood": (script("while True:\n    print('x' * 10000)\n"), {"timeout"}),
        "big_print": (script("print('y' * 20_000_000)\n"), {"ok"}),
        "fd_flood": (script("import os\nwhile True:\n    os.write(1, b'z' * 65536)\n"), {"timeout"}),
        "result_fd_flood": (script(
            "import os\nfor fd in range(3, 8):\n    try:\n        while True:\n"
            "            os.write(fd, b'{' * 65536)\n    except OSError:\n        pass\n"), {"error", "timeout"}),
        "disk_fill_one_file": (script(
            "with open('big', 'wb') as f:\n    while True:\n        f.write(b'0' * 65536)\n"), {"ok"}),
        "disk_fill_many_files": (script(
            "i = 0\nwhile True:\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'0' * 500_000)\n"
            "    i += 1\n"), {"ok", "forbidden"}),
        "write_outside": (script(f"open({str(outside / 'evil.txt')!r}, 'w').write('x')\n"), {"forbidden"}),
        "overwrite_canary": (script(f"open({str(canary)!r}, 'w').write('gone')\n"), {"forbidden"}),
        "delete_canary": (script(f"import os\nos.remove({str(canary)!r})\n"), {"forbidden"}),
        "rmtree_outside": (script(f"import shutil\nshutil.rmtree({str(outside)!r})\n"), {"forbidden"}),
        "write_tmp": (script("open('/tmp/rnj-evil', 'w').write('x')\n"), {"forbidden"}),
        "symlink_escape": (script(
            f"import os\nos.symlink({str(canary)!r}, 'link')\nopen('link', 'w').write('gone')\n"), {"forbidden"}),
        "read_secret": (script(f"print(open({str(secret_file)!r}).read())\n"), {"forbidden"}),
        "read_parent_environ": (script(
            f"print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"), {"forbidden"}),
        "print_environ": (script("import os\nprint(dict(os.environ))\n"), {"ok"}),
        "socket": (script(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'leak')\n"), {"forbidden"}),
        "raw_socket": (script(
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n"), {"forbidden"}),
        "subprocess": (script("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo hi'])\n"), {"forbidden"}),
        "os_system": (script("import os\nos.system('touch /tmp/rnj-evil-system')\n"), {"forbidden"}),
        "exec": (script("import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])\n"), {"forbidden"}),
        "kill_parent": (script("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"), {"forbidden"}),
        "kill_group": (script("import os, signal\nos.killpg(0, signal.SIGKILL)\n"), {"forbidden"}),
        "deep_recursion": (function("def f(n):\n    return f(n + 1)\n", "f", [0]), {"error"}),
        "unlimited_recursion": (script(
            "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)\n"),
            {"crashed", "error", "memory", "timeout"}),
        "ctypes_segfault": (script("import ctypes\nctypes.string_at(0)\n"), {"forbidden"}),
        "segfault": (script("import faulthandler\nfaulthandler._sigsegv()\n"), {"crashed"}),
        "ignore_sigterm": (script(
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n"
            "    time.sleep(1)\n"), {"timeout"}),
        "spinning_threads": (script(
            "import threading\nfor _ in range(4):\n"
            "    threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\n"), {"forbidden"}),
        "tracing_off": (function("import sys\ndef f():\n    sys.settrace(None)\n    return 1\n", "f"),
                        {"forbidden"}),
        "tracing_replaced": (function("import sys\ndef f():\n    sys.settrace(lambda *a: None)\n    return 1\n",
                                      "f"), {"forbidden"}),
        "gigabyte_repr": (function(
            "class Big:\n    def __repr__(self):\n        return 'x' * 10**9\n\n"
            "def f():\n    b = Big()\n    return b\n", "f"), {"ok", "memory"}),
        "exit_early": (script("import os\nos._exit(0)\n"), {"crashed"}),
    }


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    yield server
    server.close()


@pytest.mark.parametrize("mode", ["bubblewrap", "none"])
def test_hostile_units_end_as_statuses_and_harm_nothing(mode, tmp_path, listener, monkeypatch):
    monkeypatch.setenv("RNJ_TEST_SECRET", SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("alive")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    port = listener.getsockname()[1]
    units = {**hostile_units(canary, secret_file, port), **bypass_units(canary, secret_file, port),
             **more_hostile_units(canary, outside)}
    sandbox = sandbox_for(mode)
    assert ("bubblewrap" in sandbox.layers) == (mode == "bubblewrap")

    start = time.monotonic()
    results = dict(zip(units, sandbox.run_many([request for request, _ in units.values()])))
    elapsed = time.monotonic() - start

    wrong = {name: (r.status, r.detail) for name, r in results.items() if r.status not in units[name][1]}
    assert not wrong, wrong
    assert canary.read_text() == "alive"
    assert sorted(p.name for p in outside.iterdir()) == ["canary.txt"]
    assert not os.path.exists("/tmp/rnj-evil") and not os.path.exists("/tmp/rnj-evil-system")
    assert not os.path.exists("/dev/shm/rnj-evil")
    setuid = results["setuid_root"]
    assert setuid.status == "forbidden" or setuid.runs[0]["result"]["raises"].startswith("PermissionError")
    assert results["huge_argument"].runs[0]["result"] == {"value": "3000000"}
    thread = results["reimported_thread"]
    assert thread.status == "forbidden" or "raises" in thread.runs[0]["result"]
    assert "thread ran" not in json.dumps([r.__dict__ for r in results.values()])
    everything = json.dumps([r.__dict__ for r in results.values()])
    assert SECRET not in everything
    assert len(everything) < 2_000_000
    with pytest.raises(socket.timeout):
        listener.accept()
    assert elapsed < 40
    assert not [p for p in os.listdir(os.path.dirname(str(tmp_path))) if p.startswith("rnj-trace-")]


def test_disk_fill_stops_at_the_file_limit():
    sandbox = sandbox_for("none")
    result = sandbox.run(script("with open('big', 'wb') as f:\n    while True:\n        f.write(b'0' * 65536)\n"))
    assert result.status == "ok"
    assert result.runs[0]["result"]["raises"].startswith("OSError: [Errno 27] File too large")


def test_environment_is_the_fixed_one(monkeypatch):
    monkeypatch.setenv("RNJ_TEST_SECRET", SECRET)
    sandbox = sandbox_for("none")
    result = sandbox.run(script("import os\nprint(sorted(os.environ))\n"))
    assert result.status == "ok"
    assert result.runs[0]["output"] == f"{sorted([*ENVIRONMENT, 'HOME', 'TMPDIR'])}\n"


def test_working_folder_is_fresh_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    sandbox = sandbox_for("none")
    code = "import os\nprint(os.listdir('.'))\nopen('left-behind', 'w').write('x')\n"
    first, second = sandbox.run(script(code)), sandbox.run(script(code))
    assert first.runs[0]["output"] == second.runs[0]["output"] == "[]\n"
    assert list(tmp_path.iterdir()) == []


def test_a_normal_unit_traces_the_same_in_both_modes():
    code = "def f(xs):\n    seen = set(xs)\n    total = sum(seen)\n    return total, seen\n"
    modes = ["bubblewrap", "none"] if bubblewrap_usable() else ["none"]
    runs = []
    for mode in modes:
        result = sandbox_for(mode).run(function(code, "f", [[1, 5, 3, 5]]))
        assert result.status == "ok", result.detail
        runs.append(result.runs)
    assert all(r == runs[0] for r in runs)
    assert runs[0][0]["result"] == {"value": "(9, {1, 3, 5})"}


@pytest.fixture
def broken_bwrap(tmp_path):
    binary = tmp_path / "bwrap"
    binary.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    binary.chmod(0o755)
    return str(binary)


@pytest.mark.parametrize("mode", ["auto", "bubblewrap"])
@pytest.mark.parametrize("binary", ["broken", "missing"])
def test_a_sandbox_that_cannot_start_fails_loudly(mode, binary, broken_bwrap, tmp_path):
    path = broken_bwrap if binary == "broken" else str(tmp_path / "no-such-bwrap")
    with pytest.raises(SandboxUnavailable) as raised:
        Sandbox(TracesConfig(enabled=True, sandbox=mode, bubblewrap_binary=path))
    message = str(raised.value)
    assert isinstance(raised.value, UserError)
    assert ("No permissions to create new namespace" if binary == "broken" else "is not installed") in message
    for fix in ("apt-get install bubblewrap", "user namespaces", "GKE", "sandbox = 'none'"):
        assert fix in message


def test_an_opted_in_weaker_mode_warns_and_is_recorded(broken_bwrap, caplog):
    sandbox = sandbox_for("none", bubblewrap_binary=broken_bwrap)
    assert "sandbox = 'none'" in caplog.text and caplog.records[-1].levelname == "WARNING"
    assert sandbox.mode == "none" and sandbox.layers[0] == "tempdir"
    record = {"id": "u", "code": "def f():\n    return 1\n", "entry_point": "f", "inputs": [[]]}
    (row,) = trace_rows([_unit_row(unit_from_record(record))], sandbox.cfg, sandbox)
    assert row["status"] == "ok" and row["meta"]["sandbox_mode"] == "none"


@pytest.mark.parametrize("mode", ["bubblewrap", "none"])
def test_units_run_unprivileged_in_every_mode(mode):
    sandbox = sandbox_for(mode)
    code = "import os\ndef f():\n    return os.getuid(), os.getgid(), os.getgroups()\n"
    result = sandbox.run(function(code, "f"))
    assert result.status == "ok", result.detail
    expected = f"({NOBODY}, {NOBODY}, [])" if os.geteuid() == 0 else f"({os.getuid()}, {os.getgid()}"
    assert result.runs[0]["result"]["value"].startswith(expected)
    assert ("uid-drop" in sandbox.layers) == (os.geteuid() == 0)


def test_bubblewrap_drops_capabilities_as_root_too():
    for as_root in (True, False):
        args = bubblewrap_args(("/opt/python",), 4, as_root)
        assert args[args.index("--cap-drop") + 1] == "ALL"
    root = bubblewrap_args(("/opt/python",), 4, True)
    assert [root[i + 1] for i, a in enumerate(root) if a == "--cap-add"] == ["CAP_SETUID", "CAP_SETGID"]
