"""Figures of the three steps.

Each function takes the step's result rows, returns a ``matplotlib.figure.Figure``
(built without pyplot, so a notebook shows it once, as the cell's value, and
no global figure state builds up) and, given ``results_dir``, also saves it as a
PNG there (atomically).  Each step has its replay figure (``<step>.png``) and,
for the tests that searched their capacity, a capacity figure
(``<step>_capacity.png``).

What every figure does (:mod:`workbench.study.present.palette` for colours):

* a scheduler has the same colour in every figure; GPU counts of one
  scheduler (step 1) differ in marker and dash;
* reference lines (targets, the floor no load goes below, the offered rate,
  proportional scaling) are black or grey, each with its own dash pattern, and
  an answer (the GPUs needed, the best K) is a star on its scheduler's line, never a line that
  could be taken for a scheduler's;
* one legend per figure, below the panels, outside the data;
* lines that coincide are drawn so both show (the later one dashed on top)
  and the panel's axis label says which coincide;
* a title of at most two lines: what the figure shows, then the trace, the
  hardware model and the SLA;
* an axis is logarithmic where its values span more than a factor of
  :data:`LOG_SPAN`, a share axis runs from 0 (at least to 10%), TTFT/TPOT
  axes are fitted to their data and their limit.

Rows of several seeds (``replications`` > 1) are averaged first
(:func:`workbench.study.answers.analysis.summarize`) and every line gets error
bars: the 95% interval over the seeds, cut to the quantity's range
(:mod:`workbench.study.store.replications`).
"""

from __future__ import annotations

import re
import textwrap
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from workbench.study.answers import analysis
from workbench.study.present import palette
from workbench.study.present.figures import StepFigure, finish_figure
from workbench.study.store.checkpoints import GRID_PROFILE
from workbench.study.store.replications import error_bars

LOG_SPAN = 30.0            # an axis whose positive values span more than this factor is logarithmic
COINCIDE_RTOL = 2e-3       # two series within this relative difference at every x coincide
STAR = {"marker": "*", "ms": 14, "mec": "black", "mew": 0.8, "ls": "none", "zorder": 5}


# --------------------------------------------------------------------------- titles


def trace_title(rows: pd.DataFrame) -> str:
    """The trace's label without its size (which varies in step 1), with "synthetic" when it is."""
    labels = [str(v) for v in rows.get("trace_label", pd.Series(dtype=str)).dropna().unique()]
    stripped = sorted({re.sub(r",?\s*[\d,]+ req\)$", ")", lbl).replace(" ()", "") for lbl in labels})
    title = "; ".join(stripped) or "trace"
    synthetic = "synthetic" in rows and rows["synthetic"].astype(bool).any()
    if synthetic and "synthetic" not in title.lower():
        title = f"synthetic {title}"
    return title


def hardware_title(rows: pd.DataFrame) -> str:
    """The hardware model and the SLA of the rows, e.g. "opt-13b-a100 step profile; SLA: TTFT <= 1 s, TPOT <= 50 ms"."""
    if "latency_profile" not in rows:
        return ""
    profiles = list(dict.fromkeys(rows["latency_profile"].astype(str)))
    parts = []
    for profile in profiles:
        group = rows[rows["latency_profile"].astype(str) == profile]
        if profile in (GRID_PROFILE, "grid"):
            sla = f"E2E <= {float(group['d_sla_s'].iloc[0]):g} s" if "d_sla_s" in group else "E2E <= d_sla"
            parts.append(f"seed formula grid (Qwen3-1.7B/RTX 4080, not measured); SLA: {sla}")
        else:
            limits = [f"{name} <= {_seconds(group[col].dropna().iloc[0])}" for name, col in
                      (("TTFT", "ttft_sla_s"), ("TPOT", "tpot_sla_s")) if col in group and group[col].notna().any()]
            kind = (str(group["latency_kind"].dropna().iloc[0]) if "latency_kind" in group
                    and group["latency_kind"].notna().any() else _profile_kind(profile))
            parts.append(f"{profile} step profile ({kind}); SLA: {', '.join(limits) or 'TTFT and TPOT'}")
    return " | ".join(parts)


latency_title = hardware_title   # the name earlier figures used


