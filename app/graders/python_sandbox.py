"""Python graders' `grade(sample, item)`, run out of process in a bubblewrap sandbox.

What the sandbox is (the README says the same):
- bubblewrap (`bwrap`) with new network, PID, IPC, UTS and cgroup namespaces (and a user
  namespace when the service does not run as root): no network interface but a loopback
  nobody listens on, no other process visible.
- A filesystem of its own: a fresh tmpfs as `/`, with `/usr` (libc and friends) and the
  Python runtime's own prefix bound read-only, a minimal `/dev`, a size-capped tmpfs at
  `/tmp`. Nothing else: no DATA_DIR, no database file, no checkout, no /proc.
- An empty environment (no keys or settings), and, where the service runs as root, the
  grader's process dropped to uid/gid 65534 (nobody) with every capability gone and
  no_new_privs, so it cannot regain any.
- rlimits on the whole tree: CPU seconds, address space, processes (for that uid), file size;
  a wall-clock deadline after which the sandbox is killed; stdout/stderr capped (past the
  cap it is killed).
- The Python standard library only (`python -I -S`): no site-packages.

Where bwrap is missing, or a trial grader does not run in it (until one has: a container
may have bwrap and no right to make namespaces), python graders are refused (400
`python_grader_unavailable`): grader code is never run unsandboxed.
"""

import contextlib
import json
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.errors import BadRequest

BWRAP = "bwrap"
SETPRIV = "/usr/bin/setpriv"
NOBODY = 65534
TAIL_CHARS = 1000


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 10
    wall_s: float = 20.0
    memory_bytes: int = 1 << 30  # address space; Python itself needs ~50 MB of it
    processes: int = 32
    file_bytes: int = 16 << 20
    tmp_bytes: int = 64 << 20
    output_bytes: int = 1 << 20  # what grade() may print, stdout and stderr together


FailureKind = Literal["runtime", "timeout", "server"]


@dataclass
class SandboxResult:
    score: float | None = None
    error: str | None = None
    kind: FailureKind | None = None


# Runs inside the sandbox. fd 1 is kept for the answer (one JSON line); whatever grade()
# prints goes to fd 2, which the service reads under the output cap.
RUNNER = r"""
import json, math, os, sys, traceback
answer_fd = os.dup(1)
os.dup2(2, 1)
def answer(obj):
    sys.stdout.flush()
    os.write(answer_fd, (json.dumps(obj) + "\n").encode())
request = json.loads(sys.stdin.read())
try:
    namespace = {"__name__": "grader"}
    exec(compile(request["source"], "grader.py", "exec"), namespace)
    value = namespace["grade"](request["sample"], request["item"])
except BaseException as exc:
    answer({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
else:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        answer({"score": float(value)})
    else:
        answer({"error": "grade() returned %s, not a finite number" % type(value).__name__})
"""


def bwrap_path() -> str | None:
    return shutil.which(BWRAP)


def _as_root() -> bool:
    return os.geteuid() == 0


def _missing_tool() -> str | None:
    if bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed on this host"
    if _as_root() and not Path(SETPRIV).exists():
        return f"{SETPRIV} (to drop root inside the sandbox) is missing"
    return None


_started_once = False


def _probe() -> str | None:
    """Whether a sandbox really starts here (a container without the right to make
    namespaces has bwrap and still cannot). Once one has, that is remembered; a failure is
    tried again next time (it may have been passing: the process limit while busy)."""
    global _started_once
    if _started_once:
        return None
    trial = run_python(
        "def grade(sample, item):\n    return 1.0\n", {}, {}, SandboxLimits(wall_s=15)
    )
    if trial.score == 1.0:
        _started_once = True
        return None
    return f"the sandbox does not start here ({trial.error})"


def unavailable_reason() -> str | None:
    return _missing_tool() or _probe()


def check_available(param: str) -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise BadRequest(
            f"{param}: python graders need a sandbox, and {reason}; they never run unsandboxed.",
            param=param,
            code="python_grader_unavailable",
        )


def _top_level(path: str) -> list[str]:
    """Bind /lib, /lib64, /bin as the host has them: symlinks into /usr, or directories."""
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if os.path.isdir(path):
        return ["--ro-bind", path, path]
    return []


