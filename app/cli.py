"""`python -m app.cli prepare`: everything `make run` needs before the processes start."""

import argparse
import logging
import sys

from app.auth.service import generate_key
from app.engine.loader import resolve_source
from app.settings import get_settings


def prepare() -> None:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    source = resolve_source(settings.base_model, settings.model_cache)
    print(f"base model: {settings.base_model} ({source})")
    if not settings.adaptd_admin_key and not settings.admin_key_file.exists():
        key = generate_key()
        settings.admin_key_file.write_text(key + "\n")
        settings.admin_key_file.chmod(0o600)
        print(f"generated admin key (kept in {settings.admin_key_file}, shown once):\n  {key}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="adaptd")
    parser.add_argument("command", choices=["prepare"])
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare()
    return 0


if __name__ == "__main__":
    sys.exit(main())
