"""The program that runs inside the sandbox: execute one unit under `sys.settrace` and print its trace.

Standard library only and self-contained: the parent starts `python -S -s -P -c BOOTSTRAP [--drop-uid N]`
inside the sandbox and writes two marshalled values on stdin: this file compiled (compiling it in every
process would cost more than running a small unit) and the request (marshal: trusted, needs no import). It
reads one JSON result from stdout (written by `to_json` below: importing `json` would cost as much again). The
namespaces and the parent's timeout live outside this process; what this file adds is the in-process layer
(privilege drop, rlimits, an audit hook, stubs for thread and process creation). The hook keeps everything it
uses in its own closure, bound before any unit code runs, and ends the process itself on a refusal, so
patching this module, `os`, `sys` or `builtins` does not switch it off (`install_guard`); it is still one
layer of several, see docs/traces.md.

Order matters: the request is read and the modules the runner needs are imported *before* the limits and the
audit hook are installed and before any unit code runs.

Request: {"kind": "function"|"doctest"|"script", "code", "entry_point", "inputs", "tests", "examples",
"limits": {...}}. Result: {"status", "detail", "runs": [{"label", "events", "result", "output_bytes"}],
"tests", "truncated"}. Events are short lists; pipeline/traces/format.py renders them. Every event of a
frame ends with the frame's call depth below the traced call (0 for the call itself, 1 for what it calls):
["call", name, [[arg, repr]...], depth], ["line", file, lineno, depth], ["state", [[name, repr]...], depth],
["exception", lineno, "Type: message", depth], ["return", name, repr | None, raised type | None, depth];
["output", text] and ["truncated"] belong to no frame.
"""

# ruff: noqa: BLE001, S102 - executing arbitrary units and outliving whatever they raise is this file's job

import builtins
import marshal
import os
import sys

BOOTSTRAP = "import marshal, sys; exec(marshal.load(sys.stdin.buffer))"
"""The `-c` program: runs the compiled runner that comes first on stdin."""
UNIT_FILE = "<unit>"
EXAMPLE_FILE = "<example {}>"
ELLIPSIS = "…"


# --------------------------------------------------------------------------------------------- stable repr

def stable_repr(value, width):
    """A repr of at most `width` characters (plus a trailing `…` when cut) with no memory addresses and
    sets in sorted order, so that the same program gives the same text on every run."""
    out = []
    _repr_into(value, out, [width + 1], 0)
    text = "".join(out)
    return text if len(text) <= width else text[:width] + ELLIPSIS


def _repr_into(value, out, budget, depth):
    if budget[0] <= 0:
        return
    kind = type(value)
    if kind in (list, tuple, set, frozenset, dict):
        if depth >= 6:
            _emit("...", out, budget)
            return
        _container_into(value, kind, out, budget, depth)
        return
    _emit(_scalar_repr(value, budget[0]), out, budget)


def _container_into(value, kind, out, budget, depth):
    if kind is dict:
        opening, closing, items = "{", "}", list(value.items())
    elif kind is list:
        opening, closing, items = "[", "]", list(value)
    elif kind is tuple:
        opening, closing, items = "(", ")", list(value)
    else:
        if not value:
            _emit("set()" if kind is set else "frozenset()", out, budget)
            return
        opening, closing = ("{", "}") if kind is set else ("frozenset({", "})")
        items = sorted(value, key=lambda v: stable_repr(v, 200))
    _emit(opening, out, budget)
    for i, item in enumerate(items):
        if budget[0] <= 0:
            return
        if i:
            _emit(", ", out, budget)
        if kind is dict:
            _repr_into(item[0], out, budget, depth + 1)
            _emit(": ", out, budget)
            _repr_into(item[1], out, budget, depth + 1)
        else:
            _repr_into(item, out, budget, depth + 1)
    if kind is tuple and len(items) == 1:
        _emit(",", out, budget)
    _emit(closing, out, budget)


