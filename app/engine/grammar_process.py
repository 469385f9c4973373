"""A grammar's first compile, in a child process that can be stopped.

xgrammar cannot cancel a compile, and a few dozen bytes of schema can take minutes (a
bounded repetition unrolled into thousands of states, or every open object's own copy of
"any JSON value", each a pass over the vocabulary; see docs/benchmarks.md). A thread would run
on after its request gave up, so each new constraint is first compiled in a process forked
from a forkserver that imported xgrammar once (a fork costs milliseconds; a fresh interpreter
would import torch again). The parent kills the child when GRAMMAR_COMPILE_TIMEOUT_S passes
or the client leaves: the CPU comes back at once.

The child only answers whether the constraint compiles and can match (some first token is
allowed), and xgrammar's message if not. The built-in engine, which needs the compiled grammar
for its rows, compiles it once more in the API process: that is cheap (the same work, now known
to finish within the deadline) while handing the child's over is not (serializing the token
masks of a 28 KB schema took 10 s and 36 MB against 0.24 s to compile it). The vLLM engine
only checks: the child's compile is the only one in adaptd (the server compiles its own).

As with any forkserver child, multiprocessing imports the process's `__main__` module in each
child (as `__mp_main__`): entry points must keep their work under `if __name__ ==
"__main__"` (uvicorn's, celery's and pytest's do, as do the bench scripts).
"""

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import xgrammar as xgr

from app.engine.grammar_compile import can_start, compile_with

# At most this many compiles at once (each in its child, then in the API process): each uses
# up to COMPILE_THREADS cores and holds one of the API's threadpool threads while it runs. A
# compile that finds every slot taken is refused at once (503, retry) rather than queued, so
# slow schemas can never hold many threadpool threads (every request's prompt needs one).
MAX_CONCURRENT = 2
COMPILE_THREADS = 2
POLL_S = 0.05

_context = multiprocessing.get_context("forkserver")
# What a compile needs, imported once in the forkserver (a child would import torch again).
_context.set_forkserver_preload(["app.engine.structured"])
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)
_running: set[int] = set()  # pids of the compile processes alive now


class CompileFailed(Exception):
    """xgrammar refused the constraint (its own message)."""


class CompileTimeout(Exception):
    """Not compiled within the deadline; the child was stopped."""


class CompileCancelled(Exception):
    """The caller gave up (its client left); the child was stopped."""


class CompilerBusy(Exception):
    """Every compile slot was taken."""


class CannotMatch(Exception):
    """It compiled, but allows no first token: no text can match it."""


def check_compiles(
    tokenizer_info: str,
    kind: str,
    spec: str,
    timeout_s: float,
    cancelled: threading.Event | None = None,
    allowed: bytes | None = None,
) -> None:
    """Returns once the constraint has compiled in a child within `timeout_s` and allows a
    first token (of those in `allowed`, a packed token bitmask row, when given); raises
    CompileFailed, CannotMatch, CompileTimeout or CompileCancelled (`cancelled` was set).
    Call it holding a `slot()`."""
    stopped = cancelled.is_set if cancelled is not None else lambda: False
    _run(tokenizer_info, kind, spec, timeout_s, stopped, allowed)


@contextlib.contextmanager
def slot() -> Iterator[None]:
    """One of the MAX_CONCURRENT compile slots for the block, or CompilerBusy at once."""
    if not _slots.acquire(blocking=False):
        raise CompilerBusy
    try:
        yield
    finally:
        _slots.release()


def warm_up() -> None:
    """Starts the forkserver (it imports xgrammar and torch: seconds), so that the first
    compile does not wait for it."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def _run(
    tokenizer_info: str,
    kind: str,
    spec: str,
    timeout_s: float,
    stopped: Callable[[], bool],
    allowed: bytes | None,
) -> None:
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(
        target=_compile, args=(sender, tokenizer_info, kind, spec, allowed), daemon=True
    )
    child.start()  # the first start waits for the forkserver, outside the deadline
    sender.close()  # the child holds its own end; EOF here means it died
    deadline = time.monotonic() + timeout_s
    _running.add(child.pid or 0)
    try:
        if not _wait(lambda: receiver.poll(POLL_S), deadline, stopped):
            child.kill()
            raise CompileCancelled if stopped() else CompileTimeout
        try:
            status, payload = receiver.recv()
        except EOFError:
            raise CompileFailed("The grammar compiler stopped unexpectedly.") from None
        if status == "empty":
            raise CannotMatch
        if status != "ok":
            raise CompileFailed(payload)
    finally:
        receiver.close()
        child.join()
        _running.discard(child.pid or 0)


def running() -> set[int]:
    """The compile processes alive now (their pids)."""
    return set(_running)


def _wait(ready: Callable[[], bool], deadline: float, stopped: Callable[[], bool]) -> bool:
    """Calls `ready` (which blocks up to POLL_S) until it is true, or the deadline passes or
    the caller stops waiting (False)."""
    while not stopped():
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
    return False


def _compile(
    out: Connection, tokenizer_info: str, kind: str, spec: str, allowed: bytes | None
) -> None:
    """In the child: compile, then send ("ok", ""), ("empty", "") when no first token is
    allowed, or ("error", xgrammar's message)."""
    try:
        info = xgr.TokenizerInfo.deserialize_json(tokenizer_info)
        compiler = xgr.GrammarCompiler(info, max_threads=COMPILE_THREADS, cache_enabled=False)
        compiled = compile_with(compiler, kind, spec)
        out.send(("ok", "") if can_start(compiled, info.vocab_size, allowed) else ("empty", ""))
    except RuntimeError as exc:
        out.send(("error", library_message(exc)))
    finally:
        out.close()


def library_message(exc: Exception) -> str:
    # xgrammar prefixes its messages with a timestamp and a source location.
    text = str(exc).strip()
    if ": " in text and text.startswith("["):
        text = text.split(": ", 1)[1]
    return text.splitlines()[0] if text else "The constraint does not compile."
