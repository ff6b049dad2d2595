"""The paper's Table 1 layout, in one place: column names, scales and number formatting.

The test stage logs raw values (``test/cd_l1`` = 0.049…); the paper prints CD-L1 ×10², CD-L2 ×10⁴ and three
decimals. :class:`~ctxir.tasks.TestReport` prints a run's row with :func:`table1_line`, and the reproduction
writes whole tables with :func:`table1_cells` and :func:`markdown_table`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TABLE1_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("cd_l1", "CD-L1 ×10²", 1e2),
    ("cd_l2", "CD-L2 ×10⁴", 1e4),
    ("f1", "F1-δ", 1.0),
    ("f1_2delta", "F1-2δ", 1.0),
    ("mf1", "mF1-δ", 1.0),
    ("mf1_2delta", "mF1-2δ", 1.0),
    ("miou", "mIoU", 1.0),
)
"""(metric key, column title, scale) of Table 1, reconstruction first, then semantics."""

MISSING = "—"


def format_value(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    """``value × scale`` with ``digits`` decimals, or an em dash when there is no value."""
    return MISSING if value is None else f"{value * scale:.{digits}f}"


def table1_cells(metrics: Mapping[str, float]) -> list[str]:
    """The Table 1 cells of one row of raw metrics (an em dash where a metric is absent)."""
    return [format_value(metrics.get(key), scale) for key, _, scale in TABLE1_COLUMNS]


def table1_titles() -> list[str]:
    """The Table 1 column titles."""
    return [title for _, title, _ in TABLE1_COLUMNS]


def table1_line(metrics: Mapping[str, float]) -> str:
    """One row as a terminal line, ``CD-L1 ×10² 4.925 | …``, only with the metrics present."""
    return " | ".join(f"{title} {format_value(metrics[key], scale)}" for key, title, scale in TABLE1_COLUMNS
                      if key in metrics)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
