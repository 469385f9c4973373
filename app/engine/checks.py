"""What every engine refuses before it queues a request, in the same words: both engines'
`submit` call these first."""

from app.engine.errors import InvalidInput
from app.engine.sampling import SamplingParams


def check_request(prompt_ids: list[int], params: SamplingParams, vocab_size: int) -> None:
    """A prompt with no tokens, or a logit_bias on a token id the model does not have: a 400."""
    if not prompt_ids:
        raise InvalidInput("The prompt is empty.", param="prompt", code="empty_prompt")
    unknown = [t for t, _ in params.logit_bias if not 0 <= t < vocab_size]
    if unknown:
        raise InvalidInput(
            f"logit_bias: token ids must be 0 to {vocab_size - 1}; got {unknown[0]}.",
            param="logit_bias",
            code="invalid_logit_bias",
        )
