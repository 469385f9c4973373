"""LoRA adapters loaded into the one base model on first use, least recently used evicted.

In a mixed batch each LoRA linear layer adds every adapter's low-rank update to that adapter's
rows only. peft's own `adapter_names=` path does this too, but works out the rows again from a
Python list in every layer (120 layers in the default model) and indexes with that list, a
host-to-device copy on a GPU each time. Here the rows of each adapter are worked out once per
forward pass (`RowPlan`), as a slice where they are contiguous or an index tensor already on
the device, and each layer reuses them. Adapters that use a peft variant (DoRA and the like)
go through peft's path unchanged.

Per adapter group that is about six small ops per layer, and at a decode step (one position per
row) each op's fixed cost, not its arithmetic, is much of what it costs. So when a decode step
holds rows of two or more adapters, each layer instead uses its `LoraStack`: every loaded
adapter's A side by side (padded to the largest rank with zeros) and B likewise with the scale
folded in. One matmul gives every row every adapter's low-rank activations, a per-row mask made
once per forward (`RowPlan.mask`) zeroes all but the row's own adapter's, and a second matmul
gives the update: six ops per layer whatever the number of adapters. Its matmuls do every
loaded adapter's arithmetic for every row (adapters not in the batch included), so prefill (many
positions per row) and one-adapter batches keep the per-group path (bench/lora_paths.py measures
both, and --loaded 8 the cost of loaded adapters outside the batch). Gathering each row's A and
B for a batched matmul instead costs more than the masked matmuls on CPU: the gather copies the
weights of every row in every layer. The stacks are a second copy of the loaded adapters'
weights (padded), rebuilt on every load and unload; `nbytes` counts peft's copy only.
"""

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from app.engine.errors import AdapterLoadError

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch
# The most positions per row (tokens in this forward) for which "auto" takes the stacked path:
# decode steps. At 64 positions its wasted arithmetic costs more than the ops it saves.
STACKED_MAX_POSITIONS = 1


@dataclass(frozen=True)
class AdapterRef:
    name: str  # unique: the registry's ft: name
    path: Path


