"""The keys of a scene item and of a collated batch, defined once.

An item (:class:`~ctxir.data.dataset.SceneDataset`) is one scene; a batch (:func:`~ctxir.data.collate.collate_scenes`)
concatenates the items' tensors and adds a sorted cloud-index vector per group (the Point Transformer layout).
"""

from __future__ import annotations


class Key:
    """Names of the entries of items and batches (plain strings, so batches stay ordinary dicts)."""

    SCENE = "scene"
    """list[str] (item: str): scene names."""
    POINTS = "points"
    """(ΣN, 3) float32: encoder input points (surface samples), normalised frame."""
    POINT_LABELS = "point_labels"
    """(ΣN,) int64: their labels (−1 = ignore)."""
    ENCODINGS = "encodings"
    """(ΣN, d) float32: stored E_g, present when a DataModule reads ``encodings_dir``."""
    POINT_BATCH = "point_batch"
    """(ΣN,) int64: cloud index of each point (batches only)."""
    QUERIES = "queries"
    """(ΣM, 3) float32: query points drawn from the σ pools."""
    QUERY_UDF = "query_udf"
    """(ΣM,) float32: their exact unsigned distances."""
    QUERY_LABELS = "query_labels"
    """(ΣM,) int64: the label of their closest face."""
    QUERY_BAND = "query_band"
    """(ΣM,) int64: index of the σ pool each query came from."""
    QUERY_BATCH = "query_batch"
    """(ΣM,) int64: cloud index of each query (batches only)."""
    EVAL_POINTS = "eval_points"
    """(ΣE, 3) float32: ground-truth surface points of the evaluation (test split)."""
    EVAL_LABELS = "eval_labels"
    """(ΣE,) int64: their labels."""
    EVAL_BATCH = "eval_batch"
    """(ΣE,) int64: cloud index of each evaluation point (batches only)."""


BATCH_GROUPS: dict[str, tuple[str, ...]] = {
    Key.POINT_BATCH: (Key.POINTS, Key.POINT_LABELS, Key.ENCODINGS),
    Key.QUERY_BATCH: (Key.QUERIES, Key.QUERY_UDF, Key.QUERY_LABELS, Key.QUERY_BAND),
    Key.EVAL_BATCH: (Key.EVAL_POINTS, Key.EVAL_LABELS),
}
"""Cloud-index key → the per-item tensors it indexes (the first one sets the length)."""
