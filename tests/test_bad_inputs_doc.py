"""docs/bad_inputs.md stays true: every row names tests, and every test it names exists (so the suite runs it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "bad_inputs.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def defined_functions(path: Path) -> set[str]:
    """Names of the test functions a test file defines."""
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_every_row_names_tests_that_exist() -> None:
    rows = [line for line in TABLE.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| Bad input", "|---"))]
    assert len(rows) >= 30
    for row in rows:
        references = REFERENCE.findall(row.rsplit("|", 2)[-2])
        assert references, f"a row without a test: {row[:80]}"
        for file, name in references:
            assert name in defined_functions(REPO / file), f"{file}::{name} (named in {TABLE.name}) does not exist"
