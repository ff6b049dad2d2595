"""Fig. 2 t-SNE panels and scene renders (ctxir.eval.figures).

t-SNE runs single-threaded here: the test machine's cores are shared, where multi-threaded t-SNE crawls.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ctxir.data.synthetic import SYNTHETIC_CLASSES, generate_room
from ctxir.eval.figures import (
    IGNORE_NAME,
    plot_tsne_panels,
    project,
    render_labelled_points,
    tsne_embedding,
)
from ctxir.eval.sampling import sample_mesh_surface

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def blobs(count: int, num_classes: int, dim: int, seed: int, spread: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs with unit variance around centres ``spread`` apart along the axes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    centres = spread * np.eye(dim)[:num_classes]
    return centres[labels] + rng.normal(size=(count, dim)), labels


def legend_texts(figure) -> list[str]:
    (legend,) = figure.legends
    return [text.get_text() for text in legend.get_texts()]


def assert_valid_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert len(data) > 0 and data[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.01  # not a blank canvas
    assert not list(path.parent.glob(f".{path.name}*"))  # no temporary file left behind


def test_tsne_keeps_separated_blobs_apart() -> None:
    features, labels = blobs(160, num_classes=4, dim=12, seed=1)
    embedding, indices = tsne_embedding(features, seed=0, num_threads=1)
    np.testing.assert_array_equal(indices, np.arange(160))
    assert embedding.shape == (160, 2) and np.isfinite(embedding).all()
    # leave-one-out 5-NN vote in the 2-D embedding
    _, neighbours = cKDTree(embedding).query(embedding, k=6)
    votes = labels[neighbours[:, 1:]]
    predicted = np.array([np.bincount(row, minlength=4).argmax() for row in votes])
    assert (predicted == labels).mean() > 0.95


def test_tsne_subsample_is_deterministic_and_sorted() -> None:
    features, _ = blobs(150, num_classes=3, dim=6, seed=2)
    first, first_indices = tsne_embedding(features, seed=3, max_points=60, num_threads=1)
    again, again_indices = tsne_embedding(features, seed=3, max_points=60, num_threads=1)
    _, other_indices = tsne_embedding(features, seed=4, max_points=60, num_threads=1)
    assert first.shape == (60, 2) and first_indices.dtype == np.int64
    assert len(np.unique(first_indices)) == 60 and (np.diff(first_indices) > 0).all()
    np.testing.assert_array_equal(first_indices, again_indices)
    np.testing.assert_allclose(first, again)
    assert not np.array_equal(first_indices, other_indices)


def test_tsne_rejects_bad_features() -> None:
    with pytest.raises(ValueError, match=r"\(n, c\)"):
        tsne_embedding(np.zeros(10))
    with pytest.raises(ValueError, match="at least 3"):
        tsne_embedding(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        tsne_embedding(np.full((10, 4), np.nan))


def test_tsne_panels_figure(tmp_path: Path) -> None:
    context, labels = blobs(120, num_classes=3, dim=8, seed=5)
    labels = np.array([0, 1, 3])[labels]  # classes 0, 1 and 3 only
    labels[:10] = -1  # dropped from every panel
    rng = np.random.default_rng(0)
    geometry = rng.normal(size=(120, 8))
    panels = {
        "geometry E_g": (geometry, labels),
        "context E_c": (context, labels),
        "E_g ⊕ E_c": (np.concatenate([geometry, context], axis=1), labels),
    }
    path = tmp_path / "figs" / "tsne.png"
    figure = plot_tsne_panels(panels, SYNTHETIC_CLASSES, path=path, seed=0, max_points=80, num_threads=1)
    assert [ax.get_title() for ax in figure.axes] == list(panels)
    assert legend_texts(figure) == [SYNTHETIC_CLASSES[0], SYNTHETIC_CLASSES[1], SYNTHETIC_CLASSES[3]]
    for ax in figure.axes:
        (collection,) = ax.collections
        assert len(collection.get_offsets()) == 80  # 110 labelled points subsampled to 80
    assert_valid_png(path)


def test_tsne_panels_reject_mismatched_or_invalid_labels() -> None:
    features, labels = blobs(30, num_classes=2, dim=4, seed=0)
    with pytest.raises(ValueError, match="'a' has 30 feature vectors but 29 labels"):
        plot_tsne_panels({"a": (features, labels[:-1])}, SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="panel 'a'"):
        plot_tsne_panels({"a": (features, labels + 20)}, SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="no panels"):
        plot_tsne_panels({}, SYNTHETIC_CLASSES)


def test_render_labelled_room(tmp_path: Path) -> None:
    room = generate_room(0)
    points, face_index = sample_mesh_surface(room.vertices, room.faces, 20000, seed=0)
    labels = room.face_labels[face_index].copy()
    labels[:50] = -1
    path = tmp_path / "render.png"
    views = ("top", "front", "perspective")
    figure = render_labelled_points(points, labels, SYNTHETIC_CLASSES, path=path, views=views)
    assert [ax.get_title() for ax in figure.axes] == list(views)
    for ax in figure.axes:
        assert ax.get_aspect() == 1.0
        assert len(ax.collections[0].get_offsets()) == 20000
    present = np.unique(room.face_labels[face_index])
    expected = [IGNORE_NAME] + [SYNTHETIC_CLASSES[label] for label in present if label >= 0]
    assert legend_texts(figure) == expected
    assert_valid_png(path)


def test_render_subsamples_to_max_points() -> None:
    rng = np.random.default_rng(0)
    figure = render_labelled_points(rng.random((500, 3)), rng.integers(0, 2, 500), ["a", "b"], max_points=100)
    assert len(figure.axes[0].collections[0].get_offsets()) == 100
    assert legend_texts(figure) == ["a", "b"]


def test_render_rejects_bad_input() -> None:
    points, labels = np.zeros((4, 3)), np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="views"):
        render_labelled_points(points, labels, ["a"], views=("bottom",))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        render_labelled_points(np.zeros((4, 2)), labels, ["a"])
    with pytest.raises(ValueError, match="4 points"):
        render_labelled_points(points, labels[:3], ["a"])
    with pytest.raises(ValueError, match="only -1"):
        render_labelled_points(points, labels + 1, ["a"])


def test_projections() -> None:
    points = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    image, depth = project(points, "top")
    np.testing.assert_array_equal(image, [[1.0, 2.0], [4.0, 5.0]])
    np.testing.assert_array_equal(depth, [-3.0, -6.0])  # higher points are nearer the top camera
    # perspective: the scene box lies in front of the camera; of two equal segments the nearer projects longer
    box = np.random.default_rng(0).random((200, 3))
    _, box_depth = project(box, "perspective")
    assert (box_depth > 0).all()
    azimuth, elevation = np.radians(-60.0), np.radians(30.0)
    direction = np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    across = np.cross([0.0, 0.0, 1.0], direction)
    near, far = 0.4 * direction, -0.4 * direction
    segment_ends = np.stack([near, near + 0.1 * across, far, far + 0.1 * across, 0.5 * np.ones(3), -0.5 * np.ones(3)])
    ends, ends_depth = project(segment_ends, "perspective")
    assert ends_depth[0] < ends_depth[2]
    assert np.linalg.norm(ends[1] - ends[0]) > np.linalg.norm(ends[3] - ends[2])