def _scalar_repr(value, limit):
    kind = type(value)
    if kind is str or kind is bytes or kind is bytearray:
        return repr(value[: limit + 1])
    if kind is int:
        if value.bit_length() > 4 * max(limit, 16):
            return f"<int of {value.bit_length()} bits>"
        try:
            return repr(value)
        except ValueError:  # beyond sys.int_info.str_digits_check_threshold
            return f"<int of {value.bit_length()} bits>"
    if kind in (float, bool, complex) or value is None:
        return repr(value)
    if kind is type(stable_repr):
        return f"<function {value.__qualname__}>"
    if kind is type:
        return f"<class {value.__qualname__}>"
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError("__repr__ returned a non-string")
        text = text[: limit + 64]
    except BaseException as err:  # a unit's __repr__ may do anything, including run out of memory
        return f"<{kind.__name__} (repr failed: {type(err).__name__})>"
    return strip_addresses(text)


def result_repr(value, cap):
    """A stable repr of at most `cap` UTF-8 bytes (plus `…` when cut): the result of a call."""
    return _cut_bytes(stable_repr(value, cap), cap)


def _cut_bytes(text, cap):
    if len(text) * 4 <= cap:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= cap:
        return text
    return data[:cap].decode("utf-8", "ignore").rstrip(ELLIPSIS) + ELLIPSIS


def strip_addresses(text):
    """Drop ` at 0x7f...` (and `object ` before it) from default reprs: addresses change every run."""
    start = text.find(" at 0x")
    while start != -1:
        end = start + 6
        while end < len(text) and text[end] in "0123456789abcdefABCDEF":
            end += 1
        cut = start - 7 if text[max(0, start - 7):start] == " object" else start
        text = text[:cut] + text[end:]
        start = text.find(" at 0x", cut)
    return text


def _emit(text, out, budget):
    out.append(text[: max(budget[0], 0)])
    budget[0] -= len(text)


# --------------------------------------------------------------------------------------------- tracer

class Tracer:
    """Records call / line / state / return / exception events of frames whose code comes from the unit."""

    def __init__(self, files, limits, events):
        self.files = files
        self.width = limits["repr_width"]
        self.max_steps = limits["max_steps"]
        self.max_bytes = limits["max_trace_bytes"]
        self.events = events
        self.steps = 0
        self.bytes = 0
        self.truncated = False
        self.snapshots = {}
        self.raised = {}
        self.finished = False
        """Set after its call: a generator the call left behind must not add to a finished trace."""
        self.depths = {}
        """id(frame) -> call depth below the traced call (0 for its own frame) of each live traced frame."""

    def trace_call(self, frame, event, arg):
        if self.truncated or self.finished or frame.f_code.co_filename not in self.files:
            return None
        try:
            return self._call(frame)
        except Exception:  # the tracer must never break the unit: stop recording instead
            return self._stop()

    def trace_local(self, frame, event, arg):
        if self.truncated or self.finished:
            return None
        try:
            self._local(frame, event, arg)
        except Exception:
            return self._stop()
        return self.trace_local

    def _stop(self):
        self.truncated = True
        self.events.append(["truncated"])

    def _call(self, frame):
        code = frame.f_code
        snapshot = self._snapshot(frame, {})
        self.snapshots[id(frame)] = snapshot
        depth = self.depths[id(frame)] = self._depth(frame)
        if code.co_name != "<module>":
            names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount
                                     + bool(code.co_flags & 4) + bool(code.co_flags & 8)]
            args = [[n, snapshot[n][1]] for n in names if n in snapshot]
            self._add(["call", code.co_name, args, depth])
        return self.trace_local

    def _depth(self, frame):
        """One more than the nearest traced frame below on the stack; 0 when there is none."""
        caller = frame.f_back
        while caller is not None:
            known = self.depths.get(id(caller))
            if known is not None:
                return known + 1
            caller = caller.f_back
        return 0

    def _local(self, frame, event, arg):
        key = id(frame)
        depth = self.depths.get(key, 0)
        if event == "line":
            self._state(frame, depth)
            self.raised.pop(key, None)
            self._add(["line", frame.f_code.co_filename, frame.f_lineno, depth], step=True)
        elif event == "exception":
            self._state(frame, depth)
            error = arg[1]
            if self.raised.get(key) is not error:
                self.raised[key] = error
                self._add(["exception", frame.f_lineno, _describe(error, self.width), depth])
        elif event == "return":
            self._state(frame, depth)
            self.snapshots.pop(key, None)
            self.depths.pop(key, None)
            raised = self.raised.pop(key, None)
            if frame.f_code.co_name != "<module>":
                value = None if raised is not None else stable_repr(arg, self.width)
                self._add(["return", frame.f_code.co_name, value, type(raised).__name__ if raised else None,
                           depth])

    def output(self, text):
        """Printed text, merged with the previous event when that was printed text too."""
        if self.truncated:
            return
        last = self.events[-1] if self.events else None
        if last is not None and last[0] == "output" and len(last[1]) < self.width:
            room = self.width - len(last[1])
            last[1] += text[:room]
            self.bytes += len(text[:room])
        else:
            self._add(["output", text[: self.width]])

    def _state(self, frame, depth):
        key = id(frame)
        before = self.snapshots.get(key, {})
        after = self._snapshot(frame, before)
        changed = [[name, after[name][1]] for name in after
                   if name not in before or before[name][1] != after[name][1]]
        self.snapshots[key] = after
        if changed:
            self._add(["state", changed, depth])

    def _snapshot(self, frame, before):
        """name -> (value id, repr) for the frame's variables; unchanged immutable values are not repr'd."""
        snapshot = {}
        for name, value in list(frame.f_locals.items()):
            if name.startswith("__") or type(value) is type(sys):
                continue
            old = before.get(name)
            if old is not None and old[0] == id(value) and type(value) in (int, str, float, bool, bytes, type(None)):
                snapshot[name] = old
            else:
                snapshot[name] = (id(value), stable_repr(value, self.width))
        return snapshot

    def _add(self, event, step=False):
        size = _size(event)
        if self.steps >= self.max_steps or self.bytes + size > self.max_bytes:
            self._stop()
            return
        self.steps += step
        self.bytes += size
        self.events.append(event)


