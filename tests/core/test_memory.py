"""retain_freed_memory: applied on glibc, refused when turned off; the same numbers either way."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import torch
from ctxir.core.memory import retain_freed_memory
torch.manual_seed(0)
x = torch.randn(512, 1024)
before = (x @ x.t()).sum().item()
applied = retain_freed_memory()
print(applied, (x @ x.t()).sum().item() == before)
"""


def _run(env_value: str) -> str:
    env = {**os.environ, "CTXIR_RETAIN_FREED_MEMORY": env_value}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_on_glibc_and_changes_no_value() -> None:
    assert _run("1").split() == ["True", "True"]


def test_turned_off_by_the_environment_variable() -> None:
    assert _run("0").split() == ["False", "True"]
