"""What a job's data asks of the worker's memory, checked when the job is created.

The trainer runs each step's batch in micro-batches of at most TRAIN_MICROBATCH_TOKENS token
positions (rows x padded width; workers/training.py), so the batch size no longer sets the
worker's peak memory, but one training item cannot be split: an example, or for DPO a pair
(both answers run in one forward, padded to the longer), must fit in one micro-batch. The
longest example of a file was counted at upload (`stats.max_tokens`, the serving chat
template's tokens; for preference data the longer side).
"""

from app.errors import BadRequest
from app.files.models import File


def rows_per_item(method: str) -> int:
    """Rows of one forward per training item: a DPO pair's two answers share a forward."""
    return 2 if method == "dpo" else 1


def check_fits(file: File, method: str, microbatch_tokens: int, *, param: str) -> None:
    """400 `example_too_large` when the file's longest item cannot fit in one micro-batch."""
    longest = int((file.stats or {}).get("max_tokens") or 0)
    rows = rows_per_item(method)
    if longest * rows <= microbatch_tokens:
        return
    item = (
        f"a preference pair whose longer conversation has {longest} tokens (both answers "
        f"train in one forward pass: {rows} x {longest} = {rows * longest} token positions)"
        if rows > 1
        else f"an example of {longest} tokens"
    )
    raise BadRequest(
        f"File '{file.id}' holds {item}; this server trains at most {microbatch_tokens} "
        f"token positions in one forward pass (TRAIN_MICROBATCH_TOKENS), so that example "
        f"cannot be trained without running out of memory. Shorten or drop the examples "
        f"over {microbatch_tokens // rows} tokens.",
        param=param,
        code="example_too_large",
    )
