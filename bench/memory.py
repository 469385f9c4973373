"""Peak memory during a benchmark phase: one process's resident memory (and the CUDA
allocator's peak), and device-wide GPU memory in use."""

import os
import threading
import time
from pathlib import Path


class PeakMemory:
    """Samples this process's (or another's) resident memory, and the CUDA allocator's peak."""

    def __init__(self, pid: int | None = None, device: str = "cpu") -> None:
        self.pid = pid or os.getpid()
        self.device = device
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda") and self.pid == os.getpid():
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        out = {"peak_rss_mib": round(self.peak_rss / 2**20, 1)}
        if self.device.startswith("cuda") and self.pid == os.getpid():
            import torch

            out["peak_cuda_alloc_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


class DeviceMemory:
    """Peak device-wide GPU memory in use during a block, less what was in use before any
    phase started (this process's own CUDA context): covers the server and the phase
    processes alike, allocator caches and contexts included."""

    baseline = 0

    def __init__(self, device: str) -> None:
        self.enabled = device.startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def used() -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            time.sleep(0.02)

    def __enter__(self) -> "DeviceMemory":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def report(self) -> dict:
        if not self.enabled:
            return {}
        return {"peak_gpu_used_mib": round((self.peak - self.baseline) / 2**20, 1)}
