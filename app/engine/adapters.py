"""LoRA adapters loaded into the one base model on first use, least recently used evicted."""

import contextlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel

from app.errors import APIError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterRef:
    name: str  # unique: the registry's ft: name
    path: Path


class AdapterLoadError(APIError):
    status_code = 500
    type = "server_error"
    code = "adapter_unavailable"


class AdapterCache:
    """Owns the peft wrapper around the base model. Not thread-safe by itself: the engine's
    scheduler thread is its only caller, apart from `forget`, which takes the lock."""

    def __init__(self, base: PreTrainedModel, capacity: int) -> None:
        self.base = base
        self.capacity = max(1, capacity)
        self.peft: PeftModel | None = None
        self._loaded: OrderedDict[str, AdapterRef] = OrderedDict()
        self._lock = threading.Lock()
        self._pending_unload: set[str] = set()

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def ensure(self, ref: AdapterRef) -> None:
        """Make `ref` resident, loading it (and evicting the oldest) when needed."""
        self._apply_pending_unloads()
        if ref.name in self._loaded:
            self._loaded.move_to_end(ref.name)
            return
        if not (ref.path / "adapter_config.json").exists():
            raise AdapterLoadError(f"Adapter files for '{ref.name}' are missing.", param="model")
        while len(self._loaded) >= self.capacity:
            oldest, _ = self._loaded.popitem(last=False)
            self._unload(oldest)
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(
                    self.base, str(ref.path), adapter_name=ref.name
                )
            else:
                self.peft.load_adapter(str(ref.path), adapter_name=ref.name)
            self.peft.eval()
        except Exception as exc:  # corrupt files: fail this request only
            log.warning("adapter %s failed to load: %s", ref.name, type(exc).__name__)
            self._drop_partial(ref.name)
            raise AdapterLoadError(
                f"Adapter '{ref.name}' could not be loaded: its files are corrupt.", param="model"
            ) from exc
        self._loaded[ref.name] = ref

    def forget(self, name: str) -> None:
        """Called from any thread when an adapter is deleted; applied before the next use."""
        with self._lock:
            self._pending_unload.add(name)

    def _apply_pending_unloads(self) -> None:
        with self._lock:
            names, self._pending_unload = self._pending_unload, set()
        for name in names:
            if name in self._loaded:
                del self._loaded[name]
                self._unload(name)

    def _unload(self, name: str) -> None:
        if self.peft is not None and name in self.peft.peft_config:
            self.peft.delete_adapter(name)

    def _drop_partial(self, name: str) -> None:
        with contextlib.suppress(Exception):  # best effort after a failed load
            self._unload(name)
