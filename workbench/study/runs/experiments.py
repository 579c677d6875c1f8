"""The three steps of the stress test: which tests each step runs.

The notebooks and ``python -m workbench suite`` share these definitions:

1. ``step1_request_scaling``: request volumes 1K, 10K, 100K, 1M (10x steps
   from 1,000 up to ``max_requests``, plus ``max_requests`` itself when it is
   not a power of ten; ``request_volumes`` overrides the list); ``static_fifo``
   and ``dynamic_no_bins`` on 1 GPU, ``multi_bin_dynamic`` on 1, 2 and 4 GPUs
   (those <= ``max_gpus``); K = ``k_bins``.
2. ``step2_gpu_scaling``: ``max_requests`` requests, ``multi_bin_dynamic`` on
   1, 2, 4, 8, 16, 32, 64, 100 GPUs (those <= ``max_gpus``).
3. ``step3_kbins_sensitivity``: ``max_requests`` requests,
   ``multi_bin_dynamic`` on ``best_gpu_count`` GPUs with K = 1, 2, 4, 8, 16, 32.
   ``best_gpu_count=None`` takes the GPUs step 2 found the trace needs (the
   fewest whose capacity covers the replayed load) from ``all_results.csv`` in
   the same results folder; without step 2 results it falls back to
   :data:`DEFAULT_BEST_GPU_COUNT` (capped at ``max_gpus``) and says so.

Capacity (``capacity_search=True``, the default): besides the replay at the
trace's own rate, some tests search the largest arrival rate at which at least
``capacity_attainment`` of the requests meet the SLA (TTFT and TPOT limits on a
step-time profile, ``d_sla`` on the seed grid; :class:`~workbench.study.runs.sweep.CapacitySpec`): in step 1 the 1-GPU configurations
at the largest volume, in step 2 every GPU count, in step 3 every K.  A replay
only says whether the pool keeps up at the one load replayed; once it does,
more GPUs or bins change nothing, while capacity keeps telling them apart.

Results folder: every plan claims its folder for its parameters
(:mod:`workbench.study.store.folders`): ``results_dir=None`` means ``results/default``
at the default parameters and ``results/<the parameters that differ>``
otherwise; a folder holding another parameter set is refused.  Step 3's rows
record where its GPU count came from (``gpu_count_source``, ``step2_test_id``),
and ``analysis.json`` says whether it is still the GPUs step 2 found the trace needs.

Each step loads its trace once (step 1 once per volume) and keys its tests by
the trace's fingerprint.  The notebook ``seed`` seeds both the simulation and
the synthetic trace.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from workbench import checks
from workbench.study.answers import analysis
from workbench.study.present.text import NOTEBOOK_TITLES
from workbench.study.store import folders
from workbench.study.store.replications import replication_seeds
from workbench.sim import profiles
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.schedulers import SCHEDULERS, get_scheduler
from workbench.sim.steptime import StepTimeModel
from workbench.traces import datasets
from workbench.traces.trace import DEFAULT_RPS_SCALING, SEED_RPS_SCALING, TraceSizeWarning
from workbench.study.runs.capacity import DEFAULT_ATTAINMENT, attainment_may_rise_with_load
from workbench.study.runs.sweep import (CapacitySpec, SweepTest, TraceOptions, check_replay_times, finished_elsewhere,
                                        is_continuous, make_test, normalize_dataset, parse_executor, run_sweep,
                                        with_capacity_hint)
from workbench.study.store.checkpoints import GRID_PROFILE, finished_ids, read_rows
from workbench.study.store.files import display_path, resolve_results_dir

log = logging.getLogger(__name__)

STEP1, STEP2, STEP3 = "step1_request_scaling", "step2_gpu_scaling", "step3_kbins_sensitivity"
STEPS = (STEP1, STEP2, STEP3)
# the files the steps write into their folder (checked before computing: none may be a folder)
STEP_OUTPUTS = (*(f"{step}.csv" for step in STEPS), analysis.ALL_RESULTS, analysis.ANALYSIS)
STEP_TITLES = {step: NOTEBOOK_TITLES[step] for step in STEPS}

SMALLEST_VOLUME = 1_000
STEP1_CONFIGS = (("static_fifo", 1), ("dynamic_no_bins", 1), ("multi_bin_dynamic", 1),
                 ("multi_bin_dynamic", 2), ("multi_bin_dynamic", 4), ("disaggregated", 2))
DISAGGREGATED = "disaggregated"


def disaggregated_split(gpus: int) -> dict:
    """The steps' disaggregated deployment on ``gpus`` (>= 2) GPUs: ``gpus // 2`` prefill and the rest decode
    instances of one GPU each (``wb.best_placement`` searches the best split)."""
    return {"prefill_replicas": gpus // 2, "decode_replicas": gpus - gpus // 2}


def _gpu_counts(scheduler: str, counts) -> list[int]:
    """The GPU counts a scheduler runs at: a disaggregated deployment needs at least 2 (a 1 becomes 2)."""
    if scheduler != DISAGGREGATED:
        return list(counts)
    return sorted({max(g, 2) for g in counts})


GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 100)
K_VALUES = (1, 2, 4, 8, 16, 32)
# Step 3 without a best GPU count and without step 2 results: the GPUs step 2 finds multi_bin_dynamic needs at
# full scale on the default synthetic trace (seed 42), capped at max_gpus.
DEFAULT_BEST_GPU_COUNT = 32

# Static batching (the seed's three policies) against vLLM's continuous batching.  continuous_sla runs in the
# comparison, with every registered scheduler: its controller updates after every decode step, so the engine
# simulates each step on its own and it takes 6-10x continuous_fcfs's time, which in steps 1-3 (at 1M requests,
# 1-100 GPUs) would double make run's time; --schedulers adds it to the steps.
DEFAULT_SCHEDULERS = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic", "continuous_fcfs")
# the scheduler whose GPU count and K the headline answers (GPUs needed, best K) are about
PRIMARY_SCHEDULER = "multi_bin_dynamic"
STATIC_GRID_TEXT = "formula grid (Qwen3-1.7B/RTX 4080 labels, generated from a formula, not measured)"

# The seed study, by name: latency="seed-grid" runs its three static schedulers on its formula grid, judged on
# end-to-end latency within d_sla, at its load (the trace's timestamps / 200).
SEED_GRID = GRID_PROFILE
SEED_SCHEDULERS = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic")
# On a measured profile (OPT-13B on one A100 by default) the trace's timestamps / 10 (about 2.4 requests/s for the
# default synthetic trace) is a load whose answers lie inside the ranges tested: continuous batching needs about 8
# GPUs for it, static batching about 32 (step 2), out of 1..100.  The library's default load (wb.load_trace's).
PROFILE_RPS_SCALING = DEFAULT_RPS_SCALING
LATENCY_ALIASES = {"grid": SEED_GRID}


def default_schedulers(latency: str) -> tuple[str, ...]:
    """The schedulers a run compares when none are named: the seed's static three on its grid, else
    :data:`DEFAULT_SCHEDULERS` (static and continuous batching on one step-time profile)."""
    return SEED_SCHEDULERS if latency == SEED_GRID else DEFAULT_SCHEDULERS


# SimConfig's defaults: the SLA and K every run takes unless told otherwise
_CONFIG_DEFAULTS = {f.name: f.default for f in fields(SimConfig)}


def default_rps_scaling(latency: str) -> float:
    """The load (the trace's timestamps divided by this) when ``rps_scaling`` is not given."""
    return SEED_RPS_SCALING if latency == SEED_GRID else PROFILE_RPS_SCALING

BRIEF_COLUMNS = ("label", "scheduler", "replication", "num_requests", "num_gpus", "k_bins", "throughput_rps",
                 "goodput_rps", "sla_violation_rate", "latency_p99_s", "gpu_utilization_mean", "capacity_rps",
                 "ttft_p99_s", "tpot_p99_s", "wall_s")


def profile_config_fields(name: str) -> dict:
    """The SimConfig memory fields of the hardware a step-time profile was measured on."""
    return dict(profiles.profile_config_fields(name))


def _schedulers(value) -> tuple[str, ...]:
    """A tuple of registered scheduler names from a list/tuple or a comma-separated string (papermill -p)."""
    return checks.names(value, "schedulers", allowed=SCHEDULERS)


def _int_at_least(value, name: str, low: int) -> int:
    return checks.integer(value, name, low=low)


@dataclass(frozen=True)
class StepParams:
    """The parameters every step notebook takes (same names, same defaults as its ``parameters`` cell).

    What a test simulates defaults to the library's defaults, taken from the library (one source of truth):
    the hardware model ``profiles.DEFAULT_PROFILE``, the load ``load_trace``'s ``DEFAULT_RPS_SCALING``, the SLA
    and K of :class:`SimConfig`, the capacity target ``capacity``'s ``DEFAULT_ATTAINMENT``.  The suite's own: the
    trace's size, the GPU counts, the seed (42)."""

    max_requests: int = 1_000_000
    max_gpus: int = 100
    use_real_timestamps: bool = False
    rps_scaling: float | None = None  # None: PROFILE_RPS_SCALING on a profile, SEED_RPS_SCALING on the seed grid
    d_sla: float = _CONFIG_DEFAULTS["d_sla_s"]
    dataset: str | None = None
    k_bins: int = _CONFIG_DEFAULTS["k_bins"]
    seed: int = 42
    results_dir: str | None = None
    executor: Any = None
    capacity_search: bool = True
    capacity_attainment: float = DEFAULT_ATTAINMENT
    schedulers: tuple[str, ...] | None = None  # None: default_schedulers(latency)
    latency: str = profiles.DEFAULT_PROFILE
    replications: int = 1
    ttft_sla: float = _CONFIG_DEFAULTS["ttft_sla_s"]
    tpot_sla: float = _CONFIG_DEFAULTS["tpot_sla_s"]

    def __post_init__(self):
        latency = LATENCY_ALIASES.get(self.latency, self.latency) if isinstance(self.latency, str) else self.latency
        latency = profiles.check_profile(latency, "latency", extra=(SEED_GRID,),
                                         hint=f"{SEED_GRID!r} (alias 'grid') is the seed study's formula grid (static "
                                              "schedulers only, judged on end-to-end latency within d_sla); the "
                                              "others are step-time profiles")
        object.__setattr__(self, "latency", latency)
        schedulers = default_schedulers(latency) if self.schedulers is None else self.schedulers
        object.__setattr__(self, "schedulers", _schedulers(schedulers))
        if self.rps_scaling is None:
            object.__setattr__(self, "rps_scaling", default_rps_scaling(latency))
        continuous = [s for s in self.schedulers if is_continuous(s)]
        if continuous and latency == SEED_GRID:
            split = (f" ({DISAGGREGATED} times its prefill and decode instances separately, and the grid's batch "
                     "times have no prefill/decode split)" if DISAGGREGATED in continuous else "")
            raise ValueError(f"latency={SEED_GRID!r} is the static engine's batch-time grid; {', '.join(continuous)} "
                             f"need a step-time profile{split} (latency={profiles.DEFAULT_PROFILE!r}, the default, or "
                             f"another of {', '.join(profiles.profile_names())}), or leave them out of schedulers")
        if latency != SEED_GRID:
            profile_config_fields(latency)  # ValueError when the profile's hardware is unknown
        # every value as the type it is used as, so parameters.json records what actually ran
        for name, low, high in (("replications", 1, 1_000), ("max_requests", 1, 10**9), ("max_gpus", 1, 100_000),
                                ("k_bins", 1, None), ("seed", 0, None)):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=low, high=high))
        for name in ("use_real_timestamps", "capacity_search"):
            object.__setattr__(self, name, checks.boolean(getattr(self, name), name))
        object.__setattr__(self, "rps_scaling", checks.number(self.rps_scaling, "rps_scaling", low=0,
                                                              low_open=True, hint="or None for the default"))
        for name, field_name in (("d_sla", "d_sla_s"), ("ttft_sla", "ttft_sla_s"), ("tpot_sla", "tpot_sla_s")):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"{name} (SimConfig.{field_name})",
                                                         low=0, low_open=True, unit="s"))
        object.__setattr__(self, "capacity_attainment", checks.number(
            self.capacity_attainment, "capacity_attainment", low=0, low_open=True, high=1))
        # a parameter another one switches off would be recorded (parameters.json, the folder's name) but not used
        defaults = {f.name: f.default for f in fields(StepParams)}
        if self.use_real_timestamps and self.rps_scaling != default_rps_scaling(latency):
            raise ValueError(f"rps_scaling={self.rps_scaling:g} has no effect with use_real_timestamps=True (the "
                             "trace's own inter-arrival times are kept, not divided): drop one of them "
                             "(--rps-scaling or --use-real-timestamps on the command line)")
        if not self.capacity_search and self.capacity_attainment != defaults["capacity_attainment"]:
            raise ValueError(f"capacity_attainment={self.capacity_attainment:g} has no effect with "
                             "capacity_search=False (no capacity search runs): drop one of them "
                             "(--capacity-attainment or --no-capacity on the command line)")
        if latency == SEED_GRID:
            unused = [f"{name}={getattr(self, name):g}" for name in ("ttft_sla", "tpot_sla")
                      if getattr(self, name) != defaults[name]]
            if unused:
                raise ValueError(f"{' and '.join(unused)} has no effect with latency={SEED_GRID!r} (the seed study "
                                 "judges end-to-end latency within d_sla): drop it, or use a step-time profile "
                                 "(--ttft-sla/--tpot-sla or --latency on the command line)")
        if self.dataset is not None and not isinstance(self.dataset, (str, os.PathLike)):
            raise checks.InvalidType(f"dataset: must be None, a dataset name ({', '.join(datasets.names())}) or a "
                                     f"CSV path, got {self.dataset!r}")
        close = datasets.closest(self.dataset)
        object.__setattr__(self, "dataset", normalize_dataset(self.dataset))
        if datasets.is_name(self.dataset):
            datasets.get(self.dataset)  # FileNotFoundError saying how to get it
        elif self.dataset is not None and not Path(self.dataset).is_file():
            raise FileNotFoundError(f"dataset: {self.dataset} is not a file "
                                    + (f"(did you mean the dataset {close!r}?) " if close else "")
                                    + f"(None = the embedded synthetic trace; dataset names: "
                                      f"{', '.join(datasets.names())})")
        if self.results_dir is not None:
            checks.path(self.results_dir, "results_dir", expected="a folder path, or None for the default folder")
        self.base_config()  # validates d_sla, k_bins, seed, ttft_sla, tpot_sla
        self.trace_options(1)  # validates rps_scaling
        parse_executor(self.executor, queued=2)
        CapacitySpec(attainment=self.capacity_attainment)  # validates capacity_attainment

    @property
    def seed_grid(self) -> bool:
        """Whether these parameters reproduce the seed study (its formula grid and end-to-end SLA)."""
        return self.latency == SEED_GRID

    def capacity_spec(self) -> CapacitySpec | None:
        """The capacity search of the tests that have one (None when ``capacity_search`` is off)."""
        return CapacitySpec(attainment=self.capacity_attainment) if self.capacity_search else None

    def base_config(self, *, seed: int | None = None, **changes) -> SimConfig:
        """The SimConfig of a test (``seed``: a replication's seed, default ``self.seed``).  Every scheduler gets
        the memory configuration of the profile's hardware (the seed grid's: ``memory.GRID_MEMORY``)."""
        base = SimConfig(d_sla_s=self.d_sla, k_bins=self.k_bins, seed=self.seed if seed is None else seed,
                         ttft_sla_s=self.ttft_sla, tpot_sla_s=self.tpot_sla)
        return base.replace(**{**profile_config_fields(self.latency), **changes})

    def trace_options(self, num_requests: int, seed: int | None = None) -> TraceOptions:
        return TraceOptions(dataset=self.dataset, num_requests=num_requests, rps_scaling=self.rps_scaling,
                            use_real_timestamps=self.use_real_timestamps, seed=self.seed if seed is None else seed)

    def seeds(self) -> list[int]:
        """The seeds of the replications: ``seed``, ``seed + 1``, ... (trace generator and simulation)."""
        return replication_seeds(self.seed, self.replications)

    def latency_model(self, scheduler: str | None = None) -> LatencyModel | StepTimeModel:
        """The latency model every scheduler runs with: the step-time profile ``latency`` (static schedulers in
        step mode, on the same hardware and memory as the continuous ones), or the seed's formula grid."""
        if self.seed_grid:
            return LatencyModel.default()
        return profiles.get_profile(self.latency)

    def sla_text(self) -> str:
        """The SLA every scheduler is judged on, in words."""
        if self.seed_grid:
            return f"end-to-end latency <= d_sla = {self.d_sla:g} s"
        return f"TTFT <= {self.ttft_sla:g} s and TPOT <= {self.tpot_sla * 1e3:g} ms"

    def latency_text(self) -> str:
        """One sentence: the hardware model and the SLA every scheduler of these parameters is judged on."""
        if self.seed_grid:
            return (f"Hardware model: the seed study's {STATIC_GRID_TEXT}, for every scheduler; SLA: "
                    f"{self.sla_text()}.")
        what = profiles.describe_profile(self.latency)
        return (f"Hardware model: the step-time profile `{self.latency}` ({what}) and that GPU's KV cache, for "
                f"every scheduler (static batches in step mode); SLA: {self.sla_text()} (DistServe's SLO "
                "attainment).")

    @classmethod
    def from_namespace(cls, namespace: dict) -> "StepParams":
        """The parameters a notebook's ``parameters`` cell defined (``globals()``): every field found there."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def identity(self) -> dict:
        """What the results depend on: every step parameter but where and how the tests run."""
        return {f.name: getattr(self, f.name) for f in fields(StepParams) if f.name not in folders.RUN_ONLY}

    def default_folder(self) -> str:
        """``results/default`` at the default parameters, else ``results/<what differs>`` (from the defaults of
        this latency model: ``latency=seed-grid`` names itself, not the load and schedulers that come with it)."""
        defaults = StepParams(latency=self.latency).identity()
        defaults["latency"] = StepParams.latency
        return f"results/{folders.folder_name(self.identity(), defaults)}"

    @property
    def results_path(self) -> Path:
        return resolve_results_dir(self.results_dir if self.results_dir is not None else self.default_folder())

    def claim_results_dir(self) -> Path:
        """The results folder, recorded as these parameters' (``ResultsFolderConflict`` if it holds others'; a
        ``ValueError`` if it cannot take them: see :func:`workbench.study.store.folders.claim`)."""
        folder = self.results_path
        if self.results_dir is None and folder.name != folders.DEFAULT_FOLDER:
            log.info("results go to %s (named by the parameters that differ from the defaults)",
                     display_path(folder))
        folders.claim(folder, self.identity(), suggestion=self.default_folder(), outputs=STEP_OUTPUTS)
        return folder

    def check_traces(self) -> None:
        """The largest trace these parameters replay, loaded and checked as a plan checks each test's (usable
        times for every scheduler's latency model, capacity scans included), recording nothing: what the
        command line checks before it records the results folder."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceSizeWarning)
            trace = self.trace_options(self.max_requests).load()
        for scheduler in self.schedulers:
            check_replay_times(trace, self.latency_model(scheduler), scheduler, self.capacity_search)

    def check_results_dir(self) -> Path:
        """What :meth:`claim_results_dir` checks, creating and recording nothing (the command line's check)."""
        return folders.check_claim(self.results_path, self.identity(), suggestion=self.default_folder(),
                                   outputs=STEP_OUTPUTS)


