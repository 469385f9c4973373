"""Prompt rendering through the tokenizer's chat template.

The server and the training worker both call these, so a prompt is tokenised the same way
when it is trained on and when it is served.
"""

from transformers import PreTrainedTokenizerBase


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    # A model without a chat template still gets a readable transcript.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # Chat templates already carry their special tokens; plain prompts get none added, so
    # the same text always maps to the same ids.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# User messages that start differently (letter, digit, space, punctuation, non-ASCII), so a
# token that merges the end of the chat header with the first character of the message
# differs between them and is left out of the shared part.
_PROBES = ("Hello there", "42 is a number", " leading space", "?!", "Ünïcode", "a")


def shared_chat_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids every one-user-message chat prompt starts with: the template's default
    system prompt and the user header. Served from the prefix cache like a template's fixed
    prefix, so a chat request's prefill runs only its own message."""
    try:
        rendered = [
            encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": p}]))
            for p in _PROBES
        ]
    except Exception:  # a template that needs more than one user message: no shared prefix
        return []
    shared = rendered[0]
    for ids in rendered[1:]:
        same = 0
        while same < min(len(shared), len(ids)) and shared[same] == ids[same]:
            same += 1
        shared = shared[:same]
    return shared
