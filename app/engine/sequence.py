"""One row of the scheduler's work (a prompt, how to sample it, where its events go), in a
module of its own so that the scheduler and the chunked prefill both use it without importing
each other."""

from dataclasses import dataclass, field

from app.engine.adapters import BASE, AdapterRef, peft_label
from app.engine.detokenizer import TextAssembler
from app.engine.requests import RequestHandle, TokenLogprob
from app.engine.sampling import Sampler, SamplingParams
from app.engine.structured import RowConstraint


@dataclass
class Sequence:
    """One row of work: a prompt, how to sample it, where its events go."""

    prompt_ids: list[int]
    params: SamplingParams
    handle: RequestHandle
    adapter: AdapterRef | None = None
    prefix_len: int = 0  # leading prompt tokens whose key/values may come from the cache
    # Structured output: which tokens this row may pick next (None: any).
    constraint: RowConstraint | None = None
    sampler: Sampler = field(init=False)
    assembler: TextAssembler = field(init=False)
    generated: list[int] = field(default_factory=list)
    # Log-probabilities (when asked for): handed out with the deltas whose text they made.
    logprobs: list[TokenLogprob] = field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sampler = Sampler(self.params)

    @property
    def label(self) -> str:
        return peft_label(self.adapter.name) if self.adapter is not None else BASE