def uses_bins(scheduler: str, config: SimConfig | None = None) -> bool:
    """Whether ``scheduler`` groups requests into K bins (so step 3's K sweep means something for it)."""
    policy, config = get_scheduler(scheduler), config or SimConfig(scheduler=scheduler)
    if policy.engine == "disaggregated":
        return False
    spec = policy.continuous_spec(config) if policy.engine == "continuous" else policy.engine_spec(config)
    return bool(spec.uses_bins)


@dataclass
class StepPlan:
    """A step's tests in batches (one notebook cell each), and where their results go."""

    step: str
    params: StepParams
    batches: dict[Any, list[SweepTest]]
    notes: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # columns added to the step's rows in all_results.csv

    @property
    def results_dir(self) -> Path:
        return self.params.results_path

    @property
    def tests(self) -> list[SweepTest]:
        return [t for batch in self.batches.values() for t in batch]

    @property
    def trace_label(self) -> str:
        return self.tests[-1].trace_label if self.tests else ""

    @property
    def synthetic(self) -> bool:
        return any(t.synthetic for t in self.tests)

    def table(self) -> pd.DataFrame:
        """One line per planned test, and whether its result is already checkpointed (for reading: the
        configuration, requests, seed, whether it searches its capacity, done, its id)."""
        done = finished_ids(read_rows(self.results_dir / f"{self.step}.csv"))
        several = len(self.batches) > 1
        return pd.DataFrame([{**({"cell": key} if several else {}), "configuration": t.label,
                              "requests": f"{t.trace.num_requests:,}", "seed": t.config.seed,
                              "capacity search": "yes" if t.capacity is not None else "no",
                              "done": "yes" if t.test_id in done else "not yet", "test id": t.test_id}
                             for key, batch in self.batches.items() for t in batch])

    def describe(self) -> str:
        """A few lines of markdown: what will run, on which trace, hardware and SLA, where results go."""
        from workbench.study.present.text import schedulers_markdown

        load = ("at its own timestamps" if self.params.use_real_timestamps
                else f"timestamps divided by {self.params.rps_scaling:g}")
        lines = [f"**{STEP_TITLES[self.step]}**: {len(self.tests)} tests in {len(self.batches)} batch(es) on the "
                 f"trace *{self.trace_label}* ({load}); results in "
                 f"`{display_path(self.results_dir)}`."]
        if self.synthetic:
            lines.append("The trace is **synthetic** (a BurstGPT-like stand-in generated from published "
                         "statistics), not the real BurstGPT log; every CSV row and plot title says so.")
        lines.append(self.params.latency_text())
        lines.append("The schedulers:\n\n" + schedulers_markdown(self.params.schedulers))
        searched = [t for t in self.tests if t.capacity is not None]
        if searched:
            spec = searched[0].capacity
            lines.append(f"{len(searched)} of the tests also search their **capacity**: the largest arrival rate "
                         f"at which at least {spec.attainment:.0%} of the requests meet the SLA "
                         f"({self.params.sla_text()}), the trace replayed faster or slower (resolution "
                         f"{spec.resolution:.0%}). Each search starts from what is already known (the previous "
                         "GPU count's answer scaled by the GPU ratio; at K other than k_bins, k_bins' answer), so "
                         "it takes a few simulations; a test another step or results folder already ran is reused.")
        else:
            lines.append("Capacity search is off (`capacity_search=False`): replays only.")
        if self.params.replications > 1:
            from workbench.study.store.replications import INTERVAL_TEXT

            lines.append(f"**{self.params.replications} replications**: every test runs with seeds "
                         f"{', '.join(map(str, self.params.seeds()))} (trace and simulation); the CSV holds one row "
                         f"per (test, seed), `{self.step}_summary.csv` the means and their {INTERVAL_TEXT} "
                         "(`_ci95_low`, `_ci95_high`), and the plots draw them as error bars.")
        lines.extend(self.notes)
        return "\n\n".join(lines)

    def announce(self) -> None:
        """Tell the terminal that started the kernel (``papermill`` on the command line) where results go."""
        from workbench.study.present.console import tell_terminal

        tell_terminal(f"{self.step}: results go to {display_path(self.results_dir)}/")

    def run(self, batch: Any = None, *, progress: bool = True) -> pd.DataFrame:
        """Run one batch (``None``: every batch); returns the rows of the tests run, in plan order.

        Tests already in the step's checkpoint are not rerun.  A batch that is
        not part of this plan (e.g. the 1M cell when ``max_requests`` is
        smaller) runs nothing and returns an empty frame.
        """
        if batch is None:
            tests, desc = self.tests, self.step
        elif batch in self.batches:
            tests, desc = self.batches[batch], f"{self.step} [{batch}]"
        else:
            log.info("%s: no batch %r at these parameters (batches: %s); nothing to run",
                     self.step, batch, ", ".join(map(str, self.batches)))
            return pd.DataFrame()
        return run_sweep(tests, self.results_dir, checkpoint=f"{self.step}.csv", executor=self.params.executor,
                         progress=progress, desc=desc)

    def finish(self, rows: pd.DataFrame | None = None) -> dict:
        """Record this run's rows in ``all_results.csv``, rewrite ``analysis.json`` and ``index.html``; returns
        the analysis."""
        from workbench.study.answers import report
        from workbench.study.present.console import tell_terminal

        rows = self.run(progress=False) if rows is None else rows
        if self.provenance and not rows.empty:
            rows = rows.copy().assign(**self.provenance)  # copy: the checkpoint frame is fragmented
        result = analysis.update_outputs(self.results_dir, self.step, rows)
        index = report.write_index(self.results_dir)
        tell_terminal(f"{self.step}: done; {display_path(index)} lists the answers, figures and tables (for an HTML "
                      f"copy of this notebook there, run it with `python -m workbench notebook {self.step} -p ...`)")
        return result