def _profile_kind(profile: str) -> str:
    """measured / roofline / linear of a stored profile name (rows written before latency_kind existed)."""
    from workbench.sim.profiles import name_kind

    return name_kind(profile)


def _seconds(value) -> str:
    value = float(value)
    return f"{value * 1e3:g} ms" if value < 0.1 else f"{value:g} s"


def _replication_text(rows: pd.DataFrame) -> str:
    n = int(rows["replications"].max()) if "replications" in rows and rows["replications"].notna().any() else 1
    return f"; mean of {n} seeds, bars: 95% interval" if n > 1 else ""


def _finish(fig: Figure, rows: pd.DataFrame, heading: str, results_dir, filename: str) -> Figure:
    """Two title lines (what; trace, hardware and SLA), the figure's legend below the panels, the PNG."""
    second = f"{trace_title(rows)}; {hardware_title(rows)}{_replication_text(rows)}"
    return finish_figure(fig, f"{heading}\n{second}", results_dir, filename)


# --------------------------------------------------------------------------- axes and lines


def _grid(nrows: int = 2, ncols: int = 2, height: float = 3.3) -> tuple[Figure, np.ndarray]:
    fig = StepFigure(figsize=(11, height * nrows + 1.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _values(rows: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float) if column in rows else np.array([])


def _log_if_spans(ax, values, *, axis: str = "y") -> bool:
    """Logarithmic ``axis`` when the positive values span more than :data:`LOG_SPAN`."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > LOG_SPAN:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        return True
    return False


def _from_zero(ax, values) -> None:
    v = np.asarray(values, dtype=float)
    top = float(np.nanmax(v)) if v.size and np.isfinite(v).any() else 1.0
    ax.set_ylim(0.0, top * 1.08 if top > 0 else 1.0)


def _share_axis(ax, values) -> None:
    """A share axis from 0, never zoomed into a sliver: at least 0..10%, at most 0..100%."""
    v = np.asarray(values, dtype=float)
    top = float(np.nanmax(v)) if v.size and np.isfinite(v).any() else 1.0
    ax.set_ylim(0.0, min(1.02, max(0.1, 1.15 * top)))
    ax.yaxis.set_major_formatter(FuncFormatter(_percent_text))


def _percent_text(value, _pos=None) -> str:
    return f"{value:.0%}" if value >= 0.1 or value == 0 else f"{value:.1%}"


def _fit_axis(ax, values, limit: float | None = None) -> None:
    """Fit the y axis to the data and its limit line: log where they span decades, else linear with a margin."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if limit is not None:
        v = np.append(v, limit)
    if not v.size:
        return
    if v.max() / v.min() > LOG_SPAN:
        ax.set_yscale("log")
        ax.set_ylim(v.min() / 1.5, v.max() * 1.5)
    else:
        span = v.max() - v.min()
        pad = 0.08 * span if span > 0 else 0.1 * v.max()
        ax.set_ylim(max(0.0, v.min() - pad), v.max() + pad)


def _gpu_axis(ax, gpus) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(gpus), [str(int(g)) for g in gpus])
    ax.minorticks_off()


def _series(ax, x, rows: pd.DataFrame, column: str, **style):
    """``column`` against ``x`` with its 95% interval as error bars when the rows carry one."""
    y = _values(rows, column)
    yerr = error_bars(rows, column)
    if yerr is not None:
        return ax.errorbar(x, y, yerr=yerr, capsize=3, **style)
    return ax.plot(x, y, **style)


def _lines(ax, items: list[tuple[str, np.ndarray, pd.DataFrame, dict]], column: str) -> list[str]:
    """Draw ``(label, x, rows, style)`` for ``column``; a line that coincides with one drawn before it is drawn
    dashed on top, so both show.  Returns what coincides, for the panel's axis label."""
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    groups: dict[str, list[str]] = {}
    for label, x, rows, style in items:
        y = _values(rows, column)
        same = next((name for name, x0, y0 in drawn if _coincide(x, y, x0, y0)), None)
        style = dict(style)
        style.setdefault("marker", "o")
        style.setdefault("ms", 4)
        if same is not None:
            style.update(ls=(0, (3, 3)), lw=1.6, ms=3, zorder=4)
            groups.setdefault(same, [same]).append(label)
        else:
            style.setdefault("lw", 2.2)
        _series(ax, x, rows, column, label=label, **style)
        drawn.append((label, np.asarray(x, dtype=float), y))
    if len(drawn) > 1 and len(groups) == 1 and len(next(iter(groups.values()))) == len(drawn):
        return ["all lines"]
    return [" = ".join(members) for members in groups.values()]


def _coincide(x, y, x0, y0) -> bool:
    x, y, x0, y0 = (np.asarray(a, dtype=float) for a in (x, y, x0, y0))
    if x.shape != x0.shape or not np.array_equal(x, x0) or not np.isfinite(y).any():
        return False
    both = np.isfinite(y) & np.isfinite(y0)
    if not np.array_equal(np.isfinite(y), np.isfinite(y0)) or not both.any():
        return False
    return bool(np.allclose(y[both], y0[both], rtol=COINCIDE_RTOL, atol=1e-12))


def _label_axes(ax, xlabel: str, ylabel: str, notes: list[str] = ()) -> None:
    """Axis labels; coinciding lines are said under the x label (outside the data)."""
    if notes:
        text = "; ".join(notes)
        xlabel += "\n" + textwrap.fill(f"lines that coincide (drawn dashed on top): {text}", 70)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)


