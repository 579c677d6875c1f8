"""Disaggregated vs colocated serving as the SLO tightens: the tables and the figure of ``notebooks/disaggregation``.

The sweeps are run by :mod:`workbench.study.runs.disaggregation` (``slo_sweep``: the best disaggregated and
colocated placement at each SLO scale; ``simulated_goodput``: the measured deployments simulated);
``measured_goodput`` reads the same quantity off measured runs (the highest measured rate whose attainment
meets the target, per GPU), and ``plot_goodput_vs_slo`` draws them together.  The sentences are computed from
those tables: who wins per kernel set and where the two kinds cross (:func:`winner_lines`), whether
disaggregation gains where the TTFT and TPOT limits pull apart (:func:`limits_lines`, over ``limits_sweep``'s
grid, drawn by :func:`plot_limits`), how far the placement search's estimates were from the verified goodputs
(:func:`estimate_line`), and the answer to the notebook's question (:func:`answer`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

RANKING_COLUMNS = ("rank", "kind", "placement", "gpus", "goodput_rps", "goodput_per_gpu", "estimate_rps", "status")
SWEEP_COLUMNS = ("trace", "slo_scale", "ttft_s", "tpot_s", "kind", "placement", "gpus", "goodput_rps",
                 "goodput_per_gpu")
LIMITS_COLUMNS = ("ttft_scale", "tpot_scale", "ttft_s", "tpot_s", "kind", "placement", "gpus", "goodput_per_gpu")
DISAGGREGATED = "disaggregated"
RESOLUTION = 0.02   # each goodput is a grid point this far (relative) below where the SLO fails
POINT_COLUMNS = ("deployment", "slo_scale", "gpus", "measured_goodput_per_gpu", "simulated_goodput_per_gpu")


def readable(table: pd.DataFrame, columns) -> pd.DataFrame:
    """A table of this module for reading (:func:`workbench.study.present.tables.display_table`: units and
    precision; "0" goodput where no placement meets the SLO)."""
    from workbench.study.present.tables import display_table

    return display_table(table, columns)


def measured_goodput(runs, scales, *, ttft_s: float = 0.2, tpot_s: float = 0.1, attainment: float = 0.9,
                     group=None) -> pd.DataFrame:
    """Per deployment (``group(run)``, default: the config's GPU layout) and SLO scale: the highest measured
    rate whose attainment meets ``attainment`` (0 if none), per GPU.  The runs only sample a few rates, so it
    is a lower bound of the deployment's goodput."""
    from workbench.sim.metrics import slo_attainment

    group = group or (lambda r: _layout(r.config))
    rows = []
    for scale in scales:
        best = {}
        for run in runs:
            key = group(run)
            att = slo_attainment(run.measured.ttft_s, run.measured.tpot_s, ttft_s * scale, tpot_s * scale)
            rate = run.rate_rps if att >= attainment else 0.0
            gpus = run.config.num_gpus
            best[key] = max(best.get(key, (0.0, gpus)), (rate, gpus))
        for key, (rate, gpus) in best.items():
            rows.append({"slo_scale": scale, "deployment": key, "gpus": gpus, "measured_goodput_rps": rate,
                         "measured_goodput_per_gpu": rate / gpus})
    return pd.DataFrame(rows)


def _layout(cfg) -> str:
    if cfg.scheduler != "disaggregated":
        return f"colocated ({cfg.num_gpus} GPU{'s' if cfg.num_gpus > 1 else ''})"
    pp = f",pp{cfg.decode_pp}" if cfg.decode_pp > 1 else ""
    return f"{cfg.prefill_replicas}xP(tp{cfg.prefill_tp}) + {cfg.decode_replicas}xD(tp{cfg.decode_tp}{pp})"


def plot_goodput_vs_slo(sweeps: dict, measured: pd.DataFrame | None = None, simulated: pd.DataFrame | None = None,
                        *, gpus: int, attainment: float = 0.9, results_dir=None,
                        filename: str = "disaggregation.png") -> Figure:
    """Goodput per GPU of the best disaggregated and best colocated placement against the SLO scale, one panel per
    trace (``sweeps``: trace label -> slo_sweep table); on the panel of the first trace, the measured deployments
    (filled markers) and the same deployments simulated (open markers); a two-line title, one legend below
    the panels."""
    from workbench.study.present import palette
    from workbench.study.present.figures import finish_figure

    fig = Figure(figsize=(5.6 * len(sweeps), 5.0), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(sweeps), squeeze=False)[0]
    # each kind in its scheduler's colour (colocated replicas run continuous_fcfs); the colocated ones on other
    # kernels dashed
    for k, (label, sweep) in enumerate(sweeps.items()):
        ax = axes[k]
        for j, (kind, part) in enumerate(sweep.groupby("kind", sort=False)):
            part = part.sort_values("slo_scale")
            scheduler = "disaggregated" if kind == "disaggregated" else "continuous_fcfs"
            dash = "-" if kind == "disaggregated" or kind.endswith("same kernels") else "--"
            ax.plot(part.slo_scale, part.goodput_per_gpu, marker="o", ls=dash, color=palette.color(scheduler), lw=2,
                    label=f"best {kind} (simulated)")
        if k == 0 and measured is not None:
            markers = iter("sD^vP*X")
            for name, part in measured.groupby("deployment"):
                marker = next(markers, "o")
                ax.plot(part.slo_scale, part.measured_goodput_per_gpu, marker, color="black", ms=7, ls="none",
                        label=f"{name}: measured")
                if simulated is not None:
                    sim = simulated[simulated.deployment == name]
                    ax.plot(sim.slo_scale, sim.simulated_goodput_per_gpu, marker, color="black", ms=7,
                            mfc="none", ls="none", label=f"{name}: simulated")
        scales = sorted(sweep.slo_scale.unique())
        ax.set_xscale("log")
        ax.set_xticks(scales)
        ax.set_xticklabels([f"{v:g}" for v in scales])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("SLO scale (x TTFT 0.2 s and TPOT 0.1 s; tighter to the right)")
        ax.set_ylabel("goodput per GPU (requests/s meeting the SLO)")
        ax.set_title(f"{label}: best placement on {gpus} GPUs", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    return finish_figure(fig, f"Disaggregated vs colocated serving as the SLO tightens\n{attainment:.0%} of the requests "
                         "within both limits; measured deployments as black points (filled), simulated (open)",
                         results_dir, filename)


KERNEL_WORDS = {"same kernels": "the same kernels", "vLLM kernels": "vLLM's kernels"}


def _kernels(kind: str) -> str:
    """``"colocated, vLLM kernels"`` -> ``"vLLM's kernels"`` (the colocated replicas' step times, in words)."""
    label = kind.split(", ", 1)[1] if ", " in kind else kind
    return KERNEL_WORDS.get(label, label)


def _ratio(disaggregated: float, colocated: float) -> float:
    """Disaggregated over colocated goodput per GPU: inf where only disaggregated meets the SLO, 0 where only
    colocated does, NaN where neither does."""
    if colocated > 0:
        return disaggregated / colocated
    return math.inf if disaggregated > 0 else math.nan


def _winner(ratio: float, resolution: float) -> str:
    if math.isnan(ratio):
        return "neither"
    if abs(ratio - 1) <= resolution * (1 + resolution):   # each side is up to `resolution` low: no winner
        return "tied"
    return DISAGGREGATED if ratio > 1 else "colocated"


def _ratio_text(ratio: float) -> str:
    if math.isinf(ratio):
        return "only disaggregated meets the SLO"
    if ratio == 0:
        return "only colocated meets the SLO"
    return "neither meets the SLO" if math.isnan(ratio) else f"{ratio:.2f}"


def _scales(values) -> str:
    values = [f"{v:g}" for v in values]
    return f"at x{values[0]}" if len(values) == 1 else f"from x{values[0]} to x{values[-1]}"


def ratios(sweep: pd.DataFrame, index: str | list[str] = "slo_scale") -> pd.DataFrame:
    """Per row of ``index`` (an SLO scale, or a TTFT and TPOT scale) and colocated kind: the disaggregated and the
    colocated goodput per GPU and their ratio (:func:`_ratio`)."""
    index = [index] if isinstance(index, str) else list(index)
    wide = sweep.pivot_table(index=index, columns="kind", values="goodput_per_gpu", aggfunc="first")
    rows = []
    for key, row in wide.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        for kind in [k for k in wide.columns if k != DISAGGREGATED]:
            d, c = float(row.get(DISAGGREGATED, 0.0)), float(row[kind])
            rows.append({**dict(zip(index, key)), "kind": kind, "disaggregated_per_gpu": d, "colocated_per_gpu": c,
                         "ratio": _ratio(d, c)})
    return pd.DataFrame(rows)


def winner_lines(sweeps: dict, resolution: float = RESOLUTION) -> list[str]:
    """Per trace (``sweeps``: label -> slo_sweep table) and colocated kernel set: who wins at each SLO scale, from
    the loosest to the tightest, and between which scales the winner changes.  Goodputs within ``resolution``
    of each other (the capacity search's) are tied."""
    lines = []
    for label, sweep in sweeps.items():
        table = ratios(sweep)
        for kind, part in table.groupby("kind", sort=False):
            part = part.sort_values("slo_scale", ascending=False)
            won = [(r.slo_scale, _winner(r.ratio, resolution), r.ratio) for r in part.itertuples()]
            segments = []   # [winner, [scales], [ratios]] for each run of one winner
            for scale, who, ratio in won:
                if segments and segments[-1][0] == who:
                    segments[-1][1].append(scale)
                    segments[-1][2].append(ratio)
                else:
                    segments.append([who, [scale], [ratio]])
            head = f"{label}, against colocated replicas on {_kernels(kind)} (disaggregated / colocated goodput per GPU)"
            if len(segments) == 1 and segments[0][0] in (DISAGGREGATED, "colocated"):
                who, scales, values = segments[0]
                lines.append(f"{head}: {who} wins at every SLO scale, {_scales(scales)[5:]} "
                             f"({', '.join(map(_ratio_text, values))}).")
                continue
            parts = []
            for who, scales, values in segments:
                verb = {"neither": "neither meets the SLO", "tied": "tied within the search's "
                        f"{resolution:.0%} resolution"}.get(who, f"{who} wins")
                parts.append(f"{verb} {_scales(scales)}" + ("" if who == "neither" else
                                                                f" ({', '.join(map(_ratio_text, values))})"))
            crossings = [f"x{a[1][-1]:g} and x{b[1][0]:g}" for a, b in zip(segments, segments[1:])
                         if {a[0], b[0]} == {DISAGGREGATED, "colocated"}]
            text = f"{head}: " + "; ".join(parts)
            if crossings:
                text += "; they cross between " + " and between ".join(crossings)
            lines.append(text + ".")
    return lines


def limits_lines(grid: pd.DataFrame, resolution: float = RESOLUTION) -> list[str]:
    """Does disaggregation gain where the two limits pull apart?  ``grid``: ``limits_sweep``'s rows.  For each
    colocated kernel set, each pair of unequal scales (a, b) is compared with the two equal scalings around it,
    (min, min) and (max, max): the claim holds at that pair when disaggregated / colocated is higher there than at
    both (by more than the search's ``resolution``)."""
    lines = []
    table = ratios(grid, ["ttft_scale", "tpot_scale"])
    for kind, part in table.groupby("kind", sort=False):
        at = {(r.ttft_scale, r.tpot_scale): r.ratio for r in part.itertuples()}
        together = {a: r for (a, b), r in at.items() if a == b}
        apart = [(a, b, r) for (a, b), r in sorted(at.items()) if a != b]
        verdicts, beyond = [], []
        for a, b, r in apart:
            around = [together.get(min(a, b)), together.get(max(a, b))]
            if any(v is None for v in around):
                continue
            if not all(0 < v < math.inf for v in [*around, r]):   # one kind alone meets the SLO: no ratio to compare
                beyond.append((a, b))
                continue
            verdicts.append((a, b, r, r > max(around) * (1 + resolution)))
        if not verdicts and not beyond:
            continue
        held = [v for v in verdicts if v[3]]
        listed = "; ".join(f"TTFT x{a:g}, TPOT x{b:g}: {_ratio_text(at[(a, b)])}" for a, b, _ in apart)
        diagonal = ", ".join(f"x{a:g}: {_ratio_text(r)}" for a, r in sorted(together.items()))
        text = (f"Against colocated replicas on {_kernels(kind)}, disaggregated / colocated goodput per GPU with both "
                f"limits scaled together is {diagonal}; with them pulled apart, {listed}.")
        if beyond:
            text += (f" {len(beyond)} of the {len(apart)} pairs where the limits differ cannot be compared (at them or at "
                     "an equal scaling around them only one kind meets the SLO).")
        if not verdicts:
            lines.append(text)
            continue
        text += (f" Of the {len(verdicts)} pairs {'that can' if beyond else 'where the limits differ'}, it is higher than at both equal scalings around it (by more "
                 f"than the search's {resolution:.0%} resolution) at {len(held)}")
        if len(held) == len(verdicts):
            text += ": here disaggregation does gain where the limits pull apart."
        elif not held:
            text += ": the claim that disaggregation gains where the limits pull apart does not hold here."
        else:
            text += " (" + "; ".join(f"TTFT x{a:g} with TPOT x{b:g}" for a, b, _, _ in held) + \
                "): the claim that disaggregation gains where the limits pull apart holds there only."
        lines.append(text)
    return lines


def estimate_line(ranking: pd.DataFrame, prune_margin: float) -> str:
    """How the placement search's estimates compared with the goodputs it verified, against what pruning allows
    (a placement is pruned when its estimate per GPU is below the best verified one divided by ``prune_margin``)."""
    verified = ranking[(ranking.status == "searched") & (ranking.kind == DISAGGREGATED) & (ranking.estimate_rps > 0)]
    pruned = ranking[ranking.status == "pruned"]
    searched = int((ranking.status != "pruned").sum())
    text = (f"{searched} placements were searched and {len(pruned)} pruned (estimate per GPU below the best verified "
            f"goodput per GPU / {prune_margin:g}; a pruned placement has no rank, its goodput being unknown)")
    if not len(verified):
        return text + "."
    ratio = verified.goodput_rps / verified.estimate_rps
    low_by = float(ratio.max() - 1)
    text += ". The estimate, min(prefill instances x one's goodput, decode instances x one's), is not a bound: "
    text += (f"the one disaggregated placement verified had {ratio.iloc[0]:.2f} times its estimate" if len(ratio) == 1
             else f"the {len(ratio)} disaggregated placements verified had {ratio.min():.2f} to {ratio.max():.2f} "
                  "times their estimates")
    if low_by > prune_margin - 1:
        return text + (f", more than the {prune_margin - 1:.0%} pruning allows: a pruned placement may beat the best "
                       "found; search again with a larger prune_margin.")
    return text + f", within the {prune_margin - 1:.0%} pruning allows."


def prefill_share_line(sweeps: dict, mean_prompts: dict | None = None) -> str:
    """The share of a best disaggregated placement's GPUs that serve prefill, averaged over the SLO scales where
    one meets the SLO, per trace (``mean_prompts``: label -> mean prompt tokens, said beside it)."""
    parts = []
    for label, sweep in sweeps.items():
        rows = sweep[(sweep.kind == DISAGGREGATED) & (sweep.goodput_rps > 0)]
        if len(rows) and "prefill_gpus" in rows:
            share = float((rows.prefill_gpus / rows.gpus).mean())
            prompt = (mean_prompts or {}).get(label)
            parts.append(f"{share:.0%} on the {label}" + (f" (mean prompt {prompt:,.0f} tokens)" if prompt else ""))
    if not parts:
        return ""
    return ("Prefill gets " + " and ".join(parts) + " of the best disaggregated placement's GPUs, on average over "
            "the SLO scales where one meets the SLO.")


def answer(sweeps: dict, resolution: float = RESOLUTION, scale: float = 1.0) -> str:
    """The notebook's question, who should serve: per colocated kernel set, who wins at the base SLO (``scale``)
    on each trace, and at how many of the SLO scales swept."""
    parts = []
    kinds = list(dict.fromkeys(k for sweep in sweeps.values() for k in sweep.kind if k != DISAGGREGATED))
    for kind in kinds:
        cells = []
        for label, sweep in sweeps.items():
            table = ratios(sweep)
            table = table[table.kind == kind]
            if not len(table):
                continue
            won = [_winner(r, resolution) for r in table.ratio]
            base = table[np.isclose(table.slo_scale, scale)]
            cell = f"on the {label}"
            if len(base):
                r = float(base.ratio.iloc[0])
                who = _winner(r, resolution)
                cell += {"neither": f" neither meets the SLO at x{scale:g}",
                         "tied": f" they are tied at x{scale:g} ({_ratio_text(r)})"}.get(
                             who, f" {who} wins at x{scale:g} ({_ratio_text(r)})")
            counts = {who: won.count(who) for who in (DISAGGREGATED, "colocated", "tied", "neither") if won.count(who)}
            if len(counts) == 1 and next(iter(counts)) in (DISAGGREGATED, "colocated"):
                cell += f" and at all {len(won)} SLO scales"
            else:
                cell += f"; over the {len(won)} SLO scales, " + ", ".join(
                    f"{who} wins at {n}" if who in (DISAGGREGATED, "colocated") else
                    f"{'tied' if who == 'tied' else 'neither meets the SLO'} at {n}" for who, n in counts.items())
            cells.append(cell)
        parts.append(f"Against colocated replicas on {_kernels(kind)}, " + "; ".join(cells) + ".")
    return " ".join(parts)


def plot_limits(grid: pd.DataFrame, *, gpus: int, trace: str, results_dir=None,
                filename: str = "disaggregation_limits.png") -> Figure:
    """Disaggregated / colocated goodput per GPU on the grid of TTFT x TPOT scales, one panel per colocated kernel
    set: each cell coloured by the ratio on a log scale (disaggregated's colour above 1, continuous_fcfs's
    below), with its value written in it."""
    from matplotlib.colors import LinearSegmentedColormap, LogNorm

    from workbench.study.present import palette
    from workbench.study.present.figures import finish_figure

    table = ratios(grid, ["ttft_scale", "tpot_scale"])
    kinds = list(dict.fromkeys(table.kind))
    fig = Figure(figsize=(4.8 * len(kinds) + 1.0, 4.6), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    cmap = LinearSegmentedColormap.from_list("ratio", [palette.color("continuous_fcfs"), "white",
                                                       palette.color(DISAGGREGATED)])
    finite = table.ratio[np.isfinite(table.ratio) & (table.ratio > 0)]
    span = max(2.0, float(np.exp(np.abs(np.log(finite)).max()))) if len(finite) else 2.0
    norm = LogNorm(vmin=1 / span, vmax=span)
    image = None
    for ax, kind in zip(axes, kinds):
        part = table[table.kind == kind]
        ttft = sorted(part.ttft_scale.unique())
        tpot = sorted(part.tpot_scale.unique())
        values = np.full((len(tpot), len(ttft)), np.nan)
        for r in part.itertuples():
            values[tpot.index(r.tpot_scale), ttft.index(r.ttft_scale)] = r.ratio
        shown = np.where(np.isinf(values), span, np.where(values == 0, 1 / span, values))
        image = ax.imshow(shown, origin="lower", cmap=cmap, norm=norm, aspect="auto")
        for i in range(len(tpot)):
            for j in range(len(ttft)):
                text = {"only disaggregated meets the SLO": "only\ndisagg.", "only colocated meets the SLO":
                        "only\ncoloc.", "neither meets the SLO": "neither"}.get(_ratio_text(values[i, j]),
                                                                              _ratio_text(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(ttft)), [f"x{v:g}" for v in ttft])
        ax.set_yticks(range(len(tpot)), [f"x{v:g}" for v in tpot])
        ax.set_xlabel(f"TTFT limit scale (x {grid.ttft_s.min() / min(ttft):g} s)")
        ax.set_ylabel(f"TPOT limit scale (x {grid.tpot_s.min() / min(tpot) * 1e3:g} ms)")
        ax.set_title(f"against colocated on {_kernels(kind)}", fontsize=9)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), label="disaggregated / colocated goodput per GPU (log scale)")
        ticks = [v for v in (0.1, 0.25, 0.5, 0.7, 1, 1.4, 2, 4, 10) if 1 / span <= v <= span]
        bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.set_ticks(ticks, labels=[f"{v:g}" for v in ticks])
    return finish_figure(fig, f"Disaggregated vs colocated with the TTFT and TPOT limits scaled apart ({trace}, "
                         f"{gpus} GPUs)\ncells on the diagonal scale both limits together; above 1 disaggregated "
                         "serves more per GPU", results_dir, filename)


__all__ = ["LIMITS_COLUMNS", "POINT_COLUMNS", "RANKING_COLUMNS", "RESOLUTION", "SWEEP_COLUMNS", "answer",
           "estimate_line", "limits_lines", "measured_goodput", "plot_goodput_vs_slo", "plot_limits",
           "prefill_share_line", "ratios", "readable", "winner_lines"]
