"""The python grader's sandbox: each escape or abuse is stopped and reported as the grader's
error, and nothing is left running."""

import asyncio
import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from app.errors import BadRequest
from app.graders import python_sandbox
from app.graders.python_sandbox import SandboxLimits, run_python
from app.graders.service import run_grader, validate_grader

pytestmark = pytest.mark.skipif(
    python_sandbox.unavailable_reason() is not None, reason="no bubblewrap here"
)

QUICK = SandboxLimits(cpu_s=2, wall_s=8)


def grade(body: str, item: object = None, limits: SandboxLimits = QUICK):
    source = "import os, sys, socket\n\ndef grade(sample, item):\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines()
    )
    return run_python(source, {"output_text": "x"}, item or {}, limits)


def sandbox_processes() -> list[int]:
    """Processes of the sandbox's uid (nobody) on this host."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(x for x in status.read_text().splitlines() if x.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid_line.split()[1] == str(python_sandbox.NOBODY):
            found.append(int(status.parent.name))
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    if os.geteuid() == 0:
        deadline = time.monotonic() + 5
        while sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sandbox_processes() == []


def test_a_plain_grader_runs() -> None:
    assert grade("return len(sample['output_text']) + item['n']", {"n": 2}).score == 3.0


def test_network_is_unreachable() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # nobody came: the timeout
            accepted.append(server.accept())

    waiter = threading.Thread(target=accept)
    waiter.start()
    try:
        result = grade(f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\nreturn 1.0")
    finally:
        waiter.join()
        server.close()
    assert result.score is None and result.kind == "runtime"
    assert "ConnectionRefusedError" in result.error or "unreachable" in result.error
    assert accepted == []


def test_data_directory_and_database_are_not_there(data_root: Path, sqlite_url: str) -> None:
    marker = data_root / "secret.txt"
    marker.write_text("s3cret")
    database = sqlite_url.removeprefix("sqlite:///")
    assert Path(database).exists()
    for path in (marker, Path(database)):
        result = grade(f"return len(open({str(path)!r}).read())")
        assert result.score is None and "FileNotFoundError" in result.error
    listing = grade(f"return len(os.listdir({str(data_root)!r}))")
    assert listing.score is None and "FileNotFoundError" in listing.error


def test_only_the_runtime_is_visible() -> None:
    result = grade("print(sorted(os.listdir('/')))\nreturn 1 / 0")
    assert "proc" not in result.error and "work" not in result.error and "'usr'" in result.error


def test_environment_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTD_SECRET_KEY", "sk-do-not-leak")
    result = grade(
        "leaked = any('sk-' in v for v in os.environ.values())\n"
        "return float(leaked or 'ADAPTD_SECRET_KEY' in os.environ)"
    )
    assert result.score == 0.0


def test_cannot_write_outside_tmp() -> None:
    result = grade("open('/usr/owned', 'w').write('x')\nreturn 1.0")
    assert result.score is None and ("Read-only" in result.error or "Permission" in result.error)


def test_fork_bomb_is_stopped() -> None:
    started = time.monotonic()
    result = grade("while True:\n    os.fork()")
    assert result.score is None and result.kind in ("runtime", "timeout")
    assert time.monotonic() - started < QUICK.wall_s + 6


def test_two_gigabytes_are_refused() -> None:
    result = grade("block = bytearray(2 * 1024 ** 3)\nreturn 1.0")
    assert result.score is None and "MemoryError" in result.error


def test_printing_100_mb_is_cut_off() -> None:
    started = time.monotonic()
    result = grade("for _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\nreturn 1.0")
    assert result.score is None and "printed more than" in result.error
    assert time.monotonic() - started < QUICK.wall_s


def test_endless_loop_is_stopped() -> None:
    started = time.monotonic()
    result = grade("while True:\n    pass")
    assert result.score is None
    assert result.kind == "timeout" or "SIGXCPU" in result.error
    assert time.monotonic() - started < QUICK.wall_s + 6


def test_sleeping_past_the_wall_clock_is_stopped() -> None:
    result = grade("import time\ntime.sleep(60)", limits=SandboxLimits(wall_s=2))
    assert result.kind == "timeout" and "did not finish within 2 s" in result.error


def test_stopped_graders_are_reported_in_the_run_metadata() -> None:
    source = "def grade(sample, item):\n    return bytearray(2 * 1024 ** 3)\n"
    grader = validate_grader({"type": "python", "name": "p", "source": source})
    result = asyncio.run(run_grader(grader, "x", {}, limits=QUICK))
    errors = result.metadata.errors
    assert result.reward == 0.0
    assert (
        errors.python_grader_runtime_error
        and "MemoryError" in errors.python_grader_runtime_error_details
    )
    timed_out = asyncio.run(
        run_grader(
            validate_grader(
                {
                    "type": "python",
                    "name": "p",
                    "source": "def grade(s, i):\n    while True: pass\n",
                }
            ),
            "x",
            {},
            limits=SandboxLimits(cpu_s=30, wall_s=2),
        )
    )
    assert timed_out.metadata.errors.unresponsive_reward_error


def test_without_bubblewrap_python_graders_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(python_sandbox, "bwrap_path", lambda: None)
    source = "def grade(sample, item):\n    return 1.0\n"
    with pytest.raises(BadRequest) as exc:
        validate_grader({"type": "python", "name": "p", "source": source})
    assert exc.value.code == "python_grader_unavailable" and exc.value.param == "grader.type"
    result = run_python(source, {}, {})
    assert result.score is None and result.kind == "server"


def test_a_bwrap_that_cannot_start_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """bwrap installed but refused its namespaces (as in a locked-down container)."""
    bwrap = python_sandbox.bwrap_path()
    monkeypatch.setattr(python_sandbox, "_started_once", False)
    monkeypatch.setattr(python_sandbox, "command", lambda limits: [bwrap, "--no-such-option"])
    source = "def grade(sample, item):\n    return 1.0\n"
    with pytest.raises(BadRequest) as exc:
        validate_grader({"type": "python", "name": "p", "source": source})
    assert exc.value.code == "python_grader_unavailable"
    assert "does not start" in exc.value.message