def _size(event):
    """Roughly the bytes an event takes once rendered (a cap, so an estimate is enough)."""
    size = 8
    for item in event:
        if isinstance(item, list):
            size += sum(len(str(a)) + len(str(b)) + 3 for a, b in item)
        elif item is not None:
            size += len(str(item))
    return size


def _describe(error, width):
    message = _safe_str(error, width)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def _safe_str(error, width):
    try:
        text = str(error)
    except BaseException:
        return "<str failed>"
    return strip_addresses(text)[:width]


# --------------------------------------------------------------------------------------------- output

class Capture:
    """Stands in for sys.stdout / sys.stderr: keeps at most `limit` bytes and reports each write."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, limit, tracer_ref):
        self.limit = limit
        self.size = 0
        self.parts = []
        self.tracer_ref = tracer_ref

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
        self.size += len(text)
        tracer = self.tracer_ref[0]
        if tracer is not None and text:
            tracer.output(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def take(self):
        text = "".join(self.parts)
        self.parts = []
        return text


# --------------------------------------------------------------------------------------------- guard

BLOCKED_EVENTS = (
    "socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.system",
    "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "pty.", "resource.setrlimit", "resource.prlimit",
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "gc.get_referrers", "gc.get_referents",
    "gc.get_objects", "os.startfile", "webbrowser.open", "urllib.Request", "ftplib.", "smtplib.", "poplib.",
    "imaplib.", "telnetlib.", "http.client.", "os.setuid", "os.setgid", "os.chroot", "mmap.__new__",
    "os.add_dll_directory", "fcntl.ioctl", "os.unshare", "os.setns",
)
"""Audit events refused outright (prefixes). The tracer is installed before the hook, so every
`sys.settrace` after that is the unit's; `fcntl.ioctl` would let a unit push keystrokes into a terminal."""
BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "_posixshmem"})
REFUSED_EVENT = "rnj.refused"
"""Raised by the runner's own stubs (thread and process creation) to hand a refusal to the hook."""
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {  # event -> (indices of path arguments, whether it writes)
    "open": ((0,), None), "os.listdir": ((0,), False), "os.scandir": ((0,), False), "os.chdir": ((0,), False),
    "os.remove": ((0,), True), "os.rmdir": ((0,), True), "os.mkdir": ((0,), True), "os.rename": ((0, 1), True),
    "os.link": ((0, 1), True), "os.symlink": ((0, 1), True), "os.truncate": ((0,), True),
    "os.chmod": ((0,), True), "os.chown": ((0,), True), "os.utime": ((0,), True), "shutil.rmtree": ((0,), True),
    "os.chflags": ((0,), True), "os.setxattr": ((0,), True), "os.removexattr": ((0,), True),
}
READABLE_DEVICES = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")