def command(limits: SandboxLimits) -> list[str]:
    bwrap = bwrap_path()
    assert bwrap is not None
    python = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    args = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for top in ("/lib", "/lib64", "/bin"):
        args += _top_level(top)
    if not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    args += ["--dev", "/dev", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    if _as_root():
        # Root ignores RLIMIT_NPROC and may own capabilities: the grader runs as nobody.
        args += [
            SETPRIV,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ]
    else:
        args.insert(1, "--unshare-user")
    return [*args, python, "-I", "-S", "-c", RUNNER]


def _limiter(limits: SandboxLimits):
    def apply() -> None:
        # SIGXCPU at the soft limit (reported as such), SIGKILL a second later
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap; --die-with-parent takes the rest down


def _tail(log: bytearray) -> str:
    text = log[-TAIL_CHARS:].decode("utf-8", "replace").strip()
    return f"\n(output: ...{text})" if text else ""


def run_python(
    source: str, sample: dict[str, Any], item: Any, limits: SandboxLimits | None = None
) -> SandboxResult:
    """grade(sample, item) in the sandbox: its score, or why there is none."""
    limits = limits or SandboxLimits()
    missing = _missing_tool()
    if missing is not None:
        return SandboxResult(error=missing, kind="server")
    try:
        request = json.dumps({"source": source, "sample": sample, "item": item}).encode()
    except (ValueError, TypeError, RecursionError) as exc:
        return SandboxResult(error=f"the sample or item cannot be passed: {exc}", kind="runtime")
    try:
        proc = subprocess.Popen(
            command(limits),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            start_new_session=True,
            preexec_fn=_limiter(limits),  # rlimits must be set in the child, before exec
        )
    except OSError as exc:
        return SandboxResult(error=f"the sandbox did not start: {exc}", kind="server")
    answer, log = bytearray(), bytearray()
    failure: SandboxResult | None = None
    deadline = time.monotonic() + limits.wall_s
    pending = memoryview(request)
    assert proc.stdin and proc.stdout and proc.stderr
    with selectors.DefaultSelector() as selector:
        os.set_blocking(proc.stdin.fileno(), False)
        selector.register(proc.stdin, selectors.EVENT_WRITE)
        selector.register(proc.stdout, selectors.EVENT_READ, answer)
        selector.register(proc.stderr, selectors.EVENT_READ, log)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                failure = SandboxResult(
                    error=f"grade() did not finish within {limits.wall_s:g} s", kind="timeout"
                )
                break
            for key, _ in selector.select(min(left, 0.5)):
                if key.fileobj is proc.stdin:
                    try:
                        written = os.write(proc.stdin.fileno(), pending[:65536])
                    except BrokenPipeError:
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
            if len(log) > limits.output_bytes or len(answer) > limits.output_bytes:
                failure = SandboxResult(
                    error=f"grade() printed more than {limits.output_bytes} bytes", kind="runtime"
                )
                break
    if failure is not None:
        _kill(proc)
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill(proc)
        code = proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if not pipe.closed:
            pipe.close()
    if failure is not None:
        return failure
    return _outcome(answer, log, code, limits)


def _outcome(answer: bytearray, log: bytearray, code: int, limits: SandboxLimits) -> SandboxResult:
    first = bytes(answer).split(b"\n", 1)[0]
    if first:
        try:
            reply = json.loads(first)
        except ValueError:
            reply = {"error": "the grader's answer could not be read"}
        score = reply.get("score")
        if isinstance(score, int | float) and math.isfinite(score):
            return SandboxResult(score=float(score))
        return SandboxResult(error=str(reply.get("error")) + _tail(log), kind="runtime")
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        why = {"SIGXCPU": f" (over the CPU limit of {limits.cpu_s} s)"}.get(name, "")
        return SandboxResult(
            error=f"the grader was killed by {name}{why}" + _tail(log), kind="runtime"
        )
    if log.startswith(b"bwrap:"):
        return SandboxResult(error=log.decode("utf-8", "replace").strip(), kind="server")
    return SandboxResult(
        error=f"the grader exited ({code}) without an answer" + _tail(log), kind="runtime"
    )
