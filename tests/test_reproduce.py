"""The reproduction pipeline end to end on tiny rooms (its numbers mean nothing at this size)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ctxir.reproduce import Reproduction, markdown


def test_reproduction_writes_tables_figures_and_tunes_without_the_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["ctxir"])
    results = Reproduction("smoke", tmp_path / "out", only=["frozen", "context", "context-l2", "joint"])()
    assert list(results) == ["geometry", "frozen", "context", "context-l2", "joint"]
    out = tmp_path / "out"
    assert len(list((out / "encodings").glob("*.npz"))) == 4  # 2 train + 1 val + 1 test rooms
    for name in ("frozen", "context", "context-l2"):
        assert results[name]["from_encodings"]
        assert {"cd_l1", "f1", "miou", "mf1", "mf1_2delta"} <= set(results[name]["test"])
    # the tuners' UDF decoder and encodings are the geometry run's: identical reconstruction columns
    for name in ("frozen", "context", "context-l2"):
        for key in ("cd_l1", "cd_l2", "f1", "f1_2delta"):
            assert results[name]["test"][key] == pytest.approx(results["geometry"]["test"][key], rel=1e-3), (name, key)
    payload = json.loads((out / "results.json").read_text())
    assert payload["setting"] == "smoke" and set(payload["runs"]) == set(results)
    table = (out / "results.md").read_text()
    assert "| Contextualised (ours, l = 4) |" in table and "| l = 2 |" in table and "Context mIoU / joint" in table
    assert table == markdown("smoke", results)
    figures = payload["figures"]
    if "note" not in figures:  # a 1-epoch UDF may have no surface under the threshold yet
        assert Path(figures["render"]).is_file() and Path(figures["mesh"]).is_file()
    assert (out / "figures" / "tsne.png").is_file()


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown setting 'huge'"):
        Reproduction("huge", tmp_path)


def test_seed_reaches_every_command_and_the_table_title(tmp_path: Path) -> None:
    from ctxir.reproduce import RUNS

    seeded, default = Reproduction("quick", tmp_path, seed=3), Reproduction("quick", tmp_path)
    for run in RUNS:
        assert "--seed_everything=3" in seeded.common(run)
        assert not any(arg.startswith("--seed_everything") for arg in default.common(run))  # the configs' 0
    assert markdown("quick", {}, seed=3).startswith("# Reproduction on synthetic rooms (quick setting, training seed 3)")
    assert markdown("quick", {}).startswith("# Reproduction on synthetic rooms (quick setting)\n")
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        Reproduction("quick", tmp_path, seed=-1)


@pytest.mark.parametrize("seed", ["-1", "1.5", "one"])
def test_a_bad_seed_is_a_usage_error_naming_the_option(seed: str, capsys: pytest.CaptureFixture[str]) -> None:
    from ctxir.reproduce import main

    with pytest.raises(SystemExit) as stop:
        main(["--setting", "smoke", "--seed", seed])
    assert stop.value.code == 2
    assert f"argument --seed: must be a non-negative integer, got '{seed}'" in capsys.readouterr().err