def notebook_setup() -> None:
    """What every step notebook sets up: workbench's log lines (one per finished test) as plain output, each
    warning once without source lines, compact tables (:func:`workbench.study.present.console.notebook_setup`)."""
    from workbench.study.present import console

    console.notebook_setup()


def request_volumes_for(max_requests: int, request_volumes: Sequence[int] | None = None) -> list[int]:
    """Step 1's volumes: ``request_volumes`` if given, else 1K, 10K, ... up to ``max_requests`` (and it)."""
    if request_volumes is not None:
        volumes = sorted(set(checks.integers(request_volumes, "request_volumes", low=1, high=10**9, unique=False)))
        if volumes[-1] > max_requests:   # max_requests is step 1's largest volume (and the folder's record)
            raise ValueError(f"request_volumes: {volumes[-1]:,} is more than max_requests={max_requests:,}, the "
                             "largest volume these parameters test; raise max_requests or lower request_volumes")
        return volumes
    volumes, v = [], SMALLEST_VOLUME
    while v <= max_requests:
        volumes.append(v)
        v *= 10
    if not volumes or volumes[-1] != max_requests:
        volumes.append(max_requests)
    return volumes


def _label(scheduler: str, gpus: int, k: int | None = None) -> str:
    text = f"{scheduler} ({gpus} GPU{'s' if gpus > 1 else ''}"
    return text + (f", K={k})" if k is not None else ")")