def peft_label(name: str) -> str:
    """The name the adapter has inside peft: registry names may hold '.', which torch module
    names cannot, so peft sees a stable digest instead."""
    return "adapter" + hashlib.sha256(name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RowPlan:
    """Which rows of the forward pass in progress take which adapter."""

    labels: list[str]  # per row, BASE for none: what peft's own path is given
    groups: list[tuple[str, slice | torch.Tensor]]  # per adapter in the batch: its rows
    use_peft: bool  # some adapter in the batch needs peft's own code
    # (rows, slots * rank): 1 in the columns of the row's adapter's slot in every `LoraStack`,
    # 0 elsewhere (all 0 for base rows). None: use the per-group path.
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class LoraStack:
    """One LoRA layer's loaded adapters side by side, in `AdapterCache.slots` order: slot s
    holds columns s*rank to (s+1)*rank, zero past the adapter's own rank and for an adapter
    that does not target this layer."""

    a: torch.Tensor  # (in_features, slots * rank)
    b: torch.Tensor  # (slots * rank, out_features), each adapter's scale folded in


def adapter_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype LoRA weights are held in: the model's, except bf16 on CPU. There oneDNN's bf16
    matmuls at LoRA's shapes (rank 8 to 64, a few rows) cost over 3x fp32's, casts included
    (measured here: 72 us against 20 us for a rank-16 update of one row), so the adapters stay
    fp32 and only their update is cast to the model's dtype."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        return torch.float32
    return dtype


def plan_rows(labels: list[str], device: torch.device, use_peft: bool = False) -> RowPlan:
    rows: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label != BASE:
            rows.setdefault(label, []).append(i)
    groups: list[tuple[str, slice | torch.Tensor]] = []
    for label, idx in rows.items():
        if idx[-1] - idx[0] + 1 == len(idx):  # contiguous: a view, no gather or scatter
            groups.append((label, slice(idx[0], idx[-1] + 1)))
        else:
            groups.append((label, torch.tensor(idx, dtype=torch.long, device=device)))
    return RowPlan(labels, groups, use_peft)


def slot_mask(
    labels: list[str], slots: list[str], rank: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """`RowPlan.mask` for rows `labels` (BASE or a label in `slots`)."""
    index = {label: s for s, label in enumerate(slots)}
    mask = torch.zeros(len(labels), len(slots), rank, dtype=dtype)
    for i, label in enumerate(labels):
        if label != BASE:
            mask[i, index[label]] = 1
    return mask.view(len(labels), -1).to(device)


def stack_lora(module: LoraLinear, slots: list[str], rank: int, dtype: torch.dtype) -> LoraStack:
    """`module`'s `LoraStack` for adapters `slots`, padded to `rank`."""
    weight = module.base_layer.weight
    a = weight.new_zeros((module.in_features, len(slots), rank), dtype=dtype)
    b = weight.new_zeros((len(slots), rank, module.out_features), dtype=dtype)
    for s, label in enumerate(slots):
        if label not in module.lora_A:  # this adapter does not target this layer
            continue
        lora_a, lora_b = module.lora_A[label].weight, module.lora_B[label].weight
        r = lora_a.shape[0]
        a[:, s, :r] = lora_a.T
        b[s, :r] = lora_b.T * module.scaling[label]
    return LoraStack(a.view(module.in_features, -1), b.view(-1, module.out_features))


def stacked_lora_forward(
    module: LoraLinear, stack: LoraStack, x: torch.Tensor, plan: RowPlan, *args: Any
) -> torch.Tensor:
    """`grouped_lora_forward`'s result with two matmuls for all rows and adapters at once."""
    assert plan.mask is not None
    result = module.base_layer(x, *args)
    # Plain 2-D matmuls on (rows x positions, features): at a decode step's shapes a 3-D
    # matmul's batching costs more than its arithmetic (bench/lora_paths.py).
    flat = x.reshape(-1, x.shape[-1])
    h = torch.mm(flat if flat.dtype == stack.a.dtype else flat.to(stack.a.dtype), stack.a)
    # Keep each row's own adapter's activations only (the mask broadcasts over positions).
    rows = plan.mask.shape[0]
    h.view(rows, -1, h.shape[-1]).mul_(plan.mask.unsqueeze(1))
    add_update(result.view(-1, result.shape[-1]), h, stack.b)
    return result


def add_update(out: torch.Tensor, h: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> None:
    """out += scale * (h @ b), in place; `out` may hold a lower precision than h and b."""
    if out.dtype == h.dtype:
        out.addmm_(h, b, alpha=scale)
    else:
        out.add_(torch.mm(h, b).to(out.dtype), alpha=scale)


def grouped_lora_forward(
    module: LoraLinear, x: torch.Tensor, plan: RowPlan, *args: Any
) -> torch.Tensor:
    """The base layer for every row, plus each adapter's scaled update on its own rows."""
    result = module.base_layer(x, *args)
    for label, rows in plan.groups:
        if label not in module.lora_A:  # this adapter does not target this layer
            continue
        a, b = module.lora_A[label].weight, module.lora_B[label].weight  # (r, in), (out, r)
        part = x[rows] if isinstance(rows, slice) else x.index_select(0, rows)
        part = part.reshape(-1, part.shape[-1])
        if part.dtype != a.dtype:  # adapters may be held in float32 (`adapter_dtype`)
            part = part.to(a.dtype)
        h = torch.mm(part, a.t())  # eval mode: dropout is off
        scale = module.scaling[label]
        bias = module.lora_B[label].bias  # lora_bias=True adapters have one
        if isinstance(rows, slice):
            # A slice of whole rows of a contiguous result: a view, updated in place.
            target = result[rows].view(-1, result.shape[-1])
            add_update(target, h, b.t(), scale)
            if bias is not None:
                target.add_(bias.to(target.dtype), alpha=scale)
        else:
            update = torch.mm(h, b.t())
            if bias is not None:
                update += bias
            update = update.to(result.dtype).view(-1, *result.shape[1:])
            result.index_add_(0, rows, update, alpha=scale)
    return result


class AdapterCache:
    """Owns the peft wrapper around the base model. Not thread-safe by itself: the engine's
    scheduler thread is its only caller, apart from `forget`, which takes the lock."""

    def __init__(
        self, base: PreTrainedModel, capacity: int, dtype: torch.dtype | None = None
    ) -> None:
        self.base = base
        # The dtype adapter weights are held in (`adapter_dtype`): peft's own choice depends
        # on the files and on its training-minded upcasting, so it is set here.
        self.dtype = dtype or next(base.parameters()).dtype
        self.capacity = max(1, capacity)
        self.peft: PeftModel | None = None
        self._loaded: OrderedDict[str, AdapterRef] = OrderedDict()
        self._lock = threading.Lock()
        self._pending_unload: set[str] = set()
        # Called (on the scheduler thread) with the name of each adapter that was deleted.
        self.on_forget: list[Callable[[str], None]] = []
        self.loads = 0  # how many times files were read: eviction shows as a reload
        self.hits = 0  # ensure() calls that found the adapter resident
        self.evictions = 0  # adapters unloaded to make room (not deletions)
        # The rows of each adapter in the forward pass in progress, read by every LoRA layer
        # through a forward installed once per load (peft's own `adapter_names=` path adds
        # and removes a hook on every module at every forward).
        self._plan: RowPlan | None = None
        self._variant_labels: set[str] = set()  # adapters that need peft's own code
        # The stacked path (see the module docstring): "auto" takes it for decode steps with
        # rows of two or more adapters, where it is faster (bench/lora_paths.py); the others
        # force a path (tests, benchmarks).
        self.lora_path: Literal["auto", "grouped", "stacked"] = "auto"
        self.slots: list[str] = []  # labels of the adapters in every layer's LoraStack
        self.stack_rank = 0  # columns per slot: the largest rank loaded
        self._stacks: dict[LoraLinear, LoraStack] = {}

    @contextlib.contextmanager
    def rows(self, labels: list[str], device: torch.device, positions: int) -> Iterator[None]:
        """Within this block, a forward of the base model applies labels[i]'s LoRA weights
        to row i (BASE: none); `positions`: tokens per row in that forward (1: a decode step),
        which, with the adapters in the batch, picks the LoRA path once for every layer."""
        use_peft = not self._variant_labels.isdisjoint(labels)
        plan = plan_rows(labels, device, use_peft)
        if not use_peft and self._stacks and self._stacked(plan, positions):
            mask = slot_mask(labels, self.slots, self.stack_rank, self.dtype, device)
            plan = RowPlan(plan.labels, plan.groups, use_peft, mask)
        self._plan = plan
        try:
            yield
        finally:
            self._plan = None

    def _stacked(self, plan: RowPlan, positions: int) -> bool:
        if self.lora_path == "auto":
            return len(plan.groups) >= 2 and positions <= STACKED_MAX_POSITIONS
        return self.lora_path == "stacked"

    def _layer_forward(self, module: LoraLayer, original: Callable) -> Callable:
        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            plan = self._plan
            if plan is None or "adapter_names" in kwargs:  # not the engine's own forward
                return original(x, *args, **kwargs)
            if kwargs or plan.use_peft or not isinstance(module, LoraLinear):
                return original(x, *args, adapter_names=plan.labels, **kwargs)
            stack = self._stacks.get(module) if plan.mask is not None else None
            if stack is not None:
                return stacked_lora_forward(module, stack, x, plan, *args)
            return grouped_lora_forward(module, x, plan, *args)

        return forward

    def _rehook(self) -> None:
        """Give every LoRA layer the engine's forward (once: layers outlive adapters), and
        rebuild the stacks for the adapters now loaded (called after every load and unload)."""
        layers = [m for m in self.base.modules() if isinstance(m, LoraLayer)]
        for module in layers:
            if "forward" not in module.__dict__:
                module.forward = self._layer_forward(module, module.forward)
        self._variant_labels = {
            label for module in layers for label in getattr(module, "lora_variant", {})
        }
        self._restack([m for m in layers if isinstance(m, LoraLinear)])

    def _restack(self, layers: list[LoraLinear]) -> None:
        # Variant adapters never take the stacked path (`use_peft`), so they get no slot.
        loaded = {label for module in layers for label in module.lora_A}
        self.slots = sorted(loaded - self._variant_labels)
        ranks = [
            module.lora_A[label].weight.shape[0]
            for module in layers
            for label in self.slots
            if label in module.lora_A
        ]
        self.stack_rank = max(ranks, default=0)
        self._stacks = {}
        if not self.slots:
            return
        with torch.no_grad():
            for module in layers:
                targets = [label for label in self.slots if label in module.lora_A]
                # No stack where no adapter targets the layer (nothing to add) or where one
                # has a bias on B (lora_bias): those layers keep the grouped path.
                if targets and all(module.lora_B[t].bias is None for t in targets):
                    self._stacks[module] = stack_lora(
                        module, self.slots, self.stack_rank, self.dtype
                    )

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
            self.hits += 1
            return True
        if not (ref.path / "adapter_config.json").exists():
            raise AdapterLoadError(f"Adapter files for '{ref.name}' are missing.", param="model")
        while len(self._loaded) >= self.capacity:
            victim = next((n for n in self._loaded if n not in pinned), None)
            if victim is None:
                return False
            del self._loaded[victim]
            self._unload(victim)
            self.evictions += 1
        try:
            label = peft_label(ref.name)
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(
                    self.base, str(ref.path), adapter_name=label, autocast_adapter_dtype=False
                )
            else:
                self.peft.load_adapter(
                    str(ref.path), adapter_name=label, autocast_adapter_dtype=False
                )
            self._cast(label)
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

    def _cast(self, label: str) -> None:
        """The adapter's weights in `self.dtype` (files may hold fp32, fp16 or bf16)."""
        assert self.peft is not None
        part = f".{label}."
        for name, param in self.peft.named_parameters():
            if part in name and param.dtype != self.dtype and param.is_floating_point():
                param.data = param.data.to(self.dtype)

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
