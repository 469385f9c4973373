"""A local vLLM OpenAI server on the prepared base model, in vLLM's own virtual environment.

`make run` with ENGINE=vllm and no VLLM_URLS starts one through scripts/run.sh; the tests and
bench/serve.py start theirs with `server_command`.

    python -m app.engine.vllm.launch --port 8100      # runs the server (exec)
    python -m app.engine.vllm.launch --wait http://127.0.0.1:8100
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from transformers import AutoConfig

from app.engine.loader import model_name, resolve_source, window_of
from app.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[3]
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}


def vllm_python(settings: Settings) -> Path:
    venv = settings.vllm_venv if settings.vllm_venv.is_absolute() else ROOT / settings.vllm_venv
    return venv / "bin" / "python"


def server_command(
    settings: Settings, port: int, *, host: str = "127.0.0.1", dtype: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a vLLM server for BASE_MODEL."""
    source = resolve_source(settings.base_model, settings.model_cache)
    window = window_of(AutoConfig.from_pretrained(source))  # the engines' own window
    argv = [
        str(vllm_python(settings)),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        source,
        "--served-model-name",
        model_name(settings.base_model),
        "--host",
        host,
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        str(settings.vllm_max_loras),
        "--max-lora-rank",
        str(settings.vllm_max_lora_rank),
        "--max-model-len",
        str(window),
        "--dtype",
        dtype or settings.vllm_dtype,
        # Structured outputs as the built-in engine runs them: xgrammar (so both engines
        # accept the same schemas) and compact JSON (free whitespace lets a small model loop).
        "--structured-outputs-config",
        json.dumps(STRUCTURED_OUTPUTS_CONFIG),
    ]
    if settings.vllm_api_key:
        argv += ["--api-key", settings.vllm_api_key]
    env = {
        **os.environ,
        # Adapters are loaded while the server runs, the moment a job's adapter is first used.
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": str(settings.vllm_kvcache_gib),
    }
    env.pop("PYTHONPATH", None)  # the server runs vLLM's environment, not the project's
    return argv, env


def start_server(
    settings: Settings, port: int, log_file: Path, *, dtype: str | None = None
) -> subprocess.Popen:
    argv, env = server_command(settings, port, dtype=dtype)
    with open(log_file, "ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"vLLM at {url} did not become ready in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dtype")
    parser.add_argument("--wait", metavar="URL", help="wait until this server answers")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    settings = get_settings()
    if args.wait:
        wait_ready(args.wait, args.timeout)
        return
    python = vllm_python(settings)
    if not python.exists():
        sys.exit(f"{python} is missing: run `make install-vllm` first")
    argv, env = server_command(
        settings, args.port or settings.vllm_port, host=args.host, dtype=args.dtype
    )
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
