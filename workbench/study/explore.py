"""A live explorer for JupyterLab: move a widget, re-simulate, redraw.

``Explorer`` holds a few traces (each cut to ``num_requests``), one widget per
knob (trace, scheduler, GPUs, K, SLA, load scaling, batch limits) and a
four-panel figure: the latency CDF against the SLA, the mean wait per bin, the
utilisation of each GPU, and the load-latency plane in which every run so far
leaves a point (the current one highlighted).  Every change re-simulates with
the compiled engine and redraws; ``Explorer.last_timing`` says how long the
simulation and the drawing took.

Load: the synthetic trace is replayed at its timestamps divided by
``rps_scaling`` (10 on a step-time profile, as the steps do: about 2.5
requests/s), a real trace (a dataset such as ``azure_conv``, or a trace file)
at the rate it was recorded at; ``load_scaling`` multiplies either, and the
figure's title says the rate offered.  Only the widgets of knobs the chosen
scheduler reads are enabled (K for the multi-bin schedulers, the batch size for
``static_fifo`` and ``multi_bin_fixed``, ``b_max`` and the latency budget for
the SLA controllers), and the title names only those knobs.

The logic (``Explorer.run``, ``Explorer.figure``) is plain Python that a test
can drive without a browser: ``explorer.set(num_gpus=8)`` is what moving the
slider does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import textwrap
import time
from dataclasses import dataclass

from pathlib import Path

import numpy as np

from workbench import checks
from workbench.sim.config import SimConfig
from workbench.sim.schedulers import SCHEDULERS
from workbench.sim.simulate import check_time_horizon, simulate

log = logging.getLogger(__name__)

DEFAULT_TRACES = ("synthetic", "azure_conv", "azure_code")
# The first view: the headline static scheduler on a pool that meets the SLA target on the default 100,000
# requests of the synthetic trace (97% of requests within TTFT 1 s and TPOT 50 ms; on 32 GPUs 83%, on 16 GPUs 32%).
DEFAULT_SCHEDULER, DEFAULT_GPUS = "multi_bin_dynamic", 48
# knobs of SimConfig the widgets set beside the scheduler and the GPU count, by the rule that reads them
KNOB_WIDGETS = ("k_bins", "batch_size", "b_max", "d_sla_s", "ttft_sla_s")


@dataclass(frozen=True)
class Point:
    """One run in the load-latency plane."""

    scheduler: str
    num_gpus: int
    offered_rps: float
    latency_p99_s: float
    attainment: float


def _load(name: str, num_requests: int, seed: int, rps_scaling: float):
    """The synthetic trace at its timestamps / ``rps_scaling``; a real one (dataset or file) at its recorded rate."""
    from workbench.traces.trace import load_trace

    if name == "synthetic":
        return load_trace(num_requests=num_requests, seed=seed, rps_scaling=rps_scaling)
    return load_trace(name, use_real_timestamps=True).head(num_requests)


def replay_text(trace) -> str:
    """How fast ``trace`` (as replayed) arrives, in requests/s, and why: its recorded rate, or its timestamps divided
    by the ``rps_scaling`` it was loaded with, times any later time scaling (the explorer's ``load_scaling``)."""
    options = trace.meta.options
    rate_rps = trace.mean_rate_rps
    scale = float(options.get("time_scale", 1.0))
    how = "its recorded rate" if options.get("use_real_timestamps", True) else \
        f"its timestamps / {options['rps_scaling']:g}"
    if scale == 1.0:
        return f"{rate_rps:.3g} req/s ({how})"
    return f"{rate_rps:.3g} req/s (x{scale:g} {how}, {rate_rps / scale:.3g} req/s)"


def knobs(scheduler: str, on_profile: bool = True) -> tuple[str, ...]:
    """The knobs of :data:`KNOB_WIDGETS` that ``scheduler`` reads (its engine spec says which rules it runs):
    ``k_bins`` if it bins requests by predicted length, ``batch_size`` for a fixed batch (static_fifo,
    multi_bin_fixed), ``b_max`` and ``d_sla_s`` (the latency budget the SLA controller aims at) for the dynamic
    controllers; ``ttft_sla_s`` judges every run on a step-time profile, ``d_sla_s`` every run on the seed grid."""
    from workbench.sim.config import SimConfig
    from workbench.sim.schedulers import BATCH_DYNAMIC, get_scheduler

    policy = get_scheduler(scheduler)
    cfg = SimConfig(scheduler=scheduler)
    if policy.engine == "continuous":
        uses_bins, batch_rule = policy.continuous_spec(cfg).uses_bins, None
    else:
        spec = policy.engine_spec(cfg)
        uses_bins, batch_rule = spec.uses_bins, spec.batch_rule
    used = {"k_bins": uses_bins, "batch_size": batch_rule is not None and batch_rule != BATCH_DYNAMIC,
            "b_max": batch_rule == BATCH_DYNAMIC, "d_sla_s": batch_rule == BATCH_DYNAMIC or not on_profile,
            "ttft_sla_s": on_profile}
    return tuple(name for name in KNOB_WIDGETS if used[name])


def _check_trace_name(name: str) -> None:
    """``synthetic``, a registered dataset name or a trace file (refused now, not at the first redraw)."""
    from workbench.traces import datasets

    if name == "synthetic" or datasets.is_name(name) or Path(name).expanduser().is_file():
        return
    raise FileNotFoundError(f"traces: {name!r} is not 'synthetic', a dataset name ({', '.join(datasets.names())}) "
                            "or a trace file")


def _single_pool(cfg: SimConfig) -> SimConfig:
    """``cfg`` if its scheduler runs one pool of GPUs (the explorer slides one GPU count)."""
    if getattr(SCHEDULERS[cfg.scheduler], "engine", "static") == "disaggregated":
        raise ValueError(f"config: scheduler={cfg.scheduler!r} splits the GPUs into prefill and decode pools, which "
                         "one GPU-count slider cannot set; rank its placements with wb.best_placement "
                         "(notebooks/disaggregation.ipynb), or choose a single-pool scheduler")
    return cfg


def _is_continuous(scheduler: str) -> bool:
    return getattr(SCHEDULERS[scheduler], "engine", "static") == "continuous"


def _latency_s(res) -> np.ndarray:
    requests = res.requests
    column = "e2e_s" if "e2e_s" in requests else "latency_s" if "latency_s" in requests else None
    values = (requests[column].to_numpy() if column else res.finish_s - res.arrival_s)
    return values[np.isfinite(values)]


def _wait_per_bin(res) -> tuple[np.ndarray, np.ndarray]:
    requests = res.requests
    wait = requests["queue_s"].to_numpy() if "queue_s" in requests else res.start_s - res.arrival_s
    bins = requests["bin"].to_numpy() if "bin" in requests else np.zeros(wait.size, int)
    ok = np.isfinite(wait) & (bins >= 0)
    n_bins = int(bins[ok].max()) + 1 if ok.any() else 1
    total = np.bincount(bins[ok], weights=wait[ok], minlength=n_bins)
    count = np.bincount(bins[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.arange(n_bins), total / count


def _cdf(values: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """An empirical CDF at ``points`` quantiles (drawing 100K steps would cost more than simulating)."""
    share = np.linspace(0.0, 1.0, points)
    return np.quantile(values, share), share


def _gpu_utilization(res) -> np.ndarray:
    """Busy share of each GPU (replica) over the run."""
    summary = res.summary
    per_gpu = None
    if getattr(res, "engine", "static") == "continuous":
        per_gpu = res.continuous["busy_s"]             # seconds each replica ran steps
    elif hasattr(res, "batches"):
        batches = res.batches
        per_gpu = np.bincount(batches["gpu"].to_numpy(), weights=batches["service_s"].to_numpy(),
                              minlength=res.config.num_gpus)
    makespan = summary.get("makespan_s", float("nan"))
    if per_gpu is None or not makespan or not math.isfinite(makespan):
        return np.full(res.config.num_gpus, np.nan)
    return np.asarray(per_gpu, dtype=float) / makespan


class Explorer:
    """Widgets and a figure over ``simulate``; see the module docstring."""

    def __init__(self, traces=DEFAULT_TRACES, *, num_requests: int = 100_000, seed: int = 0,
                 config: SimConfig | None = None, load_scaling: float = 1.0, step_profile: str = "opt-13b-a100",
                 rps_scaling: float | None = None, attainment: float = 0.9):
        from workbench.sim import profiles
        from workbench.study.runs.experiments import LATENCY_ALIASES, SEED_GRID, default_rps_scaling

        self.num_requests = checks.integer(num_requests, "num_requests", low=1, high=10**8)
        self.seed = checks.integer(seed, "seed", low=0)
        # one name is one trace (papermill's -p traces azure_conv passes a string: never its letters)
        self.trace_names = checks.names(traces, "traces")
        for name in self.trace_names:
            _check_trace_name(name)
        self._traces: dict[str, object] = {}
        self.trace_name = self.trace_names[0]
        self.config = _single_pool(checks.instance(config, "config", SimConfig, expected="a SimConfig, or None")) \
            if config is not None else SimConfig(scheduler=DEFAULT_SCHEDULER, num_gpus=DEFAULT_GPUS, k_bins=4,
                                                 d_sla_s=1.0)
        self.attainment = checks.number(attainment, "attainment", low=0, low_open=True, high=1,
                                        hint="the share of requests that must meet the SLA, e.g. 0.9")
        self.load_scaling = checks.number(load_scaling, "load_scaling", low=0, low_open=True)
        # every scheduler on one hardware model, as in the step notebooks: the step-time profile (static batches
        # in step mode), or "seed-grid" (the seed study's formula grid, static schedulers only)
        step_profile = LATENCY_ALIASES.get(step_profile, step_profile) if isinstance(step_profile, str) \
            else step_profile
        self.step_profile = checks.choice(step_profile, "step_profile", (*profiles.profile_names(), SEED_GRID),
                                          hint=f"{SEED_GRID!r} is the seed study's formula grid (static schedulers)")
        self.rps_scaling = checks.number(rps_scaling, "rps_scaling", low=0, low_open=True, none=True)
        if self.rps_scaling is None:
            self.rps_scaling = default_rps_scaling(self.step_profile)
        self.history: list[Point] = []
        self.result = None
        self.last_timing: dict[str, float] = {}
        self._widgets = None
        self._output = None
        self.last_image: bytes | None = None
        self.last_error: str | None = None

    # -- the model ---------------------------------------------------------------------------------
    def trace(self):
        if self.trace_name not in self._traces:
            self._traces[self.trace_name] = _load(self.trace_name, self.num_requests, self.seed, self.rps_scaling)
        base = self._traces[self.trace_name]
        if self.load_scaling == 1.0:
            return base
        try:
            return base.time_scaled(self.load_scaling)
        except ValueError as exc:
            raise ValueError(f"load_scaling={self.load_scaling:g}: {exc}") from None

    def set(self, *, trace: str | None = None, load_scaling: float | None = None, **config_changes):
        """Change knobs (what a widget does) and re-simulate; a refused change leaves the knobs as they were."""
        checks.keywords(config_changes, "set", [f.name for f in dataclasses.fields(SimConfig)])
        before = (self.trace_name, self.load_scaling, self.config)
        try:
            if trace is not None:
                if trace not in self.trace_names:
                    raise ValueError(f"trace: unknown {trace!r}; choose one of {', '.join(self.trace_names)}")
                self.trace_name = trace
            if load_scaling is not None:
                self.load_scaling = checks.number(load_scaling, "load_scaling", low=0, low_open=True)
            if config_changes:
                self.config = _single_pool(self.config.replace(**config_changes))
            result = self.run()
        except ValueError:
            self.trace_name, self.load_scaling, self.config = before
            raise
        if self._widgets is not None and "scheduler" in config_changes:
            self._enable_widgets()
        return result

    def run(self):
        """Simulate the current knobs; record the point in the load-latency plane."""
        from workbench.sim import profiles
        from workbench.sim.latency import LatencyModel

        t0 = time.perf_counter()
        trace = self.trace()
        model = profiles.get_profile(self.step_profile) if self.on_profile else LatencyModel.default()
        if self.load_scaling != 1.0:   # a tiny scaling stretches the trace beyond usable times: say which knob
            try:
                check_time_horizon(float(trace.arrival_s[-1]), model, "the scaled trace", "Raise load_scaling.")
            except ValueError as exc:
                raise ValueError(f"load_scaling={self.load_scaling:g}: {exc}") from None
        if self.on_profile:
            # every scheduler on the measured step-time profile, with that GPU's KV cache
            cfg = self.config.replace(**profiles.profile_config_fields(self.step_profile))
            res = simulate(trace, cfg, latency=model)
        elif _is_continuous(self.config.scheduler):
            raise ValueError(f"{self.config.scheduler} needs a step-time profile; the seed grid times static "
                             "batches only")
        else:
            res = simulate(trace, self.config, latency=model)
        latency = _latency_s(res)
        offered = res.summary.get("offered_rps", len(trace) / max(float(trace.arrival_s[-1]), 1e-9))
        attainment = float(np.mean(res.requests["met_sla"])) if "met_sla" in res.requests else \
            1.0 - float(res.summary.get("sla_violation_rate", float("nan")))
        if self.on_profile and "ttft_s" in res.requests:   # the plane plots what the SLA limits: TTFT
            latency = res.requests["ttft_s"].dropna().to_numpy()
        self.history.append(Point(self.config.scheduler, self.config.num_gpus, float(offered),
                                  float(np.percentile(latency, 99)) if latency.size else float("nan"),
                                  attainment))
        self.result = res
        self.last_timing = {"simulate_s": time.perf_counter() - t0}
        return res

    @property
    def on_profile(self) -> bool:
        """Whether the schedulers run on the step-time profile (else the seed grid)."""
        return self.step_profile not in ("seed-grid", "grid")

    def figure(self):
        """The four panels for the current result (a matplotlib Figure, not shown)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        from workbench.study.present.palette import color

        if self.result is None:
            self.run()
        t0 = time.perf_counter()
        res, cfg = self.result, self.config
        # constrained layout keeps every label, tick and the two-line title inside the figure at any value
        fig = Figure(figsize=(11, 7.2), layout="constrained")
        ax_cdf, ax_bins, ax_gpu, ax_load = fig.subplots(2, 2).ravel()

        colour = color(cfg.scheduler)
        latency = _latency_s(res)
        sla = cfg.d_sla_s
        if self.on_profile and "ttft_s" in res.requests:
            ttft = res.requests["ttft_s"].dropna().to_numpy()
            if ttft.size:
                ax_cdf.plot(*_cdf(ttft), color=colour, label="time to first token")
        if latency.size:
            ax_cdf.plot(*_cdf(latency), color=colour, ls="--", label="end-to-end latency")
        if self.on_profile:
            ax_cdf.axvline(cfg.ttft_sla_s, color="k", ls=":", lw=1, label=f"TTFT limit {cfg.ttft_sla_s:g} s")
        else:
            ax_cdf.axvline(sla, color="k", ls=":", lw=1, label=f"SLA {sla:g} s")
        ax_cdf.set_xscale("log")
        ax_cdf.set(xlabel="seconds (log)", ylabel="share of requests", ylim=(0, 1.01),
                   title="Latency CDF")
        ax_cdf.legend(loc="lower right", fontsize=8)

        bins, wait = _wait_per_bin(res)
        ax_bins.bar(bins, wait, color=colour)
        ax_bins.set(xlabel="bin (by predicted output length)" if "k_bins" in self.knobs() else "one queue (no bins)",
                    ylabel="mean wait in queue, s", title="Wait per bin", xticks=bins)

        util = _gpu_utilization(res)
        ax_gpu.bar(np.arange(util.size), util, color=colour)
        ax_gpu.xaxis.set_major_locator(MaxNLocator(integer=True))   # GPUs are whole
        ax_gpu.axhline(1.0, color="k", lw=0.8, ls=":", label="fully busy")
        ax_gpu.set(xlabel="GPU (replica)", ylabel="busy share of the run", ylim=(0, 1.12),
                   title=f"GPU utilisation (mean {np.nanmean(util):.0%})")
        ax_gpu.legend(loc="upper right", fontsize=8)   # above the bars (a share is at most 1)

        spots: dict[tuple, list[str]] = {}   # runs that land on one spot share one label (GPU counts joined)
        for i, point in enumerate(self.history):
            current = i == len(self.history) - 1
            ax_load.scatter(point.offered_rps, point.latency_p99_s, s=60 if current else 18,
                            color=colour if current else "0.6", zorder=3 if current else 2,
                            label="this run" if current else ("earlier runs" if i == 0 else None))
            if math.isfinite(point.latency_p99_s) and point.latency_p99_s > 0:
                # a spot within 3% in rate and 5% in p99 of an earlier one is that spot (labels would overlap)
                spot = next((k for k in spots if abs(k[0] / point.offered_rps - 1) < 0.03
                             and abs(math.log10(k[1] / point.latency_p99_s)) < 0.02),
                            (point.offered_rps, point.latency_p99_s))
                labels = spots.setdefault(spot, [])
                if str(point.num_gpus) not in labels:
                    labels.append(str(point.num_gpus))
        for (rate, p99), gpus in spots.items():
            ax_load.annotate(", ".join(gpus), (rate, p99), fontsize=7, xytext=(5, 3), textcoords="offset points")
        limit, what = (cfg.ttft_sla_s, "TTFT") if self.on_profile else (sla, "end-to-end latency")
        ax_load.axhline(limit, color="k", ls=":", lw=1, label=f"{what} limit {limit:g} s")
        ax_load.set_yscale("log")
        ax_load.margins(x=0.15, y=0.25)   # room for the points' labels inside the panel
        ax_load.set(xlabel="offered load, requests/s", ylabel=f"p99 {what}, s (log)",
                    title="Load-latency plane (every run so far; labels: GPUs)")
        ax_load.legend(loc="best", fontsize=8)

        fig.suptitle(self.title(), fontsize=10)
        self.last_timing["draw_s"] = time.perf_counter() - t0
        return fig

    def knobs(self) -> tuple[str, ...]:
        """The knobs the current scheduler reads (:func:`knobs`)."""
        return knobs(self.config.scheduler, self.on_profile)

    def title(self) -> str:
        """The figure's two lines: the scheduler with the knobs it reads, the hardware model and SLA; the trace, the
        rate it is replayed at, and whether the run meets the SLA target."""
        cfg = self.config
        used = self.knobs()
        settings = [f"{cfg.num_gpus} GPU{'s' if cfg.num_gpus != 1 else ''}"]
        settings += [f"K={cfg.k_bins}"] if "k_bins" in used else []
        settings += [f"batch size {cfg.batch_size}"] if "batch_size" in used else []
        settings += [f"b_max {cfg.b_max}, latency budget {cfg.d_sla_s:g} s"] if "b_max" in used else []
        model = (f"{self.step_profile} step times, SLA TTFT <= {cfg.ttft_sla_s:g} s and TPOT <= "
                 f"{cfg.tpot_sla_s * 1e3:g} ms" if self.on_profile
                 else f"seed formula grid (not measured), SLA end-to-end <= {cfg.d_sla_s:g} s")
        last = self.history[-1] if self.history else None
        verdict = ""
        if last is not None and math.isfinite(last.attainment):
            meets = last.attainment >= self.attainment
            verdict = (f" | {last.attainment:.1%} within the SLA: {'meets' if meets else 'misses'} the "
                       f"{self.attainment:.0%} target")
        trace = self.trace()
        lines = [f"{cfg.scheduler} on {', '.join(settings)}; {model}", trace.label,
                 f"replayed at {replay_text(trace)}{verdict}"]
        # wrapped to the figure's width (about 130 characters at its title's size): nothing is cut off
        return "\n".join(textwrap.fill(line, 130) for line in lines)

    # -- the widgets -------------------------------------------------------------------------------
    def widgets(self) -> dict:
        import ipywidgets as w

        if self._widgets is None:
            cfg = self.config
            style = {"description_width": "110px"}
            self._widgets = {
                "trace": w.Dropdown(options=self.trace_names, value=self.trace_name, description="trace",
                                    style=style),
                # a disaggregated deployment has no single GPU count to slide (see wb.best_placement)
                "scheduler": w.Dropdown(options=sorted(n for n, c in SCHEDULERS.items() if c.engine != "disaggregated"),
                                        value=cfg.scheduler, description="scheduler",
                                        style=style),
                "num_gpus": w.IntSlider(value=cfg.num_gpus, min=1, max=64, description="GPUs", style=style),
                "k_bins": w.IntSlider(value=cfg.k_bins, min=1, max=32, description="K bins", style=style),
                "ttft_sla_s": w.FloatLogSlider(value=cfg.ttft_sla_s, base=10, min=-1, max=2, step=0.05,
                                               description="TTFT limit, s", style=style),
                # on a step-time profile the SLA controllers' latency budget; on the seed grid the SLA itself
                "d_sla_s": w.FloatLogSlider(value=cfg.d_sla_s, base=10, min=-1, max=2, step=0.05,
                                            description="latency budget, s" if self.on_profile else "E2E SLA, s",
                                            style=style),
                "load_scaling": w.FloatLogSlider(value=self.load_scaling, base=2, min=-4, max=4, step=0.25,
                                                 description="load x", style=style),
                "b_max": w.IntSlider(value=cfg.b_max, min=1, max=256, description="b_max", style=style),
                "batch_size": w.IntSlider(value=cfg.batch_size, min=1, max=256, description="batch size",
                                          style=style),
            }
            for name, widget in self._widgets.items():
                widget.observe(self._on_change, names="value")
            self._enable_widgets()
        return self._widgets

    def _enable_widgets(self) -> None:
        """Enable the widgets of the knobs the current scheduler reads, disable the others (a disabled slider
        keeps its value: choosing a scheduler that reads it again uses it)."""
        used = self.knobs()
        for name in KNOB_WIDGETS:
            widget = self._widgets[name]
            widget.disabled = name not in used
            widget.tooltip = None if name in used else f"{self.config.scheduler} does not read {name}"

    def _on_change(self, change) -> None:
        name = next(n for n, wdg in self._widgets.items() if wdg is change["owner"])
        try:
            if name == "trace":
                self.set(trace=change["new"])
            elif name == "load_scaling":
                self.set(load_scaling=change["new"])
            else:
                self.set(**{name: change["new"]})
        except ValueError as exc:   # e.g. b_max below b_min: say so instead of a traceback
            self._show_error(str(exc))
            return
        self.redraw()

    def _show_error(self, message: str) -> None:
        self.last_error = message
        if self._output is not None:
            self._output.outputs = ({"output_type": "stream", "name": "stdout",
                                     "text": f"Not simulated: {message}\n"},)

    def png(self, dpi: int = 80) -> bytes:
        """The current figure as PNG bytes."""
        import io

        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def redraw(self) -> None:
        """Draw the current result into the Output widget (set directly: works with or without a kernel)."""
        import base64

        image = self.png()
        self.last_image = image
        self.last_error = None
        if self._output is None:
            return
        timing = (f"simulated {self.result.arrival_s.size:,} requests in {self.last_timing['simulate_s'] * 1e3:.0f} ms, "
                  f"drew in {self.last_timing['draw_s'] * 1e3:.0f} ms\n")
        self._output.outputs = (
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": base64.b64encode(image).decode("ascii"), "text/plain": "<explorer figure>"}},
            {"output_type": "stream", "name": "stdout", "text": timing},
        )

    def show(self):
        """The widget box with the figure below it (the notebook's last expression)."""
        import ipywidgets as w

        controls = self.widgets()
        self._output = w.Output()
        self.run()
        self.redraw()
        names = list(controls)
        half = (len(names) + 1) // 2
        box = w.HBox([w.VBox([controls[n] for n in names[:half]]), w.VBox([controls[n] for n in names[half:]])])
        return w.VBox([box, self._output])
