"""LoRA adapters loaded into the one base model on first use, least recently used evicted."""

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from app.errors import APIError

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@dataclass(frozen=True)
class AdapterRef:
    name: str  # unique: the registry's ft: name
    path: Path


def peft_label(name: str) -> str:
    """The name the adapter has inside peft: registry names may hold '.', which torch module
    names cannot, so peft sees a stable digest instead."""
    return "adapter" + hashlib.sha256(name.encode()).hexdigest()[:16]


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
        # Called (on the scheduler thread) with the name of each adapter that was deleted.
        self.on_forget: list[Callable[[str], None]] = []
        self.loads = 0  # how many times files were read: eviction shows as a reload
        # Per-row adapter names for the forward pass in progress, handed to every LoRA layer
        # by hooks installed once per load (peft's own `adapter_names=` path installs and
        # removes a hook on every module at every forward, which costs more than the LoRA
        # arithmetic itself at decode time).
        self._row_labels: list[str] | None = None
        self._hooks: list = []

    @contextlib.contextmanager
    def rows(self, labels: list[str]) -> Iterator[None]:
        """Within this block, a forward of the base model applies labels[i]'s LoRA weights
        to row i (BASE: none), through peft's mixed-adapter batch code."""
        self._row_labels = labels
        try:
            yield
        finally:
            self._row_labels = None

    def _inject_labels(self, module, args, kwargs):  # noqa: ANN001, ANN202
        if self._row_labels is not None:
            kwargs["adapter_names"] = self._row_labels
        return args, kwargs

    def _rehook(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = [
            module.register_forward_pre_hook(self._inject_labels, with_kwargs=True)
            for module in self.base.modules()
            if isinstance(module, LoraLayer)
        ]

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    @property
    def has_adapters(self) -> bool:
        return self.peft is not None and bool(self.peft.peft_config)

    def ensure(self, ref: AdapterRef, pinned: frozenset[str] | set[str] = frozenset()) -> bool:
        """Make `ref` resident, loading it (and evicting the least recently used adapter that
        no running row needs) when needed. False: every slot is pinned, try again later."""
        self.apply_pending_unloads(pinned)
        if ref.name in self._loaded:
            self._loaded.move_to_end(ref.name)
            return True
        if not (ref.path / "adapter_config.json").exists():
            raise AdapterLoadError(f"Adapter files for '{ref.name}' are missing.", param="model")
        while len(self._loaded) >= self.capacity:
            victim = next((n for n in self._loaded if n not in pinned), None)
            if victim is None:
                return False
            del self._loaded[victim]
            self._unload(victim)
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(
                    self.base, str(ref.path), adapter_name=peft_label(ref.name)
                )
            else:
                self.peft.load_adapter(str(ref.path), adapter_name=peft_label(ref.name))
            # peft keeps a stale active adapter after deleting the last one; point it at a
            # live one so its forward hooks work (rows still pick theirs via adapter_names).
            if self.peft.active_adapter not in self.peft.peft_config:
                self.peft.set_adapter(peft_label(ref.name))
            self.peft.eval()
        except Exception as exc:  # corrupt files: fail this request only
            log.warning("adapter %s failed to load: %s", ref.name, type(exc).__name__)
            self._drop_partial(ref.name)
            raise AdapterLoadError(
                f"Adapter '{ref.name}' could not be loaded: its files are corrupt.", param="model"
            ) from exc
        self.loads += 1
        self._loaded[ref.name] = ref
        self._rehook()
        return True

    def forget(self, name: str) -> None:
        """Called from any thread when an adapter is deleted; applied before the next use."""
        with self._lock:
            self._pending_unload.add(name)

    def apply_pending_unloads(self, pinned: frozenset[str] | set[str] = frozenset()) -> None:
        """Unload deleted adapters; one still used by a running row waits until it is not."""
        with self._lock:
            names = self._pending_unload - set(pinned)
            self._pending_unload -= names
        for name in names:
            if name in self._loaded:
                del self._loaded[name]
                self._unload(name)
            for listener in self.on_forget:
                listener(name)

    def nbytes(self, name: str) -> int:
        """Bytes of the adapter's weights held in memory."""
        if self.peft is None:
            return 0
        part = f".{peft_label(name)}."
        return sum(
            p.numel() * p.element_size() for n, p in self.peft.named_parameters() if part in n
        )

    def _unload(self, name: str) -> None:
        label = peft_label(name)
        if self.peft is not None and label in self.peft.peft_config:
            self.peft.delete_adapter(label)
            self._rehook()

    def _drop_partial(self, name: str) -> None:
        with contextlib.suppress(Exception):  # best effort after a failed load
            self._unload(name)
