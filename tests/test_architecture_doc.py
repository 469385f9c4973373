"""docs/architecture.md's layer diagram and the import-linter `layers` contract name the same
layers in the same order, so neither can change without the other."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def contract_layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    return [re.split(r"\s*[:|]\s*", line) for line in layers["layers"]]


def diagram_blocks() -> list[str]:
    """The diagram's text, one block per layer (a block starts at a line with a label)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## Layers\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("    ")]
    blocks: list[str] = []
    for line in lines:
        if line[4] not in " |":  # a label in the first column: a new layer
            blocks.append("")
        if blocks:
            blocks[-1] += line + "\n"
    return blocks


def doc_name(module: str) -> str:
    """How the diagram writes a module: a package as `name/`, a module file as `name.py`."""
    parts = module.split(".")
    if parts == ["workers"]:
        return "workers/"
    path = ROOT.joinpath(*parts)
    return parts[-1] + ("/" if path.is_dir() else ".py")


def test_the_diagram_has_the_contracts_layers_in_order() -> None:
    layers, blocks = contract_layers(), diagram_blocks()
    assert len(blocks) == len(layers), "one diagram block per layer of the contract"
    for modules, block in zip(layers, blocks, strict=True):
        for module in modules:
            assert doc_name(module) in block, f"{module} is not drawn in its layer:\n{block}"