def install_guard(workdir, read_roots, files_to_write, namespaced, result_fd):
    """Install the audit hook: refuse network, processes, ctypes, tracer changes and paths outside the sandbox.

    A refusal is final: the hook writes the `forbidden` result itself and ends the process, so there is no
    exception for the unit to catch and no traceback leading to the hook's frame. Everything the hook uses is
    bound here, before any unit code runs, as values of its closure: C functions (`posix.lstat`, `posix.write`
    ...), immutable copies of the tables and builtins. It reads no module global, builtin or Python-level
    function at run time, calls no Python code a unit could replace, holds no Python function a unit could
    rebind, and nothing outside the interpreter's list of hooks refers to it. Patching `__main__`, `os`,
    `os.path`, `sys` or `builtins` therefore changes nothing it does (tests/pipeline/traces/test_sandbox.py).
    `files_to_write` (None under bubblewrap, whose tmpfs caps the disk) caps files opened for writing.
    Without bubblewrap (`namespaced` false) a path given as anything but str or bytes (a path object whose
    `__fspath__` could answer differently the second time) is refused; under bubblewrap it is left to the
    namespace.
    """
    import itertools
    import posix

    blocked, blocked_imports, refused_event = tuple(BLOCKED_EVENTS), frozenset(BLOCKED_IMPORTS), REFUSED_EVENT
    path_events = type(type.__dict__)(dict(PATH_EVENTS))  # a read-only view of a dict nobody else holds
    devices, write_flags = frozenset(READABLE_DEVICES), WRITE_FLAGS
    workdir_prefix = workdir.rstrip("/") + "/"
    roots, root_prefixes = tuple(read_roots), tuple(r.rstrip("/") + "/" for r in read_roots)
    lstat, readlink, write, end_process, getcwd = posix.lstat, posix.readlink, posix.write, posix._exit, posix.getcwd
    kind_of, is_instance, show, flipped, size_of, truth = type, isinstance, repr, reversed, len, bool
    str_type, bytes_type, int_type = str, bytes, int
    exact_str, decode = str.__str__, bytes.decode
    escapes = type(type.__dict__)(dict(_ESCAPES))
    file_type, symlink_type = 0o170000, 0o120000
    os_error, memory_error, recursion_error, any_error = OSError, MemoryError, RecursionError, BaseException
    counter = None if files_to_write is None else itertools.count(1)
    take = next
    strict = not namespaced
    memory_verdict = b'{"status":"memory","detail":"MemoryError in the sandbox guard","runs":[],"truncated":false}'
    recursion_verdict = (b'{"status":"error","detail":"RecursionError: the recursion limit was reached",'
                         b'"runs":[],"truncated":false}')
    broken_verdict = b'{"status":"forbidden","detail":"the sandbox guard failed","runs":[],"truncated":false}'

    def audit(event, args):
        try:
            refused = None
            if kind_of(event) is not str_type:
                event = exact_str(event)  # a unit's own sys.audit() call with a str subclass
            if event in path_events:
                indices, writes = path_events[event]
                if writes is None:  # open: (path, mode, flags)
                    mode, flags = args[1], args[2]
                    writes = kind_of(flags) is int_type and truth(flags & write_flags)
                    if kind_of(mode) is str_type:
                        writes = writes or "w" in mode or "a" in mode or "x" in mode or "+" in mode
                for i in indices:
                    path = args[i] if i < size_of(args) else None
                    if path is None or kind_of(path) is int_type:
                        continue  # a descriptor: opened through a path this hook checked
                    if is_instance(path, str_type):
                        text = exact_str(path)
                    elif is_instance(path, bytes_type):
                        text = decode(path, "utf-8", "surrogateescape")
                    elif strict:
                        refused = f"{event} with a path of type {kind_of(path).__name__} (pass str or bytes)"
                        break
                    else:
                        continue
                    # The real path, symlinks followed, with C calls only (os.path.realpath is Python).
                    pending = text.split("/")
                    pending.reverse()
                    if not text.startswith("/"):  # against the real working folder: os.fchdir is not audited
                        pending.extend(flipped(getcwd().split("/")))
                    parts, hops = [], 0
                    while pending:
                        part = pending.pop()
                        if part == "" or part == ".":
                            continue
                        if part == "..":
                            if parts:
                                parts.pop()
                            continue
                        parts.append(part)
                        try:
                            is_link = lstat("/" + "/".join(parts)).st_mode & file_type == symlink_type
                        except os_error:
                            continue  # missing (about to be created) or unreachable: taken literally
                        if is_link:
                            hops += 1
                            target = readlink("/" + "/".join(parts))
                            parts.pop()
                            if hops > 40 or kind_of(target) is not str_type:
                                refused = f"{event} {show(text[:200])} (symlink loop)"
                                break
                            if target.startswith("/"):
                                parts = []
                            pending.extend(flipped(target.split("/")))
                    if refused is not None:
                        break
                    full = "/" + "/".join(parts)
                    if full == workdir or full.startswith(workdir_prefix):
                        if writes and counter is not None and event == "open" and take(counter) > files_to_write:
                            refused = "opening more files for writing than the sandbox allows"
                            break
                        continue
                    if not writes and (full in devices or full in roots or full.startswith(root_prefixes)):
                        continue
                    refused = f"{event} {show(text[:200])}"
                    break
            elif event == "import":
                name = args[0]
                if is_instance(name, str_type) and exact_str(name) in blocked_imports:
                    refused = f"import {exact_str(name)}"
            elif event == refused_event:
                refused = exact_str(args[0]) if is_instance(args[0], str_type) else "an unknown operation"
            elif event.startswith(blocked):
                refused = event
            if refused is None:
                return
            detail = f"the sandbox refused: {refused}".translate(escapes)
            verdict = ('{"status":"forbidden","detail":"' + detail + '","runs":[],"truncated":false}').encode(
                "utf-8", "surrogatepass")
        except memory_error:
            verdict = memory_verdict
        except recursion_error:  # the unit used up the stack: the guard cannot check, so the unit ends
            verdict = recursion_verdict
        except any_error:
            verdict = broken_verdict
        while verdict:
            verdict = verdict[write(result_fd, verdict):]
        end_process(0)

    sys.addaudithook(audit)


