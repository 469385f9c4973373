"""No two modules of app/, workers/ or bench/ import each other, directly or through a loop
(scripts/import_cycles.py), and the check finds such a loop when there is one."""

import sys
from pathlib import Path

import pytest

from scripts.import_cycles import circles


def test_no_import_circles() -> None:
    assert circles() == []


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    folder = root / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module, text in modules.items():
        (folder / f"{module}.py").write_text(text)


def test_a_loop_through_a_function_level_import_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package(
        tmp_path,
        "circled",
        {
            "first": "from circled.second import helper\n",
            "second": "def helper():\n    from circled.third import value\n    return value\n",
            "third": "from circled import first\nvalue = 1\n",
            "apart": "from circled import first\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = circles(("circled",))
    finally:
        for name in [m for m in sys.modules if m == "circled" or m.startswith("circled.")]:
            del sys.modules[name]
    assert found == [["circled.first", "circled.second", "circled.third", "circled.first"]]
