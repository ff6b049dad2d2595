"""Figures: the paper's Fig. 2 t-SNE panels and renders of scenes coloured by predicted class.

matplotlib and scikit-learn are imported inside the functions so ``import ctxir.eval`` stays light. Figures
are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, never through pyplot, so nothing is
registered in pyplot's global figure list (no leaks in long evaluation runs, no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctxir.core.io import atomic_write
from ctxir.core.palette import IGNORE_COLOR, check_labels, class_colors, label_colors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IGNORE_NAME = "unlabelled"
"""Legend entry of label ``-1`` in scene renders."""

VIEWS: tuple[str, ...] = ("top", "front", "side", "perspective")
"""View names understood by :func:`render_labelled_points`."""

_PERSPECTIVE_AZIMUTH_DEG = -60.0  # matplotlib's default 3-D view direction
_PERSPECTIVE_ELEVATION_DEG = 30.0
_PERSPECTIVE_DISTANCE = 2.0  # camera distance from the scene centre, in scene extents


def subsample_indices(count: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``count`` items, drawn without replacement; all when fewer."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=max_points, replace=False))


def tsne_embedding(
    features: np.ndarray,
    seed: int = 0,
    perplexity: float = 30.0,
    max_points: int = 5000,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of ``features`` (n, c), on a deterministic subsample of at most ``max_points`` rows.

    Uses scikit-learn's Barnes–Hut TSNE with PCA initialisation (stable across runs for a seed).
    The perplexity is capped at ``(n' - 1) / 3`` so small inputs still embed (t-SNE needs perplexity < n').
    ``num_threads`` caps the OpenMP/BLAS threads (``None``: the libraries' default, every core). Pass 1 on a
    busy shared machine: the Barnes–Hut gradient synchronises its threads 1000 times, and with other processes
    on the same cores that was measured 50× slower than a single thread (160 points: 0.6 s vs 34 s).

    Returns:
        ``(embedding (n', 2) float64, indices (n',) int64)``: row ``i`` of the embedding is
        ``features[indices[i]]``.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"tsne_embedding: features must be (n, c), got shape {features.shape}")
    if len(features) < 3:
        raise ValueError(f"tsne_embedding: need at least 3 feature vectors, got {len(features)}")
    if not np.isfinite(features).all():
        raise ValueError("tsne_embedding: features contain NaN or infinite values")
    if perplexity <= 0:
        raise ValueError(f"tsne_embedding: perplexity must be > 0, got {perplexity}")
    indices = subsample_indices(len(features), max_points, seed)
    chosen = features[indices]
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (len(chosen) - 1) / 3.0),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    with threadpool_limits(limits=num_threads):
        embedding = tsne.fit_transform(chosen)
    return embedding, indices.astype(np.int64)


def plot_tsne_panels(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    path: str | Path | None = None,
    seed: int = 0,
    max_points: int = 3000,
    num_threads: int | None = None,
) -> Figure:
    """The paper's Fig. 2: one t-SNE panel per feature set, points coloured by class, one shared legend.

    Args:
        panels: title -> ``(features (n, c), labels (n,))``, e.g. ``"geometry E_g"``, ``"context E_c"``,
            ``"E_g ⊕ E_c"``, ``"joint"``. Points labelled ``-1`` are dropped before subsampling; panels over the
            same points with the same labels therefore embed the same subsample.
        class_names: name of each class id (legend text).
        path: where to save a PNG (parent folders are created); nothing is saved when ``None``.
        seed: subsampling and t-SNE seed.
        max_points: points per panel at most.
        num_threads: thread cap for the t-SNE, see :func:`tsne_embedding`.

    Returns:
        The figure (one axes per panel); the legend lists the classes present in the plotted points.
    """
    if not panels:
        raise ValueError("plot_tsne_panels: no panels given")
    palette = class_colors(len(class_names))
    embedded: list[tuple[str, np.ndarray, np.ndarray]] = []
    for title, (features, labels) in panels.items():
        features, labels = np.asarray(features), np.asarray(labels)
        check_labels(labels, len(class_names), f"plot_tsne_panels: labels of panel {title!r}")
        if len(features) != len(labels):
            raise ValueError(
                f"plot_tsne_panels: panel {title!r} has {len(features)} feature vectors but {len(labels)} labels"
            )
        keep = labels >= 0
        embedding, indices = tsne_embedding(features[keep], seed=seed, max_points=max_points, num_threads=num_threads)
        embedded.append((title, embedding, labels[keep][indices]))

    figure = _new_figure(figsize=(4.0 * len(embedded), 4.6))
    axes = figure.subplots(1, len(embedded), squeeze=False)[0]
    for ax, (title, embedding, labels) in zip(axes, embedded):
        ax.scatter(embedding[:, 0], embedding[:, 1], c=palette[labels] / 255.0, s=4, linewidths=0, rasterized=True)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    present = np.unique(np.concatenate([labels for _, _, labels in embedded]))
    _add_legend(figure, present, class_names, palette)
    _save(figure, path)
    return figure


def render_labelled_points(
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path | None = None,
    views: Sequence[str] = ("top", "perspective"),
    max_points: int = 200000,
) -> Figure:
    """Render a reconstructed scene's surface points coloured by (predicted) class.

    Each view is a 2-D scatter with equal aspect: ``"top"`` looks down −z, ``"front"`` along +y, ``"side"``
    along −x (orthographic), ``"perspective"`` is a pinhole camera from the azimuth/elevation of matplotlib's
    default 3-D view. Points are drawn far-to-near so nearer surfaces cover farther ones. Labels ``-1`` are
    grey and listed as ``"unlabelled"``.

    Args:
        points: (n, 3) surface points.
        labels: (n,) class ids in ``-1..C-1``.
        class_names: name of each class id (legend text).
        path: where to save a PNG (parent folders are created); nothing is saved when ``None``.
        views: one axes per view name, from :data:`VIEWS`.
        max_points: deterministic subsample size when there are more points.

    Returns:
        The figure (one axes per view); the legend lists the classes present.
    """
    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"render_labelled_points: points must be a non-empty (n, 3) array, got {points.shape}")
    if len(labels) != len(points):
        raise ValueError(f"render_labelled_points: {len(points)} points but labels has shape {labels.shape}")
    check_labels(labels, len(class_names), "render_labelled_points: labels")
    unknown = [view for view in views if view not in VIEWS]
    if unknown or not views:
        raise ValueError(f"render_labelled_points: views must be a non-empty subset of {VIEWS}, got {list(views)}")
    if not np.isfinite(points).all():
        raise ValueError("render_labelled_points: points contain NaN or infinite coordinates")

    chosen = subsample_indices(len(points), max_points, seed=0)
    points, labels = points[chosen], labels[chosen]
    palette = class_colors(len(class_names))
    colors = label_colors(labels, palette) / 255.0
    marker_size = float(np.clip(2.0e4 / len(points), 0.05, 4.0))

    figure = _new_figure(figsize=(5.0 * len(views), 5.6))
    axes = figure.subplots(1, len(views), squeeze=False)[0]
    for ax, view in zip(axes, views):
        image, depth = project(points, view)
        order = np.argsort(-depth, kind="stable")  # far first
        ax.scatter(image[order, 0], image[order, 1], c=colors[order], s=marker_size, linewidths=0, rasterized=True)
        ax.set_aspect("equal")
        ax.set_title(view)
        ax.set_axis_off()
    _add_legend(figure, np.unique(labels), class_names, palette)
    _save(figure, path)
    return figure


def project(points: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates ``(n, 2)`` and depth ``(n,)`` (larger = farther) of ``points`` in a named view."""
    if view == "top":
        return points[:, [0, 1]], -points[:, 2]
    if view == "front":
        return points[:, [0, 2]], points[:, 1]
    if view == "side":
        return points[:, [1, 2]], -points[:, 0]
    if view != "perspective":
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    azimuth, elevation = np.radians(_PERSPECTIVE_AZIMUTH_DEG), np.radians(_PERSPECTIVE_ELEVATION_DEG)
    towards_camera = np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    right = np.cross([0.0, 0.0, 1.0], towards_camera)
    right /= np.linalg.norm(right)
    up = np.cross(towards_camera, right)
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = max(float((hi - lo).max()), 1e-12)
    relative = points - (lo + hi) / 2.0 - _PERSPECTIVE_DISTANCE * extent * towards_camera
    depth = -relative @ towards_camera  # > 0: the whole bounding box lies in front of the camera
    image = np.column_stack([relative @ right, relative @ up]) / depth[:, None]
    return image, depth


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure on an Agg canvas with constrained layout (room for an outside legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _add_legend(figure: Figure, present: np.ndarray, class_names: Sequence[str], palette: np.ndarray) -> None:
    """One legend below the axes with an entry per label in ``present`` (``-1`` as :data:`IGNORE_NAME`)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker="o",
            markersize=7,
            markerfacecolor=(IGNORE_COLOR if label < 0 else palette[label]) / 255.0,
            markeredgewidth=0,
            label=IGNORE_NAME if label < 0 else class_names[label],
        )
        for label in present.tolist()
    ]
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False)


def _save(figure: Figure, path: str | Path | None) -> None:
    """Save ``figure`` as a PNG at ``path`` (atomically) when a path is given."""
    if path is not None:
        atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