def _refuse_threads():
    """Thread creation is not audited before Python 3.13: replace the entry points (RLIMIT_NPROC backs it).

    The stubs hand the refusal to the hook through an audit event of their own and start nothing whatever
    happens to them.
    """
    import _thread

    audit = sys.audit

    def start_new_thread(*args, **kwargs):
        audit(REFUSED_EVENT, "_thread.start_new_thread")
        raise RuntimeError("threads are not available in the sandbox")

    _thread.start_new_thread = start_new_thread
    _thread.start_new = start_new_thread
    if "threading" in sys.modules:
        sys.modules["threading"]._start_new_thread = start_new_thread
    try:
        import _posixsubprocess
    except ImportError:
        return

    def fork_exec(*args, **kwargs):
        audit(REFUSED_EVENT, "_posixsubprocess.fork_exec")
        raise RuntimeError("processes are not available in the sandbox")

    _posixsubprocess.fork_exec = fork_exec


# --------------------------------------------------------------------------------------------- clock

def freeze_clock():
    """Make `time`'s clocks repeatable: each read advances 1 ms from a fixed start (2000-01-01 UTC).

    Traces must not depend on when they were made; loops that wait on the clock still end.
    `datetime.now()` reads the system clock in C and is not covered.
    """
    import time

    state = [0]

    def tick(start):
        def read():
            state[0] += 1
            return start + state[0] / 1000

        return read

    def tick_ns(start):
        read = tick(start)
        return lambda: int(read() * 1_000_000_000)

    time.time, time.time_ns = tick(946_684_800.0), tick_ns(946_684_800.0)
    for name in ("monotonic", "perf_counter", "process_time", "thread_time"):
        setattr(time, name, tick(1000.0))
        setattr(time, f"{name}_ns", tick_ns(1000.0))


