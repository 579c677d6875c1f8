"""What prefix caching and cache-aware routing buy on a real trace: the tables, figures and findings of
``notebooks/prefix_caching.ipynb``, read off the rows :mod:`workbench.study.runs.prefix_caching` computes
(``kv_sweep``: one setup at several KV-cache sizes per replica, caching on and off; ``router_table``: each
router on each replica count).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from workbench.study.present import palette
from workbench.study.present.figures import finish_figure

ROUTER_ORDER = ("round_robin", "least_outstanding", "least_kv", "prefix_affinity")   # as tables and figures list them


def _kv_setups(sweep: pd.DataFrame) -> list[tuple[str, bool]]:
    """The (router, caching) setups of a kv_sweep, caching off first."""
    setups = list(dict.fromkeys(zip(sweep.router, sweep.prefix_caching)))
    return sorted(setups, key=lambda rc: (rc[1], rc[0] != _same_router(sweep)))


def _same_router(sweep: pd.DataFrame) -> str:
    """The router of the sweep's caching-off runs (the one both caching on and off ran with)."""
    off = sweep[~sweep.prefix_caching.astype(bool)]
    return str(off.router.iloc[0]) if len(off) else str(sweep.router.iloc[0])


def plot_kv_sweep(sweep: pd.DataFrame, title: str, results_dir=None,
                  filename: str = "prefix_caching_kv.png") -> Figure:
    """Hit rate and TTFT (mean, p99) against the KV cache per replica (thousand tokens) for each setup of the
    sweep: caching off (grey: the same setup without the feature), caching on with the same router, caching on
    with cache-aware routing (each router in its colour); ``title``: at most two lines; legends below."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_hit, ax_ttft = fig.subplots(1, 2)
    for router, caching in _kv_setups(sweep):
        frame = sweep[(sweep.router == router) & (sweep.prefix_caching == caching)].sort_values("kv_tokens")
        style = ({"color": palette.router_color(router), "lw": 1.5} if caching else palette.reference("baseline"))
        label = f"{router}, caching {'on' if caching else 'off'}"
        ktok = frame.kv_tokens / 1e3
        # one legend entry per setup (its colour), and one per statistic (solid: mean, dashed: p99)
        ax_hit.plot(ktok, 100 * frame.prefix_hit_rate, marker="o", **{**style, "ls": "-"}, label=label)
        ax_ttft.plot(ktok, frame.ttft_mean_s, marker="o", **{**style, "ls": "-"})
        ax_ttft.plot(ktok, frame.ttft_p99_s, marker="s", **{**style, "ls": "--"}, alpha=0.8)
    ax_ttft.plot([], [], color="black", ls="-", marker="o", label="mean TTFT")
    ax_ttft.plot([], [], color="black", ls="--", marker="s", label="p99 TTFT")
    ax_hit.set_ylabel("prefix hit rate (% of prompt tokens)")
    ax_hit.set_title("prompt tokens served from the cache at first admission", fontsize=10)
    ax_hit.set_ylim(bottom=0)
    ax_ttft.set_yscale("log")
    ax_ttft.set_ylabel("time to first token (s, log scale)")
    ax_ttft.set_title("what the hits buy at the trace's rate", fontsize=10)
    sizes = sorted(set(sweep.kv_tokens / 1e3))
    for ax in (ax_hit, ax_ttft):   # one tick per size swept, plainly labelled (no overlapping 3x10^2 minor labels)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{size:,.0f}" for size in sizes], rotation=45)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("KV cache per replica (thousand tokens, log scale)")
        ax.grid(alpha=0.3)
    return finish_figure(fig, title, results_dir, filename)


def plot_routers(table: pd.DataFrame, title: str, results_dir=None,
                 filename: str = "prefix_caching_routers.png") -> Figure:
    """Per replica count (``num_gpus``), each router with caching on (and the best router without): hit rate, TTFT,
    capacity; each router in its own colour (:func:`workbench.study.present.palette.router_color`)."""
    on = table[table.prefix_caching]
    counts = sorted(on.num_gpus.unique())
    routers = [r for r in ROUTER_ORDER if r in set(on.router)] + sorted(set(on.router) - set(ROUTER_ORDER))
    metrics = [("prefix_hit_rate", "prefix hit rate (%)", 100.0), ("ttft_mean_s", "mean TTFT (s)", 1.0),
               ("ttft_p99_s", "p99 TTFT (s)", 1.0), ("capacity_rps", "capacity, TTFT+TPOT limits (req/s)", 1.0)]
    if table["capacity_rps"].isna().all():   # no capacity searched: no empty panel
        metrics = metrics[:-1]
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    width = 0.8 / max(len(routers), 1)
    x = np.arange(len(counts))
    off = table[~table.prefix_caching]
    for ax, (column, label, scale) in zip(axes, metrics):
        for i, router in enumerate(routers):
            values = [on[(on.num_gpus == n) & (on.router == router)][column].mean() * scale for n in counts]
            at = x + (i - (len(routers) - 1) / 2) * width
            ax.bar(at, values, width, label=router, color=palette.router_color(router))
            for where, value in zip(at, values):
                if column == "capacity_rps" and not np.isfinite(value):   # searched, no load meets the target
                    ax.text(where, 0, "unreachable", rotation=90, ha="center", va="bottom", fontsize=7)
        if len(off) and column != "prefix_hit_rate":
            best_off = [off[off.num_gpus == n][column].min() * scale if column.startswith("ttft")
                        else off[off.num_gpus == n][column].max() * scale for n in counts]
            ax.scatter(x, best_off, marker="_", s=900, color="black", zorder=3)
            ax.plot([], [], color="black", lw=2, label="best router, caching off")   # legend: a line, not the wide bar
        ax.set_xticks(x, [f"{n} replicas" for n in counts])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    return finish_figure(fig, title, results_dir, filename)


def _tokens(value) -> str:
    return f"{int(value):,} tokens"


def _pct(value: float) -> str:
    """A share as a whole percentage, with one decimal below 10% (5.5%, not 6%)."""
    return f"{value:.1%}" if 0 < abs(value) < 0.1 else f"{value:.0%}"


def _change(new: float, old: float) -> str:
    return f"{new / old - 1:+.0%}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _capacity_change(new: float, old: float, resolution: float) -> str:
    """``new`` against ``old`` as a signed percentage, or "tied" when they are within the searches' resolution
    (each capacity is a grid point ``resolution`` below where the target fails: they cannot be told apart)."""
    if abs(new / old - 1) <= resolution:
        return f"{_change(new, old)} (tied: within the capacity search's {resolution:.0%} resolution)"
    return _change(new, old)


def capacity_gains(table: pd.DataFrame) -> pd.DataFrame:
    """Per (replicas, router) run with caching on and off, both capacities found: the two capacities and the
    relative gain of caching (``gain`` = on / off - 1)."""
    rows = []
    for (n, router), both in table.groupby(["num_gpus", "router"], sort=False):
        on, off = both[both.prefix_caching.astype(bool)], both[~both.prefix_caching.astype(bool)]
        if len(on) == 1 and len(off) == 1:
            c_on, c_off = float(on.capacity_rps.iloc[0]), float(off.capacity_rps.iloc[0])
            if np.isfinite(c_on) and np.isfinite(c_off) and c_off > 0:
                rows.append({"num_gpus": int(n), "router": router, "capacity_on_rps": c_on,
                             "capacity_off_rps": c_off, "gain": c_on / c_off - 1})
    return pd.DataFrame(rows, columns=["num_gpus", "router", "capacity_on_rps", "capacity_off_rps", "gain"])


def work_saved(at_cap: pd.DataFrame) -> pd.DataFrame:
    """Per (replicas, router) of :func:`~workbench.study.runs.prefix_caching.at_capacity`: the prefill work
    caching saves at that load (``saved``, in multiples of the trace's prompt tokens) split into what
    first-admission prefix hits save (``hits`` = the hit rate) and what avoided recomputation after preemption
    saves (``recompute``): without caching the work is 1 + recomputation, with it 1 - hits + recomputation."""
    rows = []
    for (n, router), both in at_cap.groupby(["num_gpus", "router"], sort=False):
        on, off = both[both.prefix_caching.astype(bool)], both[~both.prefix_caching.astype(bool)]
        if len(on) != 1 or len(off) != 1:
            continue
        on, off = on.iloc[0], off.iloc[0]
        w_on, w_off, hits = float(on.prefill_work_ratio), float(off.prefill_work_ratio), float(on.prefix_hit_rate)
        recompute_on, recompute_off = w_on - (1 - hits), w_off - 1
        rows.append({"num_gpus": int(n), "router": router, "offered_rps": float(on.offered_rps),
                     "work_on": w_on, "work_off": w_off, "saved": w_off - w_on, "hits": hits,
                     "recompute": recompute_off - recompute_on,
                     "preemptions_on": int(on.preemptions_total), "preemptions_off": int(off.preemptions_total),
                     "preempted_off": int(off.requests_preempted), "attainment_on": float(on.slo_attainment),
                     "attainment_off": float(off.slo_attainment)})
    return pd.DataFrame(rows)


def findings(sweep: pd.DataFrame, table: pd.DataFrame, at_cap: pd.DataFrame | None = None, *,
             resolution: float = 0.02) -> list[str]:
    """Sentences computed from the results (the notebook's commentary): the hit rate against the cache size, what
    caching alone and routing by prefix each change in TTFT at the trace's rate, preemptions, the capacity
    caching buys and where that comes from, what cache-aware routing adds (``resolution``: the capacity
    searches', below which two capacities are tied)."""
    lines = []
    on_sweep = sweep[sweep.prefix_caching.astype(bool)]
    same = _same_router(sweep) if len(sweep) else None
    routers_on = list(dict.fromkeys(on_sweep.router))
    if len(on_sweep):
        small, large = on_sweep.kv_tokens.min(), on_sweep.kv_tokens.max()

        def hit(router, size):
            return float(on_sweep[(on_sweep.router == router) & (on_sweep.kv_tokens == size)].prefix_hit_rate.iloc[0])

        lines.append(f"Prompt tokens served from the cache at their first admission, with {_tokens(small)} of KV "
                     f"cache per replica: " + ", ".join(f"{_pct(hit(r, small))} ({r})" for r in routers_on)
                     + f"; with {_tokens(large)}: " + ", ".join(f"{_pct(hit(r, large))} ({r})" for r in routers_on)
                     + ".")
        row = lambda router, caching, size: sweep[(sweep.router == router) & (sweep.prefix_caching == caching)  # noqa: E731
                                                  & (sweep.kv_tokens == size)].iloc[0]
        off_large = sweep[~sweep.prefix_caching.astype(bool) & (sweep.kv_tokens == large)]
        if len(off_large):
            base, alone = off_large.iloc[0], row(same, True, large)
            text = (f"At {_tokens(large)} per replica and the trace's rate, caching alone (both runs routed by "
                    f"{same}) changes the mean TTFT by {_change(alone.ttft_mean_s, base.ttft_mean_s)} "
                    f"({base.ttft_mean_s:.3g} s -> {alone.ttft_mean_s:.3g} s)")
            others = [r for r in routers_on if r != same]
            for router in others:
                routed = row(router, True, large)
                text += (f"; routing by cached prefix ({router}) instead changes it by "
                         f"{_change(routed.ttft_mean_s, alone.ttft_mean_s)} more (-> {routed.ttft_mean_s:.3g} s, "
                         f"hit rate {_pct(alone.prefix_hit_rate)} -> {_pct(routed.prefix_hit_rate)})")
            lines.append(text + ".")
        off_small = sweep[~sweep.prefix_caching.astype(bool) & (sweep.kv_tokens == small)]
        if len(off_small):
            p_off, p_on = int(off_small.iloc[0].preemptions_total), int(row(same, True, small).preemptions_total)
            if p_off > p_on:
                lines.append(f"At {_tokens(small)} per replica requests are preempted {p_off:,} times without "
                             f"caching and {p_on:,} times with it (both {same}): a preempted request's computed "
                             "blocks stay cached and are found again when it is readmitted, instead of being "
                             "computed anew.")
    gains = capacity_gains(table) if "capacity_rps" in table else pd.DataFrame()
    for n, part in gains.groupby("num_gpus"):
        listed = "; ".join(f"{r.router} {r.capacity_off_rps:.3g} -> {r.capacity_on_rps:.3g} req/s, "
                           f"{_capacity_change(r.capacity_on_rps, r.capacity_off_rps, resolution)}"
                           for r in part.itertuples())
        lines.append(f"On {n} replicas caching changes the capacity (without -> with): {listed}.")
    saved = work_saved(at_cap) if at_cap is not None and len(at_cap) else pd.DataFrame()
    if len(saved) and len(gains):
        top = gains.sort_values("gain").iloc[-1]
        match = saved[(saved.num_gpus == top.num_gpus) & (saved.router == top.router)]
        if len(match):
            w = match.iloc[0]
            lines.append(
                f"Where caching buys the most ({top.router} on {int(top.num_gpus)} replicas), run both ways at "
                f"{w.offered_rps:.3g} req/s, the capacity with caching: without it, requests are preempted "
                f"{w.preemptions_off:,} times ({w.preempted_off:,} requests), the replicas compute {w.work_off:.2f} "
                f"times the trace's prompt tokens (a preempted request recomputes its prompt and every token it "
                f"generated) and {_pct(w.attainment_off)} of the requests meet the SLA; with it, "
                f"{w.preemptions_on:,} preemptions, {w.work_on:.2f} times the prompt tokens, {_pct(w.attainment_on)}. "
                f"Of the prefill work caching saves there ({w.saved:.2f} x the prompt tokens), first-admission "
                f"prefix hits account for {w.hits:.2f} and recomputation avoided after preemption for "
                f"{w.recompute:.2f}.")
    for n in sorted(table.num_gpus.unique()):
        sub = table[(table.num_gpus == n) & table.prefix_caching.astype(bool)].set_index("router")
        if "prefix_affinity" not in sub.index or len(sub) < 2:
            continue
        pa = sub.loc["prefix_affinity"]
        blind = sub.drop(index="prefix_affinity")
        text = (f"On {n} replicas with caching, prefix_affinity serves {_pct(pa.prefix_hit_rate)} of the prompt "
                f"tokens from the cache against " + ", ".join(f"{_pct(r.prefix_hit_rate)} with {name}"
                                                              for name, r in blind.iterrows())
                + f"; mean TTFT {pa.ttft_mean_s:.3g} s against {blind.ttft_mean_s.min():.3g} to "
                f"{blind.ttft_mean_s.max():.3g} s")
        finite = blind[np.isfinite(blind.capacity_rps.astype(float))]
        if np.isfinite(pa.capacity_rps) and len(finite):
            best = finite.capacity_rps.astype(float).idxmax()
            text += (f"; capacity {pa.capacity_rps:.3g} req/s against {finite.capacity_rps.max():.3g} for the best "
                     f"cache-blind router, {best}: "
                     f"{_capacity_change(pa.capacity_rps, finite.capacity_rps.max(), resolution)}")
        lines.append(text + ".")
    return lines


def answer(sweep: pd.DataFrame, table: pd.DataFrame, at_cap: pd.DataFrame | None = None, *,
           resolution: float = 0.02) -> str:
    """The title question, "what do prefix caching and cache-aware routing buy?", answered from the results
    (``resolution``: the capacity searches', below which two capacities are tied)."""
    parts = []
    gains = capacity_gains(table) if "capacity_rps" in table else pd.DataFrame()
    saved = work_saved(at_cap) if at_cap is not None and len(at_cap) else pd.DataFrame()
    if len(gains):
        low, high = gains.gain.min(), gains.gain.max()
        span = f"{low:+.0%}" if f"{low:+.0%}" == f"{high:+.0%}" else f"{low:+.0%} to {high:+.0%}"
        counts = _and([str(n) for n in sorted(gains.num_gpus.unique())])
        text = f"Caching changes the capacity by {span} (on {counts} replicas, every router run both ways)"
        if len(saved):
            mostly_recompute = (saved.recompute > saved.hits).all()
            mostly_hits = (saved.hits >= saved.recompute).all()
            if mostly_recompute:
                text += (", mostly by sparing preempted requests their recomputation, not through prefix hits at "
                         "first admission")
            elif mostly_hits:
                text += ", mostly through prefix hits at first admission"
        parts.append(text + ".")
    on_sweep = sweep[sweep.prefix_caching.astype(bool)]
    if len(on_sweep) and (~sweep.prefix_caching.astype(bool)).any():
        same, large = _same_router(sweep), on_sweep.kv_tokens.max()
        off = sweep[~sweep.prefix_caching.astype(bool) & (sweep.kv_tokens == large)].iloc[0]
        alone = on_sweep[(on_sweep.router == same) & (on_sweep.kv_tokens == large)].iloc[0]
        parts.append(f"At the trace's own rate it changes the mean TTFT by {_change(alone.ttft_mean_s, off.ttft_mean_s)}"
                     f" (the same router, {same}, at the largest cache, {_tokens(large)} per replica).")
    effects = []
    for n in sorted(table.num_gpus.unique()):
        sub = table[(table.num_gpus == n) & table.prefix_caching.astype(bool)].set_index("router")
        if "prefix_affinity" in sub.index and len(sub) > 1:
            blind = sub.drop(index="prefix_affinity").capacity_rps.astype(float)
            pa = float(sub.loc["prefix_affinity"].capacity_rps)
            if np.isfinite(pa) and np.isfinite(blind).any():
                effects.append(f"on {n} replicas by {_capacity_change(pa, blind.max(), resolution)}")
    if effects:
        parts.append("Against the best cache-blind router with caching on, routing by cached prefix "
                     "(prefix_affinity) changes the capacity " + _and(effects) + ".")
    return " ".join(parts)


KV_COLUMNS = ("kv_tokens", "prefix_caching", "router", "prefix_hit_rate", "ttft_mean_s", "ttft_p99_s", "tpot_mean_s",
              "rejected", "preemptions_total", "goodput_rps")
ROUTER_COLUMNS = ("num_gpus", "router", "prefix_caching", "prefix_hit_rate", "ttft_mean_s", "ttft_p99_s",
                  "tpot_mean_s", "goodput_rps", "slo_attainment", "preemptions_total", "capacity_rps",
                  "capacity_error")


def kv_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbench.study.runs.prefix_caching.kv_sweep`'s rows for reading (units, precision, the columns that apply)."""
    from workbench.study.present.tables import display_table

    return display_table(sweep.drop(columns="scheduler", errors="ignore"), KV_COLUMNS)


AT_CAPACITY_COLUMNS = ("num_gpus", "router", "prefix_caching", "offered_rps", "slo_attainment", "preemptions_total",
                       "requests_preempted", "prefix_hit_rate", "prefill_work_ratio")


def at_capacity_table(at_cap: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbench.study.runs.prefix_caching.at_capacity`'s rows for reading."""
    from workbench.study.present.tables import display_table

    return display_table(at_cap, AT_CAPACITY_COLUMNS)


def routers_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbench.study.runs.prefix_caching.router_table`'s rows for reading."""
    from workbench.study.present.tables import display_table

    return display_table(table, ROUTER_COLUMNS)


__all__ = ["AT_CAPACITY_COLUMNS", "KV_COLUMNS", "ROUTER_COLUMNS", "ROUTER_ORDER", "answer", "at_capacity_table",
           "capacity_gains", "findings", "kv_table", "plot_kv_sweep", "plot_routers", "routers_table", "work_saved"]
