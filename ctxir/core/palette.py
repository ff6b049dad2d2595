"""The class colour palette of every render and labelled mesh, without matplotlib.

The first 60 colours are matplotlib's qualitative maps, stored as values: tab20's ten saturated colours, its
ten light partners (so neighbouring class ids differ in hue), then tab20b and tab20c. Beyond 60 classes hues
follow the golden angle. Label ``-1`` (ignored) is grey.
"""

from __future__ import annotations

import colorsys

import numpy as np

IGNORE_COLOR = np.array([128, 128, 128], dtype=np.uint8)
"""Colour of label ``-1`` (unannotated / ignored) points and faces."""

_BASE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
        (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
        (57, 59, 121), (82, 84, 163), (107, 110, 207), (156, 158, 222), (99, 121, 57),
        (140, 162, 82), (181, 207, 107), (206, 219, 156), (140, 109, 49), (189, 158, 57),
        (231, 186, 82), (231, 203, 148), (132, 60, 57), (173, 73, 74), (214, 97, 107),
        (231, 150, 156), (123, 65, 115), (165, 81, 148), (206, 109, 189), (222, 158, 214),
        (49, 130, 189), (107, 174, 214), (158, 202, 225), (198, 219, 239), (230, 85, 13),
        (253, 141, 60), (253, 174, 107), (253, 208, 162), (49, 163, 84), (116, 196, 118),
        (161, 217, 155), (199, 233, 192), (117, 107, 177), (158, 154, 200), (188, 189, 220),
        (218, 218, 235), (99, 99, 99), (150, 150, 150), (189, 189, 189), (217, 217, 217),
    ],
    dtype=np.uint8,
)
_GOLDEN = 0.618033988749895


def class_colors(num_classes: int) -> np.ndarray:
    """A fixed palette of ``num_classes`` distinguishable RGB colours, ``(C, 3) uint8``."""
    if num_classes < 0:
        raise ValueError(f"class_colors: num_classes must be >= 0, got {num_classes}")
    extra = [
        tuple(round(c * 255) for c in colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, 0.75, 0.75))
        for i in range(max(num_classes - len(_BASE), 0))
    ]
    palette = np.concatenate([_BASE[:num_classes], np.asarray(extra, dtype=np.uint8).reshape(-1, 3)])
    return palette.astype(np.uint8)


def check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
    """Raise ``ValueError`` unless ``labels`` is a 1-D integer array with values in ``-1..num_classes-1``."""
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {labels.dtype}")
    if len(labels) and (labels.min() < -1 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} span [{labels.min()}, {labels.max()}] but only -1 (ignore) and 0..{num_classes - 1} are valid"
        )


def label_colors(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB colour ``(n, 3) uint8`` of each label from ``palette`` (``(C, 3)``), grey for ``-1``.

    Raises:
        ValueError: a label outside ``-1..C-1``.
    """
    labels = np.asarray(labels)
    check_labels(labels, len(palette), "labels")
    colors = np.empty((len(labels), 3), dtype=np.uint8)
    ignored = labels < 0
    colors[ignored] = IGNORE_COLOR
    colors[~ignored] = palette[labels[~ignored]]
    return colors
