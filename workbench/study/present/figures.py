"""Every figure's ending: its title, one legend below the panels, and the PNG (written atomically, kept for display).

Figures are built without pyplot (``matplotlib.figure.Figure``), so a notebook shows each once, as the cell's
value, and no global figure state builds up; :class:`StepFigure` keeps the PNG it was saved as, which
:func:`workbench.study.present.console.notebook_setup` shows instead of drawing the figure a second time.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.colors import to_hex, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from workbench.study.store.files import atomic_write_bytes

DPI = 110


def finish_figure(fig: Figure, title: str, results_dir=None, filename: str = "", *, uncover: bool = True) -> Figure:
    """Every figure's ending: its title (at most two lines), one legend below the panels, every line or marker
    another one hides brought out and said (:func:`uncover_hidden`, unless ``uncover`` is False), the PNG in
    ``results_dir`` (if given)."""
    fig.suptitle(title, fontsize=9.5)
    figure_legend(fig)
    if uncover:
        uncover_hidden(fig)
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
                   fontsize=8, frameon=False, handlelength=3.5)   # long enough to show each dash pattern


# --------------------------------------------------------------------------- lines hidden under others

HIDDEN_SHARE = 0.25   # a line with this share of its length under lines drawn over it is hidden
HIDDEN_MARKER_SHARE = 0.35  # a marker with this share of its area under other markers is hidden (a star shows
                            # too little of itself to be told apart)
HIDDEN_TOLERANCE_PX = 1.0   # what still shows of a line this far inside another's stroke is not seen
_SAMPLE_PX = 2.0      # a line is checked every this many pixels along its length
_NOT_MARKERS = (None, "None", "none", "", " ", "_", "|")   # no marker, or an error bar's cap


def _has_line(line: Line2D) -> bool:
    return line.get_linestyle() not in ("None", "none", "", " ")


def _has_marker(line: Line2D) -> bool:
    return line.get_marker() not in _NOT_MARKERS


def _dashes(line: Line2D):
    """The line's dash pattern as drawn (offset, on/off lengths in points); None for a solid line."""
    if line.get_linestyle() in ("-", "solid"):
        return None
    offset, sequence = getattr(line, "_dash_pattern", (0.0, None))
    return (round(float(offset or 0.0), 3), tuple(round(float(v), 3) for v in sequence or ()))


def _candidates(ax) -> list[Line2D]:
    """The lines of ``ax`` a reader looks for: every labelled line with points (a scheduler's, a reference) and
    every unlabelled marker (a best's star), in the order they are drawn (zorder, then the order added)."""
    out = []
    for i, line in enumerate(ax.get_lines()):
        if not line.get_visible() or not len(line.get_xdata()):
            continue
        labelled = not str(line.get_label()).startswith("_")
        if labelled or (_has_marker(line) and not _has_line(line)):
            out.append((line.get_zorder(), i, line))
    return [line for *_, line in sorted(out, key=lambda t: t[:2])]


def _pixels(line: Line2D) -> np.ndarray:
    """The line's points in display pixels (rows of x, y; NaN where the data has a gap or cannot be drawn)."""
    xy = np.asarray(line.get_xydata(), dtype=float)
    with np.errstate(all="ignore"):
        px = line.get_transform().transform(xy)
    px[~np.isfinite(px).all(axis=1)] = np.nan
    return px


def _segments(px: np.ndarray) -> np.ndarray:
    """(m, 2, 2) segments between consecutive drawable points."""
    a, b = px[:-1], px[1:]
    keep = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    return np.stack([a[keep], b[keep]], axis=1) if keep.any() else np.zeros((0, 2, 2))


def _marker_radius_px(line: Line2D, dpi: float) -> float:
    return _width_px(line.get_markersize(), dpi) / 2


def _samples(line: Line2D, dpi: float) -> np.ndarray:
    """Points along the drawn line every :data:`_SAMPLE_PX` pixels; for a line of markers only, each marker's
    centre and eight points around it at two thirds of its radius (its area, roughly)."""
    px = _pixels(line)
    centres = px[np.isfinite(px).all(axis=1)]
    if not _has_line(line):
        r = 2.0 / 3.0 * _marker_radius_px(line, dpi)
        angles = np.linspace(0.0, 2 * np.pi, 8, endpoint=False)
        ring = np.c_[np.cos(angles), np.sin(angles)] * r
        return (centres[:, None, :] + np.vstack([[0.0, 0.0], ring])[None]).reshape(-1, 2)
    out = []
    for a, b in _segments(px):
        n = max(2, int(math.ceil(float(np.hypot(*(b - a))) / _SAMPLE_PX)) + 1)
        out.append(a + np.linspace(0.0, 1.0, n)[:, None] * (b - a))
    return np.concatenate(out) if out else centres