def _replicate(params: StepParams, make) -> list[SweepTest]:
    """``make(seed)`` (the same tests, in the same order, for any seed) for every replication seed, each test
    knowing its replication index and the id of its replication 0 (what the replications share).  A
    replication's capacity search starts from replication 0's answer (the same configuration on another seed:
    the closest hint there is), so the replications of a chain run side by side."""
    base = [dataclasses.replace(t, base_test_id=t.test_id) for t in make(params.seed)]
    out = list(base)
    for r, seed in enumerate(params.seeds()[1:], start=1):
        again = make(seed)
        if len(again) != len(base):
            raise RuntimeError(f"seed {seed} gives {len(again)} tests, seed {params.seed} gave {len(base)}")
        out.extend(with_capacity_hint(dataclasses.replace(t, replication=r, base_test_id=b.test_id), b)
                   for b, t in zip(base, again))
    return out


def capacity_chain(tests: Sequence[SweepTest], by: str = "num_gpus") -> list[SweepTest]:
    """``tests`` (one scheduler, in order of ``by``) with each capacity search starting from the previous test's
    answer, scaled by the ratio of GPU counts for ``by="num_gpus"`` (capacity grows about linearly with GPUs)
    and taken as it is for K (``by="k_bins"``)."""
    out: list[SweepTest] = []
    for test in tests:
        prev = out[-1] if out else None
        scale = (getattr(test.config, by) / getattr(prev.config, by)) if prev is not None and by == "num_gpus" else 1.0
        out.append(with_capacity_hint(test, (prev, scale)) if prev is not None else test)
    return out


