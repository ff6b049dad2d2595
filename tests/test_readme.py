"""README.md stays true: its test command is the one CI runs, its configs exist, its imports resolve, and its
command lines parse."""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

from ctxir.cli import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TEST_COMMAND = "WANDB_MODE=offline python3 -m pytest -q"


def shell_blocks() -> list[str]:
    """The ```bash blocks of the README, with backslash continuations joined."""
    return [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", README, re.S)]


def ctxir_commands() -> list[list[str]]:
    commands = []
    for block in shell_blocks():
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("ctxir "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert any(block.strip() == TEST_COMMAND for block in shell_blocks())
    ci = (REPO / ".ci" / "run").read_text()
    assert [line.strip() for line in ci.splitlines() if "pytest" in line and not line.strip().startswith(("#", "echo"))] == [
        TEST_COMMAND
    ]


def test_readme_configs_exist() -> None:
    configs = set(re.findall(r"configs/[\w/]+\.yaml", README))
    assert len(configs) >= 8
    assert [c for c in configs if not (REPO / c).is_file()] == []


def test_readme_imports_resolve() -> None:
    for module, names in re.findall(r"^from (ctxir[\w.]*) import (.+)$", README, re.M):
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(imported, name), f"{module}.{name}"


@pytest.mark.parametrize("args", ctxir_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_commands_parse(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    if args[0] == "scan":  # not a LightningCLI subcommand: its own parser
        from ctxir.scan.command import build_parser

        build_parser().parse_args(args[1:])
        return
    monkeypatch.setattr(sys, "argv", ["ctxir"])
    with pytest.raises(SystemExit) as exit_info:
        cli([*args, "--print_config"])
    assert exit_info.value.code in (0, None)


def test_readme_runs_the_quick_start_and_shows_its_figures() -> None:
    assert "python -m ctxir.reproduce --setting quick --output runs/quickstart" in README
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (REPO / picture).is_file(), picture
    assert "docs/quickstart/scene.png" in README and "docs/quickstart/tsne.png" in README