def _distance_to_segments(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Each point's distance (pixels) to the nearest of ``segments``."""
    if not len(segments) or not len(points):
        return np.full(len(points), np.inf)
    a, b = segments[:, 0], segments[:, 1]                     # (m, 2)
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)
    t = np.clip(((points[:, None, :] - a[None]) * ab[None]).sum(axis=2) / length2[None], 0.0, 1.0)   # (n, m)
    nearest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)


def _width_px(points: float, dpi: float) -> float:
    return float(points) * dpi / 72.0


def _covered(below: Line2D, above: Line2D, samples: np.ndarray, dpi: float) -> np.ndarray:
    """Which ``samples`` of ``below`` disappear under ``above``: under a stroke at least as wide that is solid or
    dashed exactly as ``below`` (its dashes then fall on ``below``'s), or under one of its markers."""
    hidden = np.zeros(len(samples), dtype=bool)
    if _has_line(below):
        if _has_line(above) and (_dashes(above) is None or _dashes(above) == _dashes(below)):
            own = _width_px(below.get_linewidth(), dpi) / 2
            reach = _width_px(above.get_linewidth(), dpi) / 2 + HIDDEN_TOLERANCE_PX
            hidden |= _distance_to_segments(samples, _segments(_pixels(above))) + own <= reach
        return hidden
    if _has_marker(above):   # a marker (a point of ``below``'s area) under another marker
        centres = _pixels(above)
        centres = centres[np.isfinite(centres).all(axis=1)]
        if len(centres) and len(samples):
            d = np.sqrt(((samples[:, None, :] - centres[None]) ** 2).sum(axis=2)).min(axis=1)
            hidden |= d <= _marker_radius_px(above, dpi) * 0.8 + HIDDEN_TOLERANCE_PX
    return hidden


def hidden_lines(ax) -> list[tuple[Line2D, list[Line2D]]]:
    """(line, the lines over it that hide a tenth of it or more, in the order drawn) for every line of ``ax`` of
    which at least :data:`HIDDEN_SHARE` of its length lies under lines drawn over it, and every marker of which
    :data:`HIDDEN_MARKER_SHARE` of its area lies under other markers, in pixels as the figure stands."""
    lines = _candidates(ax)
    dpi = ax.figure.dpi
    found = []
    for i, below in enumerate(lines):
        samples = _samples(below, dpi)
        if not len(samples):
            continue
        under = np.zeros(len(samples), dtype=bool)
        covers = []
        for above in lines[i + 1:]:
            hit = _covered(below, above, samples, dpi)
            under |= hit
            if hit.mean() >= 0.1:
                covers.append(above)
        share = HIDDEN_SHARE if _has_line(below) else HIDDEN_MARKER_SHARE
        if covers and under.mean() >= share - 1e-9:
            found.append((below, covers))
    return found


def _grey(line: Line2D) -> bool:
    """A reference line (a limit, a target, the offered rate): black or grey, the colours no scheduler has."""
    r, g, b, _ = to_rgba(line.get_color())
    return r == g == b


def lines_along_references(ax) -> list[tuple[Line2D, Line2D]]:
    """(line, reference) for every coloured line of ``ax`` of which :data:`HIDDEN_SHARE` or more runs inside the
    stroke of a reference line drawn over it (a p99 TTFT at 0.998 s under the 1 s limit): the reference's gaps
    let it show, but a reader cannot tell it from the reference without being told."""
    lines = _candidates(ax)
    dpi = ax.figure.dpi
    found = []
    for i, below in enumerate(lines):
        if _grey(below) or not _has_line(below):
            continue
        samples = _samples(below, dpi)
        own = _width_px(below.get_linewidth(), dpi) / 2
        for above in lines[i + 1:]:
            if not (_grey(above) and _has_line(above)) or not len(samples):
                continue
            reach = max(_width_px(above.get_linewidth(), dpi) / 2, own) + HIDDEN_TOLERANCE_PX
            near = _distance_to_segments(samples, _segments(_pixels(above))) <= reach
            if near.mean() >= HIDDEN_SHARE - 1e-9:
                found.append((below, above))
                break
    return found


def _clusters(found, order) -> list[list[Line2D]]:
    """Groups of lines that hide one another (a hidden line with the lines over it, transitively), each in the
    order drawn."""
    parent: dict[int, int] = {}

    def root(k: int) -> int:
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    members = {}
    for line, covers in found:
        for cover in covers:
            members[id(line)], members[id(cover)] = line, cover
            parent[root(id(line))] = root(id(cover))
    groups: dict[int, list[Line2D]] = {}
    for key, line in members.items():
        groups.setdefault(root(key), []).append(line)
    return [sorted(group, key=order.index) for group in groups.values()]


def _name(line: Line2D) -> str:
    """What a reader calls a line: its label, or for an unlabelled marker the scheduler of its colour."""
    label = str(line.get_label())
    if not label.startswith("_"):
        return label
    from workbench.study.present.palette import PINNED

    colour = to_hex(line.get_color())
    return next((f"{name}'s {'star' if line.get_marker() == '*' else 'marker'}" for name, c in PINNED.items()
                 if c == colour), "a marker")


