"""A stand-in for the default model where its weights cannot travel: the same architecture,
config and tokenizer, with random weights (seeded). Speeds measured on it are the real
model's; answers are noise.

The device machine takes at most 64 MiB with the working tree, and the default model's GGUF is
98 MB, so a GPU session carries only the small files and makes the weights there:

    .venv/bin/python -m bench.random_model .gpumodel/smollm2-135m-instruct           # here
    python3 -m bench.random_model .gpumodel/smollm2-135m-instruct --weights          # there
    BASE_MODEL=$PWD/.gpumodel/smollm2-135m-instruct python3 -m bench.serve --device cuda
"""

import argparse
import shutil
from pathlib import Path

SMALL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def copy_small_files(out: Path) -> None:
    """config and tokenizer of the configured base model (converting the GGUF if needed)."""
    from app.engine.loader import resolve_source
    from app.settings import get_settings

    settings = get_settings()
    source = Path(resolve_source(settings.base_model, settings.model_cache))
    out.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, out / name)


def write_random_weights(out: Path, seed: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
    model.save_pretrained(out, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", action="store_true", help="write random weights too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.out / "config.json").exists():
        copy_small_files(args.out)
    if args.weights:
        write_random_weights(args.out, args.seed)
    print(f"{args.out}: {sorted(p.name for p in args.out.iterdir())}")


if __name__ == "__main__":
    main()
