"""Token counting for upload validation, with the tokenizer and template the server uses."""

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from app.engine.loader import resolve_source, window_of
from app.engine.prompts import encode, render_chat
from app.files.validation import TokenCounter
from app.settings import get_settings


@lru_cache(maxsize=2)
def _tokenizer_for(base_model: str, cache: str) -> tuple[PreTrainedTokenizerBase, int]:
    source = resolve_source(base_model, Path(cache))
    window = window_of(AutoConfig.from_pretrained(source))
    return AutoTokenizer.from_pretrained(source), window


def tokenizer_and_window(request: Request) -> tuple[PreTrainedTokenizerBase, int]:
    """The loaded engine's tokenizer when it is up, else the base model's, loaded once."""
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        return engine.tokenizer, engine.context_window
    settings = get_settings()
    return _tokenizer_for(settings.base_model, str(settings.model_cache))


def token_counter(tokenizer: PreTrainedTokenizerBase) -> TokenCounter:
    def count(messages: list[dict[str, Any]]) -> int:
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        return len(encode(tokenizer, render_chat(tokenizer, plain, add_generation_prompt=False)))

    return count
