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
