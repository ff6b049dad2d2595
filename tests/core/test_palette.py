"""The class palette (ctxir.core.palette): fixed, distinct colours; grey for ignored labels."""

import numpy as np
import pytest

from ctxir.core.palette import IGNORE_COLOR, check_labels, class_colors, label_colors


def test_class_colors_are_fixed_distinct_uint8() -> None:
    for count in (1, 13, 20, 60, 85):
        palette = class_colors(count)
        assert palette.shape == (count, 3) and palette.dtype == np.uint8
        assert len(np.unique(palette, axis=0)) == count
        assert not (palette == IGNORE_COLOR).all(axis=1).any()
    np.testing.assert_array_equal(class_colors(5), class_colors(40)[:5])
    np.testing.assert_array_equal(class_colors(2), [[31, 119, 180], [255, 127, 14]])  # tab20's first hues
    assert class_colors(0).shape == (0, 3)


def test_label_colors_map_ignore_to_grey_and_reject_out_of_range() -> None:
    palette = class_colors(4)
    colors = label_colors(np.array([2, -1, 0, 3]), palette)
    np.testing.assert_array_equal(colors, [palette[2], IGNORE_COLOR, palette[0], palette[3]])
    with pytest.raises(ValueError, match="only -1"):
        label_colors(np.array([0, 4]), palette)
    with pytest.raises(ValueError, match="only -1"):
        label_colors(np.array([-2]), palette)


def test_check_labels_names_the_array_it_rejects() -> None:
    check_labels(np.array([-1, 0, 2]), 3, "face labels")
    with pytest.raises(ValueError, match="face labels"):
        check_labels(np.array([0, 3]), 3, "face labels")
    with pytest.raises(ValueError, match="face labels"):
        check_labels(np.array([0.5]), 3, "face labels")