# Where each scheduler's capacity search starts (the hints enter the test ids: every plan builds them the same
# way, so step 1, step 2 and the comparison share their tests).  A scheduler whose capacity is close to a faster
# one's starts from that one's answer on the same GPUs, so its own tests need not wait for each other:
# continuous_sla's controller rarely binds at capacity (within a few percent of continuous_fcfs, 4-5x slower
# to simulate).  Every other scheduler starts from its previous GPU count's answer, scaled by the GPU ratio,
# or, where that one found none, from its fallback's answer on the fewest GPUs, scaled the same way.  A scheduler
# whose search is the exhaustive scan (multi_bin_fixed: its batches wait to fill) starts nowhere: the scan probes
# the whole range whatever the hint, so its tests depend on no other and run at any GPU count alone.
HINT_REFERENCE = {"continuous_sla": "continuous_fcfs", "continuous_multi_bin": "continuous_fcfs"}
HINT_FALLBACK = {"dynamic_no_bins": "static_fifo", "multi_bin_dynamic": "dynamic_no_bins"}


def hinted_capacity_tests(tests: dict[tuple[str, int], SweepTest]) -> dict[tuple[str, int], SweepTest]:
    """``tests`` keyed by (scheduler, GPUs), each capacity search given where it starts (see
    :data:`HINT_REFERENCE`, :data:`HINT_FALLBACK`); tests without a capacity search are returned as they are."""
    from workbench.study.present.palette import order

    out: dict[tuple[str, int], SweepTest] = {}
    for scheduler in order({s for s, _ in tests}):       # references and fallbacks come first in this order
        counts = sorted(g for s, g in tests if s == scheduler)
        reference, fallback = HINT_REFERENCE.get(scheduler), HINT_FALLBACK.get(scheduler)
        fallback_counts = sorted(g for s, g in out if s == fallback)
        for i, gpus in enumerate(counts):
            test = tests[(scheduler, gpus)]
            if test.capacity is not None and attainment_may_rise_with_load(test.config):
                out[(scheduler, gpus)] = test     # the scan: no start to give it
                continue
            if (reference, gpus) in out:
                out[(scheduler, gpus)] = with_capacity_hint(test, out[(reference, gpus)])
                continue
            sources = []
            if i > 0:
                sources.append((out[(scheduler, counts[i - 1])], gpus / counts[i - 1]))
            if fallback_counts:
                root = fallback_counts[0]
                sources.append((out[(fallback, root)], gpus / root))
            out[(scheduler, gpus)] = with_capacity_hint(test, *sources) if sources else test
    return out


