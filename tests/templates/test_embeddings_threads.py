"""The similar_k encoder must not slow the engine's decoding down for the rest of the process.

PyTorch's CPU wheels use GNU OpenMP: every thread that runs a multi-threaded op keeps a pool
of worker threads until it ends, and once a process holds more such workers than CPUs,
libgomp stops spin-waiting (100 spins instead of ~300,000), so the engine's workers sleep
after each of its ~200 parallel matmuls per decode step and every one pays a futex wake-up.
A request thread that encoded examples and kept its pool would leave the engine in that mode
for good. Checked in a fresh process (pytest's own threads may hold pools already), by the
process's voluntary context switches while an engine stand-in runs parallel ops: about
two per op when throttled, a few in all when not.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import torch
from app import embeddings

torch.set_num_threads(2)
w, x = torch.randn(1536, 576), torch.randn(1, 576)
OPS = 400

def sleeps() -> int:
    # Voluntary switches (threads going to sleep) over OPS parallel matmuls: an engine decode
    # step runs about 200.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    for _ in range(OPS):
        torch.nn.functional.linear(x, w)
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before

engine = ThreadPoolExecutor(1)  # stands in for the engine's scheduler thread
requests = ThreadPoolExecutor(1)  # a request thread that lives on, as the server's do
baseline = min(engine.submit(sleeps).result() for _ in range(3))
requests.submit(embeddings.embed, ["a kitten is a young cat", "bond yields rose"]).result()
time.sleep(0.2)  # a finished thread's pool goes in its exit, just after join returns
after = min(engine.submit(sleeps).result() for _ in range(3))
print(baseline, after, OPS)
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: OpenMP always throttles")
def test_encoding_leaves_no_openmp_pool_behind() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    baseline, after, ops = (int(v) for v in out.stdout.split()[-3:])
    if baseline >= ops // 2:
        pytest.skip(f"throttled before any encoding ({baseline} sleeps in {ops} ops)")
    assert after < ops // 2, f"{after} sleeps in {ops} parallel ops after encoding"
