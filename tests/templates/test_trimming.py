"""Trimming examples to the context window: the fast estimate agrees with brute force."""

import copy

import pytest

from app.engine.prompts import encode, render_chat
from app.templates import rendering
from app.templates.rendering import ResolvedTemplate, chat_messages, completion_text


def template(n: int) -> ResolvedTemplate:
    # Uneven lengths, so a wrong estimate shows.
    examples = [
        {"input": "word " * (1 + i % 7) + f"item {i}", "output": "ok" * (1 + i % 3)}
        for i in range(n)
    ]
    return ResolvedTemplate(
        name="t",
        version=1,
        model="m",
        system_prompt="Sort the items.",
        instruction="Q: {{ input }}",
        examples=examples,
        rule="all",
        k=None,
        params={},
        variables={},
    )


def brute_force_chat(tokenizer, tmpl: ResolvedTemplate, window: int, reserve: int) -> int:
    best = 0
    for n in range(len(tmpl.examples) + 1):
        pairs = [(f"Q: {e['input']}", e["output"]) for e in tmpl.examples[:n]]
        messages, _ = chat_messages(
            tmpl.system_prompt, pairs, [{"role": "user", "content": "Q: x"}]
        )
        if len(encode(tokenizer, render_chat(tokenizer, messages))) + reserve <= window:
            best = n
    return best


def brute_force_completion(tokenizer, tmpl: ResolvedTemplate, window: int, reserve: int) -> int:
    best = 0
    for n in range(len(tmpl.examples) + 1):
        blocks = [f"Q: {e['input']}\n{e['output']}" for e in tmpl.examples[:n]]
        text = completion_text(tmpl.system_prompt, blocks, "Q: x")
        if len(encode(tokenizer, text)) + reserve <= window:
            best = n
    return best


@pytest.mark.parametrize("reserve", [1, 17, 60, 150])
def test_estimate_matches_brute_force(tiny_engine, reserve: int) -> None:
    tok, window = tiny_engine.tokenizer, tiny_engine.context_window
    tmpl = template(30)
    chat = rendering.build_chat(tok, window, tmpl, [{"role": "user", "content": "x"}], {}, reserve)
    assert len(chat.examples) == brute_force_chat(tok, tmpl, window, reserve)
    assert chat.examples == list(range(len(chat.examples)))
    text = rendering.build_completion(tok, window, tmpl, "x", {}, reserve)
    assert len(text.examples) == brute_force_completion(tok, tmpl, window, reserve)


def test_chat_template_that_rewrites_content_falls_back_to_search(tiny_engine) -> None:
    tok = copy.deepcopy(tiny_engine.tokenizer)
    # Content is upper-cased by this template, so examples cannot be located in its output.
    tok.chat_template = tok.chat_template.replace(
        "{{ message['content'] }}", "{{ message['content'] | upper }}"
    )
    window = tiny_engine.context_window
    tmpl = template(30)
    built = rendering.build_chat(tok, window, tmpl, [{"role": "user", "content": "x"}], {}, 40)
    assert rendering._estimate(built, [("Q: x", "ok")], window) is None
    assert len(built.examples) == brute_force_chat(tok, tmpl, window, 40)
    assert len(built.token_ids) + 40 <= window
