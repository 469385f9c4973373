"""Peak memory of the API process for one upload at the size limit (MAX_UPLOAD_BYTES).

Each case starts a fresh server (uvicorn, SQLite, the default base model's tokenizer for
token counting), reads its resident memory from /proc, uploads one generated file that
fills the request limit, and reads the process's peak (VmHWM) and resident memory after.

    .venv/bin/python -m bench.upload_memory [--case invalid|valid|...]
"""

import argparse
import json
from pathlib import Path

import httpx

from app.settings import Settings
from bench.server import Server

MULTIPART_ROOM = 4096  # the form's framing and the purpose field count against the limit too


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def fill(line: bytes, size: int) -> bytes:
    """Whole copies of `line` up to `size` bytes."""
    return line * (size // len(line))


def cases(size: int) -> dict[str, bytes]:
    chat = {
        "messages": [
            {"role": "user", "content": "Classify the sentiment: a film of quiet wit. " * 2},
            {"role": "assistant", "content": "positive"},
        ]
    }
    return {
        # The hostile probe's file: short lines, each one a problem.
        "invalid": fill(b"x\n", size),
        # Every line a valid example: what is normalised and stored.
        "valid": fill(json.dumps(chat).encode() + b"\n", size),
    }


def measure(name: str, data: bytes) -> dict[str, object]:
    with Server() as server:
        pid = server.proc.pid
        before = status_kib(pid, "VmRSS")
        r = httpx.post(
            f"{server.url}/v1/files",
            headers=server.headers,
            files={"file": (f"{name}.jsonl", data)},
            data={"purpose": "fine-tune"},
            timeout=3600,
        )
        body = r.json()
        answer = body["error"]["message"][:90] if r.status_code != 200 else body["id"]
        return {
            "case": name,
            "file_mib": round(len(data) / 2**20, 1),
            "status": r.status_code,
            "answer": answer,
            "rss_before_mib": round(before / 1024),
            "peak_mib": round(status_kib(pid, "VmHWM") / 1024),
            "rss_after_mib": round(status_kib(pid, "VmRSS") / 1024),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", action="append", help="invalid, valid (default: both)")
    args = parser.parse_args()
    size = Settings().max_upload_bytes - MULTIPART_ROOM
    files = cases(size)
    for name in args.case or list(files):
        print(json.dumps(measure(name, files[name])), flush=True)


if __name__ == "__main__":
    main()