# --------------------------------------------------------------------------------------------- limits

def drop_privileges(uid):
    """Running as root: become `uid` (nobody) so that RLIMIT_NPROC and file permissions apply."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def set_limits(limits):
    import resource

    mb = 1 << 20
    cpu = max(1, int(limits["cpu_seconds"]))
    for name, value in (
        ("RLIMIT_CPU", (cpu, cpu + 1)),
        ("RLIMIT_AS", (limits["memory_mb"] * mb,) * 2),
        ("RLIMIT_FSIZE", (limits["file_mb"] * mb,) * 2),
        ("RLIMIT_NOFILE", (limits["open_files"],) * 2),
        ("RLIMIT_NPROC", (1, 1)),
        ("RLIMIT_CORE", (0, 0)),
    ):
        resource.setrlimit(getattr(resource, name), value)


# --------------------------------------------------------------------------------------------- running units

class Unit:
    """Runs the request's unit: setup untraced, then each traced call, example or the script."""

    def __init__(self, request, capture, tracer_ref):
        self.request = request
        self.limits = request["limits"]
        self.capture = capture
        self.tracer_ref = tracer_ref
        self.runs = []
        self.truncated = False
        self.tests = None

    def run(self):
        kind = self.request["kind"]
        if kind == "function":
            namespace = self._setup(self.request["code"], "__unit__")
            function = namespace.get(self.request["entry_point"])
            if not callable(function):
                raise SetupError(f"entry point {self.request['entry_point']!r} is not a function of the code")
            for args in self.request["inputs"]:
                label = f"{self.request['entry_point']}({', '.join(stable_repr(a, self.limits['repr_width']) for a in args)})"
                self._traced(label, lambda args=args: function(*args), {UNIT_FILE})
            if self.request.get("tests"):
                self.tests = self._tests(namespace, function)
        elif kind == "doctest":
            namespace = self._setup(self.request["code"], "__unit__")
            for i, (source, _want) in enumerate(self.request["examples"]):
                name = EXAMPLE_FILE.format(i)
                try:
                    code = compile(source, name, "single")
                except SyntaxError as err:
                    raise SetupError(f"example {i} does not compile: {err.msg}") from None
                self._traced(f">>> {source.splitlines()[0]}", lambda c=code: exec(c, namespace), {UNIT_FILE, name})
        elif kind == "script":
            try:
                code = compile(self.request["code"], UNIT_FILE, "exec")
            except SyntaxError as err:
                raise SetupError(f"the script does not compile: {err.msg} (line {err.lineno})") from None
            namespace = {"__name__": "__main__", "__builtins__": builtins}
            self._traced("script", lambda: exec(code, namespace), {UNIT_FILE})
        else:
            raise SetupError(f"unknown unit kind {kind!r}")

    def _setup(self, code, name):
        try:
            compiled = compile(code, UNIT_FILE, "exec")
        except SyntaxError as err:
            raise SetupError(f"the code does not compile: {err.msg} (line {err.lineno})") from None
        namespace = {"__name__": name, "__builtins__": builtins}
        try:
            exec(compiled, namespace)
        except MemoryError:
            raise
        except BaseException as err:
            raise SetupError(f"running the code's definitions failed: {_describe(err, 200)}") from None
        self.capture.take()
        return namespace

    def _traced(self, label, call, files):
        events = []
        tracer = Tracer(files, self.limits, events)
        self.tracer_ref[0] = tracer
        value = error = fatal = None
        try:
            value = call()
        except (MemoryError, RecursionError) as err:
            fatal = err
        except BaseException as err:  # the unit's own exception: part of what the code does
            error = err
        tracer.finished = True
        self.tracer_ref[0] = None
        if fatal is not None:
            raise fatal
        self.truncated = self.truncated or tracer.truncated
        self.runs.append({"label": label, "events": events, "result": self._result(value, error),
                          "output": self.capture.take(), "output_bytes": self.capture.size})
        self.capture.size = 0

    def _result(self, value, error):
        """The call's final value or exception, whole up to `result_bytes` (intermediate records use
        `repr_width`)."""
        cap = self.limits["result_bytes"]
        if error is None:
            return {"value": "exit 0" if self.request["kind"] == "script" else result_repr(value, cap)}
        if isinstance(error, SystemExit) and self.request["kind"] == "script" and error.code in (None, 0):
            return {"value": "exit 0"}
        frames = []
        tb = error.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename.startswith(("<unit", "<example")):
                frames.append([code.co_filename, tb.tb_lineno, code.co_name])
            tb = tb.tb_next
        return {"raises": _cut_bytes(_describe(error, cap), cap), "traceback": frames[-8:]}

    def _tests(self, namespace, function):
        try:
            exec(compile(self.request["tests"], "<tests>", "exec"), namespace)
            check = namespace.get("check")
            if callable(check):
                check(function)
        except MemoryError:
            raise
        except BaseException as err:
            return f"failed: {_describe(err, 200)}"
        return "passed"


