"""All configuration, read from the environment (and a `.env` file if present)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Storage and queue. Unset means the embedded defaults: SQLite and a filesystem broker,
    # both under DATA_DIR, so `make run` needs no server.
    data_dir: Path = Path("data")
    database_url: str | None = None
    celery_broker_url: str | None = None
    celery_queue: str = "adaptd"

    # Model. BASE_MODEL is the packaged default's short name, a local folder or a hub id.
    base_model: str = DEFAULT_BASE_MODEL
    model_cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "adaptd")
    device: str | None = None  # "cpu", "cuda", "cuda:1"; unset picks CUDA when present
    # The built-in engine's weights, adapters and caches: auto is bf16 on CUDA and on CPUs
    # with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Supervised training's forward passes on CPU: "bfloat16" runs them under bf16 autocast
    # (weights, gradients and optimiser stay fp32), "auto" does so on CPUs with native bf16,
    # "off" keeps fp32. DPO stays fp32 (not measured under autocast). On CUDA the training
    # weights are bf16 already and this is ignored.
    train_autocast: Literal["auto", "off", "bfloat16"] = "auto"
    # Token positions one training forward pass may hold (rows x padded width): a step's
    # batch runs in micro-batches under it, gradients accumulated, so the worker's memory
    # follows it, not batch_size; jobs whose single example (DPO: pair) exceeds it are refused.
    # 4096: about 10 GiB peak for the default model in fp32 (docs/benchmarks.md).
    train_microbatch_tokens: int = Field(default=4096, ge=64)

    port: int = 8000
    adaptd_admin_key: str | None = None

    # Serving engine.
    max_batch_size: int = 16
    batch_wait_ms: float = 5.0
    max_queue: int = 256
    max_loaded_adapters: int = 8
    prefix_cache_entries: int = 16
    # Prompt tokens one engine step may prefill; a longer prompt is prefilled a chunk per
    # step between the running rows' decode steps, at most this many tokens (fewer while
    # other requests run: engine/chunked.ChunkPacer) (0: every prompt in one forward).
    prefill_chunk: int = 512
    # A stream looks its API key up again this often (seconds), and ends once the key is
    # revoked, expired or rotated out.
    stream_key_recheck_s: float = 5.0

    # Which engine serves inference: the built-in one, or vLLM servers (app/engine/vllm/).
    engine: Literal["local", "vllm"] = "local"
    # Comma-separated vLLM OpenAI servers; unset with ENGINE=vllm, `make run` starts one.
    vllm_urls: str | None = None
    vllm_api_key: str | None = None  # the servers' --api-key, if they were started with one
    # Where vLLM finds the adapter store (a shared mount may sit elsewhere on its machines);
    # unset: the same path as ADAPTER_STORE.
    vllm_adapter_store: Path | None = None
    vllm_venv: Path = Path(".venv-vllm")  # for the server `make run` and the tests start
    vllm_port: int = 8100
    vllm_dtype: str = "auto"
    vllm_max_loras: int = 4
    vllm_max_lora_rank: int = 64
    vllm_kvcache_gib: int = 2
    vllm_health_interval_s: float = 2.0
    vllm_timeout_s: float = 120.0  # no byte from a server for this long: it counts as down
    vllm_affinity: int = 2  # servers an adapter or template prefix is spread over

    # Adapter files: any folder, e.g. a shared mount that workers, API replicas and vLLM
    # servers all see; unset: DATA_DIR/adapters.
    adapter_store: Path | None = None

    # Limits for untrusted input.
    max_tokens_cap: int = 4096
    # Token positions one generation request may occupy in the engine: over all its sequences
    # (prompts x n), prompt tokens plus max_tokens, and its label rows (a prompt plus a label
    # each). Bigger asks are refused with a 400.
    max_request_tokens: int = 65536
    # Label scores (`choice` with logprobs) run one forced row per label and prompt; its
    # rows count toward MAX_REQUEST_TOKENS. Label tokens one request may score (labels x
    # their tokens x prompts; a prompt's n choices share its scores): 400 above.
    max_label_tokens: int = 1024
    # A request's label rows in the engine at once: the rest go in as these finish, behind
    # other requests' work, so a long label list never fills the queue or the batch.
    label_rows_in_flight: int = 8
    max_body_bytes: int = 4 * 1024 * 1024
    # Structured outputs: a schema (compact JSON), regex or choice list longer than this, or a
    # schema with more JSON values, is refused with a 400 before any compile work.
    grammar_max_bytes: int = 32 * 1024
    grammar_max_nodes: int = 2048
    # A grammar still compiling after this long is stopped (its process killed) and refused.
    grammar_compile_timeout_s: float = 10.0
    max_upload_bytes: int = 64 * 1024 * 1024
    rate_limit_per_minute: int = 1200  # per API key; 0 disables the limit
    max_active_jobs_per_tenant: int = 4

    # Fine-tuning jobs whose worker stopped reporting for this long are failed or retried.
    job_heartbeat_timeout_s: float = 120.0
    # How often the reaper (a thread in the API and in each worker) looks for such jobs.
    job_reaper_interval_s: float = 15.0
    # A job still `queued` this long after it was sent is sent again (a lost broker message,
    # e.g. Redis restarted); duplicates are harmless, the task is idempotent.
    job_queue_resend_s: float = 600.0
    # Runs per job (first try included) before a lost worker fails it for good.
    job_max_attempts: int = 2

    # Prometheus text on its own port, no key (else GET /metrics with a platform admin key).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_sample_interval_s: float = 1.0

    # SIGTERM: keep serving with /readyz at 503 for SHUTDOWN_DRAIN_S, then stop listening and
    # give requests in flight (streams included) up to SHUTDOWN_GRACE_S to finish.
    shutdown_drain_s: float = 0.0
    shutdown_grace_s: float = 30.0

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'adaptd.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.celery_broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def adapters_dir(self) -> Path:
        return self.adapter_store or self.data_dir / "adapters"

    @property
    def vllm_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in (self.vllm_urls or "").split(",") if u.strip()]

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin_key"

    def admin_key(self) -> str | None:
        """The bootstrap admin key: from the environment, else the one `make run` generated."""
        if self.adaptd_admin_key:
            return self.adaptd_admin_key
        if self.admin_key_file.exists():
            return self.admin_key_file.read_text().strip() or None
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
