"""The package works when installed from a wheel, outside the checkout: configs ship inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, unpacked into a folder that stands in for site-packages."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True, timeout=600)
    (wheel,) = out.glob("ctxir-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def run_outside(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_ships_every_config(installed: Path) -> None:
    shipped = {p.relative_to(installed / "ctxir" / "configs") for p in (installed / "ctxir" / "configs").glob("*/*.yaml")}
    in_checkout = {p.relative_to(REPO / "ctxir" / "configs") for p in (REPO / "ctxir" / "configs").glob("*/*.yaml")}
    assert shipped == in_checkout and len(shipped) == 17


def test_reproduction_configs_resolve_from_the_installed_package(installed: Path, tmp_path: Path) -> None:
    code = (
        "import ctxir, ctxir.reproduce as r; from pathlib import Path; "
        "print(Path(ctxir.__file__).resolve().parent); "
        "print(all(run.config.is_file() for run in r.RUNS))"
    )
    done = run_outside(installed, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    package, configs_found = done.stdout.split()
    assert Path(package) == (installed / "ctxir").resolve()  # the wheel's copy, not the checkout
    assert configs_found == "True"
    config = installed / "ctxir" / "configs" / "synthetic" / "context.yaml"
    parsed = run_outside(installed, tmp_path, "-m", "ctxir", "fit", "--config", str(config), "--print_config")
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    assert "class_path: ctxir.tasks.ContextualisedTuner" in parsed.stdout