def step1_configs(params: StepParams) -> list[tuple[str, int]]:
    """Step 1's (scheduler, GPUs): every scheduler on 1 GPU, ``multi_bin_dynamic`` also on 2 and 4."""
    out = []
    for scheduler in params.schedulers:
        gpus = [g for s, g in STEP1_CONFIGS if s == scheduler] or [1]
        out.extend((scheduler, g) for g in gpus if g <= params.max_gpus)
    return out


def _make(params: StepParams, step: str, options: TraceOptions, trace, seed: int, scheduler: str, gpus: int,
          k: int | None = None, capacity: CapacitySpec | None = None, label_k: bool = False) -> SweepTest:
    changes = {"scheduler": scheduler, "num_gpus": gpus, **({"k_bins": k} if k is not None else {})}
    if scheduler == DISAGGREGATED:   # num_gpus is derived from the instances
        changes.pop("num_gpus")
        changes.update(disaggregated_split(gpus))
    return make_test(step, options, params.base_config(seed=seed, **changes), trace=trace,
                     latency=params.latency_model(scheduler), label=_label(scheduler, gpus, k if label_k else None),
                     capacity=capacity)


def plan_step1(params: StepParams | None = None, *, request_volumes: Sequence[int] | None = None,
               **overrides) -> StepPlan:
    """Step 1: one batch per request volume (keys are the volumes as ints).

    With capacity search on, the configurations of the largest volume also
    search their capacity (the same tests as step 2's on 1, 2 and 4 GPUs,
    which step 2 then reuses).
    With ``replications`` > 1 every test runs once per seed (trace and simulation).
    """
    params = params or StepParams(**overrides)
    params.check_results_dir()  # refused before any trace is loaded; recorded once the plan is valid
    volumes: list[int] = []
    for volume in request_volumes_for(params.max_requests, request_volumes):
        options = params.trace_options(volume)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceSizeWarning)  # handled here
            trace = options.load()
        if len(trace) < volume:
            # a small dataset: stop at its size rather than repeat one trace under bigger labels
            log.warning("step 1: the trace has only %d requests; volume %d becomes %d", len(trace), volume,
                        len(trace))
            volume = len(trace)
            if volume in volumes:
                continue
        volumes.append(volume)
    configs = step1_configs(params)
    largest, spec = max(volumes), params.capacity_spec()

    def volume_tests(volume: int):
        def make(seed: int) -> list[SweepTest]:
            options = params.trace_options(volume, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TraceSizeWarning)
                trace = options.load()
            tests = hinted_capacity_tests({(s, g): _make(params, STEP1, options, trace, seed, s, g,
                                                         capacity=spec if volume == largest else None)
                                           for s, g in configs})
            return [tests[config] for config in configs]
        return _replicate(params, make)

    batches: dict[Any, list[SweepTest]] = {volume: volume_tests(volume) for volume in volumes}
    plan = StepPlan(STEP1, params, batches)
    params.claim_results_dir()
    plan.announce()
    return plan


