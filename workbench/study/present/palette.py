"""One colour per scheduler in every figure of a run, and reference lines that never look like one.

Every figure of the workbench (the steps, the comparison, the explorer) takes a
scheduler's colour from :func:`color`, so ``multi_bin_dynamic`` is the same
green in step 1, step 2, step 3 and the comparison.  The schedulers known
today have fixed colours; a scheduler registered later (a new policy is one
file and one ``@register`` line) gets the next free colour of
:data:`EXTRA`, in the order of its name among the unpinned ones, so adding one
never recolours another.  Reference lines (limits, the SLA target, floors, the
offered rate, proportional scaling) are black or grey with their own dash
pattern (:data:`REFERENCES`): no scheduler is black or grey, so a reference
never reads as a scheduler's line.  GPU counts of one scheduler (step 1) share
its colour and differ in marker and dash (:func:`gpu_style`).
"""

from __future__ import annotations

PINNED: dict[str, str] = {
    "static_fifo": "#1f77b4",           # blue
    "dynamic_no_bins": "#17becf",       # cyan
    "multi_bin_dynamic": "#2ca02c",     # green
    "multi_bin_fixed": "#8c564b",       # brown
    "continuous_fcfs": "#d62728",       # red
    "continuous_sla": "#ff7f0e",        # orange
    "continuous_multi_bin": "#9467bd",  # purple
    "disaggregated": "#e377c2",         # pink: prefill and decode on their own GPUs (wb.best_placement)
}
EXTRA = ("#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
         "#756bb1", "#636363")

# name -> matplotlib line keywords; black/grey only, each with its own dash pattern (and width).  Limits and targets
# are drawn over the schedulers' lines (zorder 3), so a line that runs along one never hides it.
REFERENCES: dict[str, dict] = {
    "target": {"color": "0.35", "ls": ":", "lw": 1.2, "zorder": 3},          # any other target or limit
    "ttft": {"color": "black", "ls": (0, (1, 1.5)), "lw": 1.8, "zorder": 3},   # the TTFT limit: dense dots
    "tpot": {"color": "black", "ls": (0, (4, 1.2, 1, 1.2, 1, 1.2)), "lw": 1.3, "zorder": 3},   # TPOT: dash-dot-dot
    # the SLA target (90% of requests meet the SLA: at 0.9 on an attainment panel, at 0.1 on a violation panel):
    # grey dash-dot
    "sla_target": {"color": "0.3", "ls": (0, (5, 1.5, 1.5, 1.5)), "lw": 1.6, "zorder": 3},
    "floor": {"color": "black", "ls": (0, (6, 2, 1, 2)), "lw": 1.0, "zorder": 3},   # the floor no load goes below
    "offered": {"color": "black", "ls": "--", "lw": 1.0, "zorder": 3},       # the offered (replayed) rate
    "ideal": {"color": "0.5", "ls": (0, (1, 3)), "lw": 1.0},    # capacity proportional to the GPUs
    "best": {"color": "black", "ls": (0, (4, 4)), "lw": 1.0},   # a best GPU count or K
    "best_alt": {"color": "0.45", "ls": (0, (8, 3, 2, 3)), "lw": 1.0},  # a second best (another rule)
    "baseline": {"color": "0.45", "ls": "-", "lw": 1.2},   # the same setup without the feature studied
}

# Routers (how a request picks its replica) are compared in their own figures, never beside schedulers; their
# colours are darker tones no pinned scheduler has.
ROUTER_COLORS: dict[str, str] = {
    "round_robin": "#393b79",        # indigo
    "least_outstanding": "#637939",  # olive
    "least_kv": "#843c39",           # brick
    "prefix_affinity": "#7b4173",    # plum
}


def router_color(router: str) -> str:
    """The colour of ``router`` in every figure that compares routers."""
    if router in ROUTER_COLORS:
        return ROUTER_COLORS[router]
    return EXTRA[sorted({router, *ROUTER_COLORS}).index(router) % len(EXTRA)]


# Ways to provision a day (notebooks/autoscaling): compared in their own figures, never beside schedulers.
STRATEGY_COLORS: dict[str, str] = {
    "peak fleet": "#636363",      # grey: one fleet sized for the busiest hour, all day
    "plan schedule": "#3182bd",   # blue: the provisioning plan's count per hour
    "reactive": "#e6550d",        # orange: a reactive autoscaler
}


def strategy_color(strategy: str) -> str:
    """The colour of a provisioning strategy in every figure that compares them."""
    if strategy in STRATEGY_COLORS:
        return STRATEGY_COLORS[strategy]
    return EXTRA[sorted({strategy, *STRATEGY_COLORS}).index(strategy) % len(EXTRA)]


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")


def _registered() -> list[str]:
    try:
        from workbench.sim.schedulers import SCHEDULERS
    except ImportError:   # pragma: no cover - the package always has it
        return []
    return sorted(SCHEDULERS)


def color(scheduler: str) -> str:
    """The colour of ``scheduler`` in every figure."""
    if scheduler in PINNED:
        return PINNED[scheduler]
    others = [name for name in _registered() if name not in PINNED]
    if scheduler not in others:
        others = sorted(set(others) | {scheduler})
    return EXTRA[others.index(scheduler) % len(EXTRA)]


def order(schedulers) -> list[str]:
    """``schedulers`` in the one order every figure and table lists them: the pinned ones as
    :data:`PINNED` lists them (static batching first), then the others by name."""
    names = list(dict.fromkeys(str(s) for s in schedulers))
    pinned = list(PINNED)
    return sorted(names, key=lambda n: (pinned.index(n) if n in pinned else len(pinned), n))


def colors(schedulers) -> dict[str, str]:
    """name -> colour for each of ``schedulers``."""
    return {str(s): color(str(s)) for s in schedulers}


def reference(kind: str, **overrides) -> dict:
    """Line keywords of a reference line of ``kind`` (see :data:`REFERENCES`)."""
    return {**REFERENCES[kind], **overrides}


def gpu_style(index: int) -> dict:
    """Marker and dash of the ``index``-th GPU count of one scheduler (its colour stays the scheduler's)."""
    return {"marker": _MARKERS[index % len(_MARKERS)], "ls": _DASHES[index % len(_DASHES)]}


__all__ = ["PINNED", "REFERENCES", "ROUTER_COLORS", "STRATEGY_COLORS", "color", "colors", "gpu_style", "order",
           "reference", "router_color", "strategy_color"]