def _hline(ax, y: float, kind: str, label: str) -> None:
    ax.axhline(y, label=label, **palette.reference(kind))


def _floor(rows: pd.DataFrame) -> float | None:
    """Share of requests that miss the SLA even alone on an idle GPU (1 - capacity_attainable), if known."""
    if "capacity_attainable" in rows and rows["capacity_attainable"].notna().any():
        return 1.0 - float(pd.to_numeric(rows["capacity_attainable"], errors="coerce").max())
    return None


def floor_text(floor: float) -> str:
    """The floor, said the same way in every figure and text."""
    return f"floor {floor:.1%}: miss the SLA even alone on an idle GPU"


def _violation_references(ax, rows: pd.DataFrame) -> None:
    """The target's line (at most 1 - target of the requests may miss the SLA) and, where known, the floor no load
    can go below."""
    target = analysis.sla_target(rows)
    _hline(ax, 1 - target, "target", f"the target: at most {1 - target:.0%} miss the SLA ({target:.0%} meet it)")
    floor = _floor(rows)
    if floor is not None:
        _hline(ax, floor, "floor", floor_text(floor))


def _empty(fig: Figure, message: str) -> Figure:
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _prepared(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a plot draws: replications averaged (the per-bin columns, which no figure draws, left out);
    rows without a scheduler column are one group."""
    rows = analysis.summarize(rows[[c for c in rows.columns if not re.match(r"bin\d+_", c)]])
    return rows if "scheduler" in rows or rows.empty else rows.assign(scheduler="all rows")


def _has_step_metrics(rows: pd.DataFrame) -> bool:
    """Whether the rows carry TTFT/TPOT (every scheduler on a step-time profile)."""
    return "ttft_p99_s" in rows and rows["ttft_p99_s"].notna().any()


def _schedulers(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(rows["scheduler"].astype(str))) if "scheduler" in rows else []


def _step_panels(axes, rows: pd.DataFrame, x: str, items_of, xlabel: str) -> None:
    """p99 TTFT and p99 TPOT against ``x`` (with their limits), lines from ``items_of(rows)``."""
    have = rows[rows["ttft_p99_s"].notna()]
    for ax, metric, name, limit in ((axes[0], "ttft_p99_s", "p99 TTFT (s)", "ttft_sla_s"),
                                    (axes[1], "tpot_p99_s", "p99 TPOT (s)", "tpot_sla_s")):
        notes = _lines(ax, items_of(have), metric)
        value = float(have[limit].dropna().iloc[0]) if limit in have and have[limit].notna().any() else None
        if value is not None:
            _hline(ax, value, "target", f"{name.split()[1]} limit {_seconds(value)}")
        _fit_axis(ax, _values(have, metric), value)
        _label_axes(ax, xlabel, name, notes)


def _scheduler_items(rows: pd.DataFrame, x: str):
    """One line per scheduler against ``x``, in the scheduler's colour, schedulers in the palette's order."""
    groups = dict(list(rows.sort_values(x).groupby("scheduler", sort=False)))
    return [(name, groups[name][x].to_numpy(dtype=float), groups[name], {"color": palette.color(name)})
            for name in palette.order(groups)]


# --------------------------------------------------------------------------- step 1


def _config_items(rows: pd.DataFrame):
    """Step 1: one line per configuration (scheduler and GPU count), colour by scheduler, marker by GPUs."""
    items = []
    groups = dict(list(rows.groupby("scheduler", sort=False)))
    for scheduler in palette.order(groups):
        group = groups[scheduler]
        for i, (label, config) in enumerate(group.sort_values("num_gpus").groupby("label", sort=False)):
            config = config.sort_values("num_requests")
            items.append((str(label), config["num_requests"].to_numpy(dtype=float), config,
                          {"color": palette.color(str(scheduler)), **palette.gpu_style(i)}))
    return items


def plot_request_scaling(rows: pd.DataFrame, results_dir=None, filename: str = "step1_request_scaling.png") -> Figure:
    """Step 1: SLA violation, throughput, goodput and p99 latency against request volume (and p99 TTFT/TPOT on
    a step-time profile), a line per configuration; the offered rate of each volume as a reference."""
    rows = _prepared(rows)
    steps = _has_step_metrics(rows)
    fig, axes = _grid(3 if steps else 2)
    if rows.empty:
        return _empty(fig, "no results")
    volumes = np.sort(rows["num_requests"].unique())
    offered = rows.drop_duplicates("num_requests").sort_values("num_requests")
    panels = (("sla_violation_rate", "SLA violation rate"), ("throughput_rps", "throughput (req/s)"),
              ("goodput_rps", "goodput (req/s)"), ("latency_p99_s", "p99 end-to-end latency (s)"))
    for ax, (column, ylabel) in zip(axes, panels):
        notes = _lines(ax, _config_items(rows), column)
        if column == "sla_violation_rate":
            _share_axis(ax, _values(rows, column))
            _violation_references(ax, rows[rows["num_requests"] == volumes.max()])
        elif column in ("throughput_rps", "goodput_rps") and "offered_rps" in offered:
            ax.plot(offered["num_requests"], offered["offered_rps"], marker="x", ms=5,
                    label="offered rate of each volume (the first N requests of the trace)",
                    **palette.reference("offered"))
            if not _log_if_spans(ax, np.r_[_values(rows, column), _values(offered, "offered_rps")]):
                _from_zero(ax, np.r_[_values(rows, column), _values(offered, "offered_rps")])
        else:
            _log_if_spans(ax, _values(rows, column))
        ax.set_xscale("log")
        _label_axes(ax, "requests (log)", ylabel, notes)
    if steps:
        _step_panels(axes[4:], rows, "num_requests", _config_items, "requests (log)")
        for ax in axes[4:]:
            ax.set_xscale("log")
    return _finish(fig, rows, "Step 1: request scaling, one line per scheduler and GPU count", results_dir,
                   filename)


def plot_step1_capacity(rows: pd.DataFrame, results_dir=None,
                        filename: str = "step1_request_scaling_capacity.png") -> Figure:
    """Step 1: each configuration's capacity at the largest volume, one bar each (unreachable targets marked)."""
    rows = analysis.capacity_rows(_prepared(rows))
    fig = StepFigure(figsize=(max(9, 1.5 * len(rows) + 2), 5.0), layout="constrained")
    ax = fig.subplots()
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rank = {name: i for i, name in enumerate(palette.order(rows["scheduler"]))}
    rows = rows.assign(_rank=rows["scheduler"].map(rank)).sort_values(["_rank", "num_gpus"], kind="stable")
    rows = rows.drop(columns="_rank").reset_index(drop=True)
    caps = _values(rows, "capacity_rps")
    x = np.arange(len(rows))
    yerr = error_bars(rows, "capacity_rps")
    found = np.isfinite(caps)
    for i, r in rows.iterrows():
        ax.bar(i, caps[i] if found[i] else 0.0, color=palette.color(str(r["scheduler"])),
               yerr=None if yerr is None else yerr[:, [i]], capsize=4, label=str(r["scheduler"]))
    log = _log_if_spans(ax, caps)
    base = np.nanmin(caps[found]) / 2 if log and found.any() else 0.0
    for i, c in enumerate(caps):
        ax.text(i, c if found[i] else max(base, 0.0), f"{c:.3g}" if found[i] else "unreachable",
                ha="center", va="bottom", fontsize=8, color="black")
    ax.set_xticks(x, [str(v).replace(" (", "\n(") for v in rows["label"]], fontsize=8)
    _label_axes(ax, "", "capacity (req/s)" + (", log" if log else ""))
    volume = int(rows["num_requests"].max())
    heading = f"Step 1: {_capacity_heading(rows)}, at {volume:,} requests"
    return _finish(fig, rows, heading, results_dir, filename)


# --------------------------------------------------------------------------- step 2


def plot_gpu_scaling(rows: pd.DataFrame, results_dir=None, filename: str = "step2_gpu_scaling.png") -> Figure:
    """Step 2: SLA violation, goodput, throughput and p99 latency against the GPU count, a line per scheduler (and
    p99 TTFT/TPOT on a step-time profile); a star marks the GPUs each scheduler needs."""
    rows = _prepared(rows)
    steps = _has_step_metrics(rows)
    fig, axes = _grid(3 if steps else 2)
    if rows.empty:
        return _empty(fig, "no results")
    rows = rows.sort_values("num_gpus")
    gpus = np.array(sorted({int(g) for g in rows["num_gpus"]}))
    offered = rows.drop_duplicates("num_gpus")
    panels = (("sla_violation_rate", "SLA violation rate"), ("goodput_rps", "goodput (req/s)"),
              ("throughput_rps", "throughput (req/s)"), ("latency_p99_s", "p99 end-to-end latency (s)"))
    for ax, (column, ylabel) in zip(axes, panels):
        notes = _lines(ax, _scheduler_items(rows, "num_gpus"), column)
        if column == "sla_violation_rate":
            _share_axis(ax, _values(rows, column))
            _violation_references(ax, rows)
        elif column in ("goodput_rps", "throughput_rps"):
            if "offered_rps" in offered and offered["offered_rps"].notna().any():
                ax.plot(offered["num_gpus"], offered["offered_rps"], label="offered rate (replayed)",
                        **palette.reference("offered"))
            if column == "goodput_rps":
                _best_stars(ax, rows, "num_gpus", column, analysis.gpus_needed, gpus,
                            "GPUs each scheduler needs (the fewest whose capacity covers the replayed load)")
            _from_zero(ax, np.r_[_values(rows, column), _values(offered, "offered_rps")])
        else:
            _log_if_spans(ax, _values(rows, column)) or _from_zero(ax, _values(rows, column))
        _gpu_axis(ax, gpus)
        _label_axes(ax, "GPUs", ylabel, notes)
    if steps:
        _step_panels(axes[4:], rows, "num_gpus", lambda r: _scheduler_items(r, "num_gpus"), "GPUs")
        for ax in axes[4:]:
            _gpu_axis(ax, gpus)
    return _finish(fig, rows, "Step 2: GPU scaling at the replayed load, one line per scheduler", results_dir,
                   filename)


def _best_stars(ax, rows: pd.DataFrame, x: str, column: str, rule, tested, label: str, edge_note: bool = True) -> None:
    """A star on each scheduler's line at its best value of ``x`` (``rule(rows of one scheduler)``); a best
    at the largest value tested is said in the label (``edge_note``)."""
    edge = []
    for scheduler, group in rows.groupby("scheduler", sort=False):
        if group[x].nunique() < 2:
            continue
        best = rule(group)
        if best is None:
            continue
        at = group[group[x] == best]
        ax.plot(at[x], _values(at, column), color=palette.color(str(scheduler)), **STAR)
        if edge_note and len(tested) > 1 and best == max(tested):
            edge.append(str(scheduler))
    text = label + (f"; at the largest tested: {', '.join(edge)}" if edge else "")
    ax.plot([], [], color="white", label=text, **{**STAR, "mfc": "white"})


def _capacity_heading(rows: pd.DataFrame) -> str:
    """e.g. "capacity: the largest rate at which >= 90% of requests meet the SLA"."""
    targets = sorted({float(t) for t in rows.get("capacity_target", pd.Series(dtype=float)).dropna()})
    criteria = set(rows.get("capacity_criterion", pd.Series(dtype=str)).dropna())
    if criteria == {"p99_latency"}:
        return "capacity: the largest rate with p99 latency within the SLA"
    share = f"{targets[0]:.0%}" if len(targets) == 1 else "the target share"
    return f"capacity: the largest rate at which >= {share} of requests meet the SLA"


def _unreachable_note(ax, labels: list[str]) -> list[str]:
    """The configurations no load brings to the target, one entry per scheduler (they have no point)."""
    grouped: dict[str, list[str]] = {}
    for label in labels:
        m = re.match(r"^(.*?) \((\d+) GPUs?(.*)\)$", label)
        name, detail = (m.group(1) + (m.group(3) and f" {m.group(3).strip(', ')}"), m.group(2)) if m else (label, "")
        grouped.setdefault(name, []).append(detail)
    return [f"{name} on {', '.join(d for d in details if d)} GPU(s)" if any(details) else name
            for name, details in grouped.items()]


def plot_gpu_capacity(rows: pd.DataFrame, results_dir=None, filename: str = "step2_gpu_scaling_capacity.png") -> Figure:
    """Step 2: capacity against GPU count per scheduler (log-log, with capacity proportional to the GPUs from each
    scheduler's smallest pool with a capacity, the replayed rate and a star at the GPUs each scheduler needs), and
    capacity per GPU with a star where each scheduler has the most."""
    fig = StepFigure(figsize=(11, 5.2), layout="constrained")
    ax_cap, ax_per = fig.subplots(1, 2)
    rows = analysis.capacity_rows(_prepared(rows))
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rows = rows.sort_values("num_gpus")
    rows = rows.assign(capacity_per_gpu=rows["capacity_rps"] / rows["num_gpus"])
    for side in ("low", "high"):
        if f"capacity_rps_ci95_{side}" in rows:
            rows[f"capacity_per_gpu_ci95_{side}"] = rows[f"capacity_rps_ci95_{side}"] / rows["num_gpus"]
    gpus = np.array(sorted({int(g) for g in rows["num_gpus"]}))
    notes_cap = _lines(ax_cap, _scheduler_items(rows, "num_gpus"), "capacity_rps")
    for scheduler, group in rows.groupby("scheduler", sort=False):
        n0 = analysis.capacity_scaling_base(group)
        if n0 is None:
            continue
        base = group[group["num_gpus"] == n0].iloc[0]
        g = group.loc[group["num_gpus"] >= n0, "num_gpus"].to_numpy(dtype=float)
        ax_cap.plot(g, float(base["capacity_rps"]) / n0 * g, color=palette.color(str(scheduler)),
                    ls=palette.REFERENCES["ideal"]["ls"], lw=1.0, alpha=0.8)
    ax_cap.plot([], [], label="capacity proportional to the GPUs from each scheduler's smallest pool with a capacity "
                              "(dotted, its colour; a line above it: capacity per GPU grows with the pool)",
                **palette.reference("ideal"))
    offered = analysis.replayed_rate(rows)
    if np.isfinite(offered):
        _hline(ax_cap, offered, "offered", f"replayed rate {offered:.3g} req/s: a pool must sustain it")
    _best_stars(ax_cap, rows, "num_gpus", "capacity_rps", analysis.gpus_needed, gpus,
                "GPUs each scheduler needs (the fewest whose capacity covers the replayed rate)", edge_note=False)
    _log_if_spans(ax_cap, _values(rows, "capacity_rps"))
    _gpu_axis(ax_cap, gpus)
    missing = _unreachable_note(ax_cap, [str(v) for v in rows.loc[rows["capacity_rps"].isna(), "label"]])
    xlabel = "GPUs" + ("\nno load reaches the target: " + "; ".join(missing) if missing else "")
    _label_axes(ax_cap, xlabel, "capacity (req/s)", notes_cap)
    notes_per = _lines(ax_per, _scheduler_items(rows, "num_gpus"), "capacity_per_gpu")
    _best_stars(ax_per, rows, "num_gpus", "capacity_per_gpu", analysis.best_gpu_count_by_capacity_per_gpu, gpus,
                "most capacity per GPU of each scheduler (counts tied within the search's resolution: the fewest)")
    _log_if_spans(ax_per, _values(rows, "capacity_per_gpu")) or _from_zero(ax_per, _values(rows, "capacity_per_gpu"))
    _gpu_axis(ax_per, gpus)
    _label_axes(ax_per, "GPUs", "capacity per GPU (req/s)", notes_per)
    return _finish(fig, rows, f"Step 2: {_capacity_heading(rows)}, against the GPU count", results_dir, filename)


# --------------------------------------------------------------------------- step 3


def _swept(rows: pd.DataFrame):
    """(rows of schedulers swept over K, rows of those run once: reference lines)."""
    per_k = rows.groupby("scheduler", sort=False)["k_bins"].transform("nunique") > 1
    return rows[per_k], rows[~per_k]


def _flat_lines(ax, flat: pd.DataFrame, column: str, swept: pd.DataFrame | None = None) -> None:
    """A scheduler without bins (run once): a horizontal line in its colour across the K axis.  One more than
    twice as high as every swept line would flatten them: its value goes in the legend, not on the panel."""
    top = float(np.nanmax(_values(swept, column))) if swept is not None and not swept.empty else np.inf
    for name in palette.order(flat["scheduler"]) if not flat.empty else []:
        r = flat[flat["scheduler"] == name].iloc[0]
        value = float(r.get(column, np.nan))
        if not np.isfinite(value):
            continue
        style = {"color": palette.color(name), "ls": (0, (5, 2, 1, 2)), "lw": 1.4}
        if np.isfinite(top) and top > 0 and value > 2 * top:
            ax.plot([], [], label=f"{name} (no bins): {value:.3g}, above this panel", **style)
        else:
            ax.axhline(value, label=f"{name} (no bins: one run)", **style)


def plot_kbins_sensitivity(rows: pd.DataFrame, results_dir=None,
                           filename: str = "step3_kbins_sensitivity.png") -> Figure:
    """Step 3: SLA violation, p99 latency, throughput and goodput against K, a line per binning scheduler;
    schedulers without bins (one test each) are horizontal lines in their colour; a star marks the best K."""
    rows = _prepared(rows)
    steps = _has_step_metrics(rows)
    fig, axes = _grid(3 if steps else 2)
    if rows.empty:
        return _empty(fig, "no results")
    rows = rows.sort_values("k_bins")
    swept, flat = _swept(rows)
    k = np.array(sorted({int(v) for v in (swept if not swept.empty else rows)["k_bins"]}))
    panels = (("sla_violation_rate", "SLA violation rate"), ("goodput_rps", "goodput (req/s)"),
              ("throughput_rps", "throughput (req/s)"), ("latency_p99_s", "p99 end-to-end latency (s)"))
    for ax, (column, ylabel) in zip(axes, panels):
        notes = _lines(ax, _scheduler_items(swept, "k_bins"), column)
        _flat_lines(ax, flat, column)
        notes += _flat_coincidences(swept, flat, column)
        if column == "sla_violation_rate":
            _share_axis(ax, _values(rows, column))
            _violation_references(ax, rows)
            _best_stars(ax, swept, "k_bins", column, _best_k, k,
                        "best K of each binning scheduler (most capacity; K tied within resolution: the smallest)")
        elif column == "latency_p99_s":
            _log_if_spans(ax, _values(rows, column)) or _from_zero(ax, _values(rows, column))
        else:
            if "offered_rps" in rows and rows["offered_rps"].notna().any():
                _hline(ax, float(rows["offered_rps"].max()), "offered", "offered rate (replayed)")
            _from_zero(ax, np.r_[_values(rows, column), _values(rows, "offered_rps")])
        ax.set_xscale("log", base=2)
        ax.set_xticks(k, [str(int(v)) for v in k])
        ax.minorticks_off()
        _label_axes(ax, "K (bins)", ylabel, notes)
    merged = swept[swept["k_bins_effective"] != swept["k_bins"]] if "k_bins_effective" in swept else swept.iloc[0:0]
    if not merged.empty:
        axes[2].set_xlabel(axes[2].get_xlabel() + "\nbins merged (equal-mass edges): " + ", ".join(
            f"K={int(r.k_bins)} -> {int(r.k_bins_effective)}" for r in merged.itertuples()))
    if steps:
        _step_panels(axes[4:], rows[rows["ttft_p99_s"].notna()], "k_bins",
                     lambda r: _scheduler_items(_swept(r)[0], "k_bins"), "K (bins)")
        for ax, metric in zip(axes[4:], ("ttft_p99_s", "tpot_p99_s")):
            _flat_lines(ax, flat, metric)
            ax.set_xscale("log", base=2)
            ax.set_xticks(k, [str(int(v)) for v in k])
            ax.minorticks_off()
    gpus = ", ".join(str(int(g)) for g in sorted(rows["num_gpus"].unique()))
    return _finish(fig, rows, f"Step 3: K-bins sensitivity on {gpus} GPUs at the replayed load", results_dir,
                   filename)


def _best_k(rows: pd.DataFrame):
    return analysis.best_k_answer(rows)["best_k"]


def _flat_coincidences(swept: pd.DataFrame, flat: pd.DataFrame, column: str) -> list[str]:
    """"multi_bin_dynamic = dynamic_no_bins" where a swept line lies on a scheduler's horizontal line at every K."""
    notes = []
    values = dict(zip(flat["scheduler"].astype(str), _values(flat, column))) if column in flat else {}
    names = [n for n in palette.order(values) if np.isfinite(values[n])]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.isclose(values[a], values[b], rtol=COINCIDE_RTOL):
                notes.append(f"{a} = {b}")
    for flat_name, value in values.items():
        for name, group in swept.groupby("scheduler", sort=False):
            other = _values(group, column)
            if np.isfinite(value) and np.isfinite(other).all() and np.allclose(other, value, rtol=COINCIDE_RTOL):
                notes.append(f"{name} = {flat_name}")
    return notes


def plot_kbins_capacity(rows: pd.DataFrame, results_dir=None,
                        filename: str = "step3_kbins_sensitivity_capacity.png") -> Figure:
    """Step 3: capacity against K at the step's GPU count, a line per binning scheduler (a star at its best K),
    schedulers without bins as horizontal lines in their colour."""
    fig = StepFigure(figsize=(9, 5.4), layout="constrained")
    ax = fig.subplots()
    rows = analysis.capacity_rows(_prepared(rows))
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rows = rows.sort_values("k_bins")
    swept, flat = _swept(rows)
    k = np.array(sorted({int(v) for v in (swept if not swept.empty else rows)["k_bins"]}))
    notes = _lines(ax, _scheduler_items(swept, "k_bins"), "capacity_rps")
    _flat_lines(ax, flat, "capacity_rps", swept)
    notes += _flat_coincidences(swept, flat, "capacity_rps")
    _best_stars(ax, swept, "k_bins", "capacity_rps", analysis.best_k_by_capacity, k,
                "best K of each binning scheduler (most capacity; K tied within resolution: the smallest)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [str(int(v)) for v in k])
    ax.minorticks_off()
    shown = [v for v in np.r_[_values(swept, "capacity_rps"), _values(flat, "capacity_rps")]
             if np.isfinite(v) and v <= 2 * np.nanmax(_values(swept, "capacity_rps"))] if not swept.empty else []
    _from_zero(ax, shown)
    missing = _unreachable_note(ax, [str(v) for v in rows.loc[rows["capacity_rps"].isna(), "label"]])
    xlabel = "K (bins)" + ("\nno load reaches the target: " + "; ".join(missing) if missing else "")
    _label_axes(ax, xlabel, "capacity (req/s)", notes)
    gpus = ", ".join(str(int(g)) for g in sorted(rows["num_gpus"].unique()))
    return _finish(fig, rows, f"Step 3: {_capacity_heading(rows)}, against K on {gpus} GPUs", results_dir,
                   filename)


__all__ = ["plot_request_scaling", "plot_step1_capacity", "plot_gpu_scaling", "plot_gpu_capacity",
           "plot_kbins_sensitivity", "plot_kbins_capacity", "finish_figure", "trace_title", "hardware_title",
           "floor_text"]