def plan_step2(params: StepParams | None = None, **overrides) -> StepPlan:
    """Step 2: every scheduler of ``schedulers`` on every GPU count <= ``max_gpus`` (each with its capacity),
    one batch."""
    params = params or StepParams(**overrides)
    params.check_results_dir()  # refused before any trace is loaded; recorded once the plan is valid

    def make(seed: int) -> list[SweepTest]:
        options = params.trace_options(params.max_requests, seed)
        trace = options.load()
        tests = step2_tests(params, options, trace, seed, params.max_gpus)
        return [tests[(s, g)] for s in params.schedulers
                for g in _gpu_counts(s, [g for g in GPU_COUNTS if g <= params.max_gpus])]

    plan = StepPlan(STEP2, params, {"gpu counts": _replicate(params, make)})
    params.claim_results_dir()
    plan.announce()
    return plan


def step2_tests(params: StepParams, options: TraceOptions, trace, seed: int,
                up_to: int) -> dict[tuple[str, int], SweepTest]:
    """Step 2's tests of every scheduler on the GPU counts up to ``up_to``, keyed by (scheduler, GPUs), with
    their capacity searches' starts (:func:`hinted_capacity_tests`): the same tests step 1 runs on 1, 2 and 4
    GPUs and step 3 at its count."""
    return hinted_capacity_tests({(s, g): _make(params, STEP2, options, trace, seed, s, g,
                                                capacity=params.capacity_spec())
                                  for s in params.schedulers
                                  for g in _gpu_counts(s, [g for g in GPU_COUNTS if g <= up_to])})


GPU_COUNT_GIVEN, GPU_COUNT_STEP2, GPU_COUNT_DEFAULT = "given", "step2_gpus_needed", "default"
GPU_COUNT_STEP2_LARGEST = "step2_largest"   # no count step 2 tested covers the load: its largest


def check_best_gpu_count(best_gpu_count, max_gpus: int) -> int:
    """Step 3's GPU count: a whole number in [1, max_gpus] (max_gpus is the largest pool any step tests)."""
    n = checks.integer(best_gpu_count, "best_gpu_count", low=1)
    if n > max_gpus:
        raise ValueError(f"best_gpu_count: {n} GPUs is more than max_gpus={max_gpus}, the largest pool these "
                         "parameters test; lower best_gpu_count or raise max_gpus")
    return n


