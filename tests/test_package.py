"""The package surface: top-level names, a light ``import ctxir``, errors that survive worker processes."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import ctxir
from ctxir.data.errors import CorruptFileError, DatasetNotFoundError


def test_main_classes_are_importable_from_the_top_level() -> None:
    from ctxir.data import SyntheticRoomsDataModule
    from ctxir.tasks import ContextualisedTuner, FrozenSemanticTuner, UDFReconstructor

    assert ctxir.UDFReconstructor is UDFReconstructor and ctxir.FrozenSemanticTuner is FrozenSemanticTuner
    assert ctxir.ContextualisedTuner is ContextualisedTuner
    assert ctxir.SyntheticRoomsDataModule is SyntheticRoomsDataModule
    assert set(ctxir.__all__) >= {"UDFReconstructor", "FrozenSemanticTuner", "ContextualisedTuner"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ctxir.Nope  # noqa: B018


def test_import_ctxir_does_not_load_torch_or_lightning() -> None:
    code = "import sys, ctxir; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("error", [DatasetNotFoundError("/data/scannet", "scans/<scene>/"),
                                   CorruptFileError("/data/x.ply", "truncated vertex data")])
def test_data_errors_pickle_with_their_fields(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.path == error.path