def uncover_hidden(fig: Figure) -> list[str]:
    """Bring out every line and marker that another hides, and say so under its panel.

    Lines (a scheduler's, a reference) that hide one another, a quarter or more of one under the others, are
    drawn so each shows: the one drawn last stays as it is and the others go over it, a solid one in short
    dashes (several interleaved, so every colour shows where they coincide), a dashed one in its own pattern
    shifted by half a period.  Markers stacked on one point (the stars of several schedulers' best) are drawn
    inside each other, each smaller than the one below.  The panel's x label says so ("A and B drawn dashed over
    C"), and names a line that runs along a limit or a target drawn over it ("A runs along the TTFT limit 1 s").  Returns the notes added.  Works on the figure as laid out, in pixels, so a line that only
    crosses another, or runs beside it, is left alone."""
    wrap_axis_labels(fig)
    fig.draw_without_rendering()   # the layout the PNG will have: pixels are what a reader sees
    notes_added = []
    for ax in fig.axes:
        found = hidden_lines(ax)
        along = lines_along_references(ax)
        if not found and not along:
            continue
        order = _candidates(ax)
        by_reference: dict[int, list[Line2D]] = {}
        for line, reference in along:
            by_reference.setdefault(id(reference), [reference]).append(line)
        notes = [f"{_and([_name(line) for line in group[1:]])} run{'s' if len(group) == 2 else ''} along the "
                 f"{_name(group[0])}" for group in by_reference.values()]
        strokes = [(line, [c for c in covers if _has_line(c)]) for line, covers in found if _has_line(line)]
        for group in _clusters([(line, covers) for line, covers in strokes if covers], order):
            *over, base = group
            solid = [line for line in over if _dashes(line) is None]
            period = 4.0 * (len(solid) + 1)
            for k, line in enumerate(over):
                if line in solid:
                    i = solid.index(line)
                    line.set_linestyle(((period - 4.0 * i) % period, (4.0, period - 4.0)))
                else:   # its own dashes (step 1's GPU counts), half a period on: the line under shows between
                    offset, sequence = getattr(line, "_unscaled_dash_pattern", (0.0, ()))
                    if sequence:
                        line.set_linestyle((float(offset or 0.0) + sum(sequence) / 2, tuple(sequence)))
                line.set_zorder(base.get_zorder() + 0.01 * (k + 1))
            notes.append(f"{_and([_name(line) for line in over])} drawn dashed over {_name(base)}")
        points = [(line, [c for c in covers if _has_marker(c) and not _has_line(c)])
                  for line, covers in found if not _has_line(line)]
        for group in _clusters([(line, covers) for line, covers in points if covers], order):
            size = max(line.get_markersize() for line in group)
            z = max(line.get_zorder() for line in group)
            for k, line in enumerate(group):
                line.set_markersize(size * max(0.3, 1.0 - 0.3 * k))
                line.set_zorder(z + 0.01 * (k + 1))
            notes.append(f"{_and([_name(line) for line in group])} on one point (drawn inside each other)")
        if notes:
            _add_note(ax, "; ".join(notes))
            notes_added.extend(notes)
    wrap_axis_labels(fig)
    return notes_added


def _and(names: list[str]) -> str:
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _add_note(ax, text: str) -> None:
    """``text`` on a line of its own under the panel's x label (wrapped to the panel by :func:`wrap_axis_labels`)."""
    label = ax.get_xlabel()
    ax.set_xlabel((label + "\n" if label else "") + text, fontsize=ax.xaxis.label.get_fontsize())


def note_width(ax, fontsize: float | None = None) -> int:
    """Characters of text at ``fontsize`` (default: the x label's) that fit under ``ax`` (at 0.6 em a
    character, DejaVu Sans's mean width), so a note never runs past its panel."""
    fontsize = fontsize or ax.xaxis.label.get_fontsize()
    width_px = ax.get_window_extent().width
    return max(24, int(width_px / (_width_px(fontsize, ax.figure.dpi) * 0.6)))


def wrap_axis_labels(fig: Figure) -> None:
    """Every x label's lines wrapped to its panel's width (a note under a narrow panel of three never runs into
    the next panel or off the figure)."""
    for ax in fig.axes:
        label = ax.get_xlabel()
        if not label:
            continue
        width = note_width(ax)
        wrapped = "\n".join(textwrap.fill(line, width) if len(line) > width else line
                            for line in label.split("\n"))
        if wrapped != label:
            ax.set_xlabel(wrapped)


__all__ = ["DPI", "HIDDEN_SHARE", "StepFigure", "figure_legend", "figure_png", "finish_figure", "hidden_lines",
           "lines_along_references", "note_width", "save_png", "uncover_hidden", "wrap_axis_labels"]