def resolve_best_gpu_count(params: StepParams, best_gpu_count: int | None) -> tuple[int, str, dict]:
    """(GPU count for step 3, a sentence saying where it came from, the columns recording it in step 3's rows).

    The columns: ``gpu_count_source`` (``given``, ``step2_gpus_needed``, ``step2_largest`` when no count step 2
    tested covers the load, or ``default``) and ``step2_test_id``, the step-2 row whose GPU count step 3 used.
    """
    if best_gpu_count is not None:
        n = check_best_gpu_count(best_gpu_count, params.max_gpus)
        return n, f"GPU count: {n}, as given (`best_gpu_count`).", {"gpu_count_source": GPU_COUNT_GIVEN,
                                                                      "step2_test_id": None}
    found = analysis.step2_row_for_step3(params.results_path)
    if found is not None:
        row, covers = found
        n = int(row["num_gpus"])
        where = f"`{display_path(params.results_path / analysis.ALL_RESULTS)}` (test {row['test_id']})"
        if covers:
            return n, f"GPU count: {n}, the GPUs step 2 found the trace needs, read from {where}.", \
                {"gpu_count_source": GPU_COUNT_STEP2, "step2_test_id": str(row["test_id"])}
        msg = (f"GPU count: {n}. No GPU count step 2 tested covers the replayed load ({where}), so step 3 runs on "
               "its largest, the closest to what the trace needs; raise max_gpus to find that.")
        log.warning(msg.replace("`", ""))
        return n, msg, {"gpu_count_source": GPU_COUNT_STEP2_LARGEST, "step2_test_id": str(row["test_id"])}
    n = min(DEFAULT_BEST_GPU_COUNT, params.max_gpus)
    msg = (f"GPU count: {n}. No step 2 results in `{display_path(params.results_path)}`, so step 3 uses the "
           f"default (min({DEFAULT_BEST_GPU_COUNT}, max_gpus)); run step 2 first or pass `best_gpu_count`.")
    log.warning(msg.replace("`", ""))
    return n, msg, {"gpu_count_source": GPU_COUNT_DEFAULT, "step2_test_id": None}


def plan_step3(params: StepParams | None = None, *, best_gpu_count: int | None = None, **overrides) -> StepPlan:
    """Step 3: at the GPUs step 2 found the trace needs (or ``best_gpu_count``), every binning scheduler of ``schedulers`` for every K in
    :data:`K_VALUES`, and every other scheduler once (at ``k_bins``, which it ignores: a reference line);
    each with its capacity, one batch.  Its rows record where the GPU count came from (see
    :func:`resolve_best_gpu_count`)."""
    params = params or StepParams(**overrides)
    params.check_results_dir()  # refused before any trace is loaded; recorded once the plan is valid
    gpus, note, provenance = resolve_best_gpu_count(params, best_gpu_count)

    def step2_known(options, trace, seed) -> dict[str, SweepTest]:
        """Step 2's tests at ``gpus`` GPUs whose results are at hand (this folder, or a results folder next to
        it), by scheduler: step 3 reuses them rather than start its own chains of capacity searches."""
        if gpus not in GPU_COUNTS or not params.capacity_search:
            return {}
        tests = step2_tests(params, options, trace, seed, gpus)
        candidates = {s: tests[(s, _gpu_counts(s, [gpus])[0])] for s in params.schedulers}
        found = finished_elsewhere(list(candidates.values()), params.results_path, None)
        return {s: t for s, t in candidates.items() if t.test_id in found}

    def make(seed: int) -> list[SweepTest]:
        options = params.trace_options(params.max_requests, seed)
        trace = options.load()
        tests = []
        at_hand = step2_known(options, trace, seed)
        for s in params.schedulers:
            known = at_hand.get(s)
            if not uses_bins(s):
                tests.append(dataclasses.replace(known, step=STEP3) if known is not None else
                             _make(params, STEP3, options, trace, seed, s, _gpu_counts(s, [gpus])[0],
                                   capacity=params.capacity_spec()))
                continue
            by_k = {k: _make(params, STEP3, options, trace, seed, s, gpus, k, capacity=params.capacity_spec(),
                             label_k=True) for k in K_VALUES}
            root = params.k_bins if params.k_bins in by_k else K_VALUES[0]
            if known is not None and known.config.k_bins == root:
                by_k[root] = dataclasses.replace(known, step=STEP3, label=by_k[root].label)
            # every other K's search starts from k_bins' answer: they run side by side once it is known
            hinted = {k: (t if k == root else with_capacity_hint(t, by_k[root])) for k, t in by_k.items()}
            tests.extend(hinted[k] for k in K_VALUES)
        return tests

    plan = StepPlan(STEP3, params, {"k values": _replicate(params, make)}, notes=[note], provenance=provenance)
    params.claim_results_dir()
    plan.announce()
    return plan


def brief(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading at a glance, as the notebooks show them (:func:`workbench.study.answers.tables.brief`:
    the columns that apply, with units, seeds averaged)."""
    from workbench.study.answers import tables

    return tables.brief(rows)


def total_tests(max_requests: int = 1_000_000, max_gpus: int = 100, schedulers: Sequence[str] = DEFAULT_SCHEDULERS,
                replications: int = 1) -> int:
    """How many tests the three steps plan (65 at the defaults, of which 11 are another step's, run once; 34
    with the seed's three static schedulers), each ``replications`` times."""
    schedulers = _schedulers(schedulers)
    step1 = len(request_volumes_for(max_requests)) * sum(
        g <= max_gpus for s in schedulers for g in ([g for t, g in STEP1_CONFIGS if t == s] or [1]))
    step2 = sum(len(_gpu_counts(s, [g for g in GPU_COUNTS if g <= max_gpus])) for s in schedulers)
    step3 = sum(len(K_VALUES) if uses_bins(s) else 1 for s in schedulers)
    return (step1 + step2 + step3) * _int_at_least(replications, "replications", 1)


__all__ = ["notebook_setup", "STEPS", "STEP1", "STEP2", "STEP3", "StepParams", "StepPlan", "plan_step1", "plan_step2",
           "plan_step3", "request_volumes_for", "resolve_best_gpu_count", "brief", "total_tests"]
