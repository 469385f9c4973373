"""End-to-end check of a running deployment with the official openai client: a chat answer
from the base model, a model card, a small fine-tuning job run by the worker, and its
adapter served. Used on the docker-compose stack (README, "Docker"):

    python scripts/docker_smoke.py http://localhost:8000 "$KEY"
"""

import io
import json
import sys
import time

from openai import OpenAI

BASE = "smollm2-135m-instruct"
PAIRS = [
    ("red", "rouge"),
    ("blue", "bleu"),
    ("green", "vert"),
    ("black", "noir"),
    ("white", "blanc"),
    ("yellow", "jaune"),
    ("grey", "gris"),
    ("pink", "rose"),
    ("brown", "brun"),
    ("orange", "orange"),
    ("purple", "violet"),
    ("gold", "or"),
]


def main(url: str, key: str) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=2, timeout=600)
    reply = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=20,
    )
    print("chat:", reply.choices[0].message.content)
    print("card:", client.models.retrieve(BASE).model_dump())
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"French for {en}?"},
                {"role": "assistant", "content": fr},
            ]
        }
        for en, fr in PAIRS
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    file = client.files.create(file=("colours.jsonl", io.BytesIO(data)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=file.id, suffix="colours", hyperparameters={"n_epochs": 3}
    )
    print("job:", job.id)
    started = time.monotonic()
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    print(
        f"job {job.status} after {time.monotonic() - started:.0f} s:",
        job.fine_tuned_model,
        job.error,
    )
    if job.status != "succeeded":
        sys.exit(1)
    answer = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "French for red?"}],
        temperature=0,
        max_tokens=8,
    )
    print("adapter:", answer.model, "->", answer.choices[0].message.content)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
