"""Every figure's ending: its title, one legend below the panels, and the PNG (written atomically, kept for display).

Figures are built without pyplot (``matplotlib.figure.Figure``), so a notebook shows each once, as the cell's
value, and no global figure state builds up; :class:`StepFigure` keeps the PNG it was saved as, which
:func:`workbench.study.present.console.notebook_setup` shows instead of drawing the figure a second time.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from workbench.study.store.files import atomic_write_bytes

DPI = 110


def finish_figure(fig: Figure, title: str, results_dir=None, filename: str = "") -> Figure:
    """Every figure's ending: its title (at most two lines), one legend below the panels, the PNG in
    ``results_dir`` (if given)."""
    fig.suptitle(title, fontsize=9.5)
    figure_legend(fig)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


class StepFigure(Figure):
    """A figure that keeps the PNG it was saved as, so a notebook shows those bytes instead of drawing the
    figure a second time (:func:`workbench.study.present.console.notebook_setup` registers the display)."""

    png: bytes | None = None


def save_png(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    if isinstance(fig, StepFigure):
        fig.png = buf.getvalue()
    return Path(path)


def figure_png(fig: Figure) -> bytes:
    """The PNG of ``fig``: the bytes it was saved as, else drawn now."""
    if isinstance(fig, StepFigure) and fig.png is not None:
        return fig.png
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def figure_legend(fig: Figure) -> None:
    """One legend for the whole figure, below the panels: every labelled line once (panel legends removed)."""
    seen: dict[str, object] = {}
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            if label and not label.startswith("_") and label not in seen:
                seen[label] = handle
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if seen:
        width = max(20, int(fig.get_figwidth() * 72 / 3 / 4.6) - 8)   # characters per column, 3 columns at 8 pt
        labels = [textwrap.fill(label, width) for label in seen]
        fig.legend(list(seen.values()), labels, loc="outside lower center", ncols=min(3, len(seen)),
                   fontsize=8, frameon=False)


__all__ = ["DPI", "StepFigure", "figure_legend", "figure_png", "finish_figure", "save_png"]