class SetupError(Exception):
    """The unit could not be run at all (syntax, missing entry point, failing definitions)."""


_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t"})
_ESCAPES.update({i: f"\\u{i:04x}" for i in range(0xD800, 0xE000)})  # lone surrogates stay valid JSON


def to_json(value):
    """JSON text of None, bool, int, float, str, list, tuple and dict-with-str-keys values."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        text = repr(value)
        return "null" if text in ("nan", "inf", "-inf") else text
    if kind is str:
        return '"' + value.translate(_ESCAPES) + '"'
    if kind in (list, tuple):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if kind is dict:
        return "{" + ",".join(to_json(str(k)) + ":" + to_json(v) for k, v in value.items()) + "}"
    return to_json(str(value))


def _dispatcher(tracer_ref):
    """The one trace function: hands each new frame to the current call's tracer, if any."""

    def dispatch(frame, event, arg):
        tracer = tracer_ref[0]
        return None if tracer is None else tracer.trace_call(frame, event, arg)

    return dispatch


def main(argv):
    request = marshal.load(sys.stdin.buffer)
    if "--drop-uid" in argv:
        drop_privileges(int(argv[argv.index("--drop-uid") + 1]))
    import random  # imported (and seeded) before the hook so that units get the same numbers each run

    random.seed(0)
    freeze_clock()
    limits = request["limits"]
    result_fd = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdin.close()
    import _signal  # not `signal`: that imports enum, the costliest import of a unit's start

    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # an over-long write fails with EFBIG, no kill
    workdir = os.path.realpath(os.getcwd())
    roots = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    tracer_ref = [None]
    capture = Capture(limits["max_output_bytes"], tracer_ref)
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = capture
    set_limits(limits)
    _refuse_threads()
    sys.settrace(_dispatcher(tracer_ref))  # once, before the hook: from then on every settrace is refused
    install_guard(workdir, roots, limits.get("files_to_write"), limits.get("namespaced", False), result_fd)
    unit = Unit(request, capture, tracer_ref)
    status, detail = "ok", None
    try:
        unit.run()
    except MemoryError:
        status, detail = "memory", "MemoryError"
    except RecursionError:
        status, detail = "error", "RecursionError: the recursion limit was reached"
    except SetupError as err:
        status, detail = "error", str(err)
    except BaseException as err:
        status, detail = "error", _describe(err, 200)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {"status": status, "detail": detail, "runs": unit.runs if status == "ok" else [],
               "tests": unit.tests, "truncated": unit.truncated, "cpu": usage.ru_utime + usage.ru_stime}
    try:
        data = to_json(payload).encode("utf-8", "surrogatepass")
    except MemoryError:
        data = b'{"status": "memory", "detail": "MemoryError", "runs": [], "tests": null, "truncated": false}'
    view = memoryview(data)
    while view:
        view = view[os.write(result_fd, view):]
    os._exit(0)  # no interpreter shutdown: threads or finalizers a unit left behind never run


if __name__ == "__main__":
    main(sys.argv[1:])
