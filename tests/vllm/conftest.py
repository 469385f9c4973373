"""A real vLLM CPU server (its own venv, .venv-vllm) on the default model in float32, started
once per session, and both engines on the default model for the conformance tests.

Without .venv-vllm the tests are skipped, except under CI, where `make test` installs it
and its absence is a failure.
"""

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from app.engine.engine import Engine
from app.engine.loader import resolve_source
from app.engine.vllm.engine import VllmConfig, VllmEngine
from app.engine.vllm.launch import server_command, vllm_python, wait_ready
from app.ids import new_id
from app.settings import DEFAULT_BASE_MODEL, Settings
from tests.conftest import clean_database, free_port, reset_caches
from tests.registry_util import add_adapter_row

BOOT_TIMEOUT_S = 900  # a cold start on a busy 2-core machine takes minutes


def _settings() -> Settings:
    return Settings(base_model=DEFAULT_BASE_MODEL, vllm_kvcache_gib=1, vllm_max_loras=4)


class VllmProcess:
    """One vLLM server process (and its engine-core children, in their own process group)."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"vllm-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "VllmProcess":
        argv, env = server_command(_settings(), self.port, dtype="float32")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait:
            self.wait()
        return self

    def wait(self) -> None:
        assert self.proc is not None
        try:
            wait_ready(self.url, BOOT_TIMEOUT_S, self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}; log tail:\n{self.log.read_text()[-3000:]}") from exc

    def kill(self) -> None:
        """SIGKILL to the whole group: the server dies as in a crash, children included."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def _need_vllm() -> None:
    if not vllm_python(_settings()).exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-vllm is missing: `make test` installs it (make install-vllm)")
        pytest.skip(".venv-vllm is missing: run `make install-vllm`")


@pytest.fixture(scope="session")
def default_source() -> str:
    return resolve_source(DEFAULT_BASE_MODEL, _settings().model_cache)


@pytest.fixture(scope="session")
def vllm_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm-logs")


@pytest.fixture(scope="session")
def vllm_server(default_source: str, vllm_logs: Path) -> Iterator[VllmProcess]:
    """TEST_VLLM_URL: use a server already running (started with --dtype float32 on the
    default model and LoRA enabled) instead of starting one."""
    if os.environ.get("TEST_VLLM_URL"):
        server = VllmProcess(vllm_logs)
        server.url = os.environ["TEST_VLLM_URL"].rstrip("/")
        yield server
        return
    _need_vllm()
    server = VllmProcess(vllm_logs).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_view(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapter store under another path, as a vLLM machine would mount it
    (VLLM_ADAPTER_STORE)."""
    store = data_root / "adapters"
    store.mkdir(parents=True, exist_ok=True)
    view = tmp_path_factory.mktemp("mounts") / "adapters-as-vllm-sees-them"
    view.symlink_to(store, target_is_directory=True)
    return view


def make_vllm_engine(
    source: str, urls: list[str], data_root: Path, view: Path, **config
) -> VllmEngine:
    engine = VllmEngine(
        source,
        DEFAULT_BASE_MODEL,
        VllmConfig(
            urls=urls,
            adapter_store=data_root / "adapters",
            vllm_adapter_store=view,
            health_interval_s=0.5,
            **config,
        ),
    )
    engine.start()
    return engine


@pytest.fixture(scope="session")
def vllm_engine(vllm_server, default_source, data_root, vllm_view) -> Iterator[VllmEngine]:
    engine = make_vllm_engine(default_source, [vllm_server.url], data_root, vllm_view)
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def local_engine(default_engine: Engine) -> Engine:
    return default_engine  # the one built-in engine on the default model (tests/conftest.py)


@pytest.fixture(params=["local", "vllm"])
def backend(request: pytest.FixtureRequest):  # the engine under test
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture(scope="session")
def peft_adapter_files(default_source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the default model built with peft, its weights large enough to
    change greedy answers."""
    base = AutoModelForCausalLM.from_pretrained(default_source)
    torch.manual_seed(7)
    config = LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    folder = tmp_path_factory.mktemp("peft") / "adapter"
    get_peft_model(base, config).save_pretrained(str(folder))
    return folder


@pytest.fixture
def register_adapter(settings_env: Settings, peft_adapter_files: Path) -> Callable[[str, str], str]:
    """Puts the adapter's files into the store and its row into the registry, as a finished
    job does; returns its `ft:` name."""

    def register(tenant: str, suffix: str) -> str:
        job = new_id("ftjob-", 6)
        folder = settings_env.adapters_dir / job
        folder.mkdir(parents=True)
        for f in peft_adapter_files.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        name = f"ft:{DEFAULT_BASE_MODEL}:{suffix}:{job}"
        add_adapter_row(tenant, name, job, DEFAULT_BASE_MODEL)
        return name

    return register


@pytest.fixture
def app(settings_env, backend, monkeypatch: pytest.MonkeyPatch):
    """The app on the backend under test and the default model (overrides the tiny one)."""
    from app.main import create_app
    from app.settings import get_settings

    monkeypatch.setenv("BASE_MODEL", DEFAULT_BASE_MODEL)
    reset_caches()
    clean_database()
    return create_app(engine=backend, settings=get_settings())
