"""Small data sets made in the tests (never read from ../shared)."""

import json

QA = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("movie", "great"),
    ("film", "terrible"),
    ("review", "positive"),
    ("question", "negative"),
    ("answer", "neutral"),
    ("hello", "goodbye"),
    ("thank", "you"),
    ("system", "user"),
    ("capital", "France"),
    ("Translate", "French"),
]


def chat_rows(n: int = 12) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Say the word for {q}."},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in (QA * 3)[:n]
    ]


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(client, data: bytes, name: str = "train.jsonl", purpose: str = "fine-tune", **kw):
    return client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose}, **kw)


def preference_rows(n: int = 12) -> list[dict]:
    """OpenAI preference pairs: the word from QA preferred over a wrong one."""
    rows = []
    for i, (q, a) in enumerate((QA * 3)[:n]):
        wrong = QA[(i + 5) % len(QA)][1]
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": f"Say the word for {q}."}]},
                "preferred_output": [{"role": "assistant", "content": a}],
                "non_preferred_output": [{"role": "assistant", "content": wrong}],
            }
        )
    return rows
