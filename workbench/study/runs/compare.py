"""Running the scheduler comparison: every scheduler's capacity on the GPU counts that decide the GPUs it needs
(:func:`search_counts`: every count, but for the schedulers that vary a close one), then load-latency curves.

:func:`run_comparison` runs the tests (checkpointed in ``compare_schedulers.csv``, keyed like every sweep's, so
step 2's capacities at the same parameters are reused), aggregates each over its seeds and hands the rows to
:mod:`workbench.study.answers.compare` for the ranking, the break points and their sentences; the figures are
:mod:`workbench.study.answers.compare_plots`'.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.sim.config import SimConfig
from workbench.sim.profiles import DEFAULT_PROFILE
from workbench.study.answers.compare import break_points, break_sentences, capacity_ranking
from workbench.study.runs.capacity import DEFAULT_ATTAINMENT

log = logging.getLogger(__name__)

NOTEBOOK = "compare_schedulers"
CHECKPOINT = f"{NOTEBOOK}.csv"
# what a comparison writes into its folder (checked before any case runs: none may be a folder)
OUTPUTS = (CHECKPOINT, f"{NOTEBOOK}_capacity.csv", f"{NOTEBOOK}_curves.csv", f"{NOTEBOOK}_ranking.csv")


def all_schedulers() -> tuple[str, ...]:
    from workbench.sim.schedulers import SCHEDULERS

    # a disaggregated deployment splits GPUs into pools: it is compared by wb.best_placement
    # (notebooks/disaggregation.ipynb), not at one GPU count beside the single-pool schedulers
    return tuple(sorted(name for name, cls in SCHEDULERS.items() if cls.engine != "disaggregated"))


# SimConfig's defaults: the SLA and K of the library, the steps' and the comparison's
_CONFIG_DEFAULTS = {f.name: f.default for f in fields(SimConfig)}


def _default_rps_scaling() -> float:
    from workbench.study.runs.experiments import PROFILE_RPS_SCALING

    return PROFILE_RPS_SCALING


# A scheduler compared beside a close one is searched only at the GPU counts that decide its answer
# (``needed_only``): it starts from the GPUs its reference needs (step 2's answer for the reference, on step 2's
# tests), so the comparison adds a few capacity searches per scheduler, not one per GPU count.  continuous_sla and
# continuous_multi_bin add controllers or bins to continuous_fcfs (within a few percent of its capacity),
# multi_bin_fixed fixes the batch size of multi_bin_dynamic's bins.
COMPARE_REFERENCE = {"continuous_sla": "continuous_fcfs", "continuous_multi_bin": "continuous_fcfs",
                     "multi_bin_fixed": "multi_bin_dynamic"}


def _default_gpu_counts() -> tuple[int, ...]:
    from workbench.study.runs.experiments import GPU_COUNTS

    return GPU_COUNTS


@dataclass(frozen=True)
class CompareParams:
    """What a scheduler comparison depends on (the compare notebook's ``parameters`` cell).

    Trace, hardware model, SLA and capacity target are those of the step notebooks (same names where they
    share a meaning), so at the same parameters a capacity here is the same test as step 2's, reused when
    it has run.
    """

    dataset: str | None = None          # None / "synthetic": the synthetic BurstGPT-like trace; or a dataset name
    num_requests: int = 20_000
    curve_requests: int | None = None    # requests of the load-latency curves; None: num_requests
    schedulers: tuple[str, ...] = field(default_factory=all_schedulers)
    latency: str = DEFAULT_PROFILE       # a step-time profile every scheduler is timed by
    # step 2's GPU counts (1..100): the ranking is at the pool sizes the trace needs, which step 2's search
    # brackets; run by the suite at step 2's parameters these are step 2's tests, reused
    gpu_counts: tuple[int, ...] = field(default_factory=_default_gpu_counts)
    curve_gpus: int = 4                  # GPUs of the load-latency curves
    load_points: int = 8                 # offered rates per curve, light to past saturation
    ttft_sla_s: float = _CONFIG_DEFAULTS["ttft_sla_s"]
    tpot_sla_s: float = _CONFIG_DEFAULTS["tpot_sla_s"]
    d_sla_s: float = _CONFIG_DEFAULTS["d_sla_s"]   # the static SLA controller's budget (service time of a batch)
    attainment: float = DEFAULT_ATTAINMENT         # share of requests that must meet both limits
    k_bins: int = _CONFIG_DEFAULTS["k_bins"]
    replications: int = 1
    seed: int = 42
    results_dir: str | None = None
    rps_scaling: float = field(default_factory=_default_rps_scaling)  # the trace's timestamps / this
    use_real_timestamps: bool = False
    executor: object = None              # as the steps': None = a local process pool
    # True: a scheduler of COMPARE_REFERENCE compared beside its reference is searched only at the counts that
    # decide the GPUs it needs (see search_counts); False: every scheduler at every count of gpu_counts
    needed_only: bool = True

    def __post_init__(self):
        from workbench import checks
        from workbench.sim import profiles
        from workbench.sim.schedulers import SCHEDULERS
        from workbench.study.runs.sweep import parse_executor

        # a comma-separated string is accepted too (papermill -p schedulers continuous_fcfs,static_fifo)
        object.__setattr__(self, "schedulers", checks.names(self.schedulers, "schedulers", allowed=sorted(SCHEDULERS)))
        pooled = [name for name in self.schedulers if name not in all_schedulers()]
        if pooled:
            raise ValueError(f"schedulers: {', '.join(pooled)} splits the GPUs into prefill and decode pools, so it "
                             "has no single GPU count to be compared at; rank its placements with wb.best_placement "
                             f"(notebooks/disaggregation.ipynb), or choose among {', '.join(all_schedulers())}")
        profiles.check_profile(self.latency, "latency", hint="a step-time profile name")
        if self.gpu_counts is None:    # papermill -p gpu_counts None, or the notebook's default
            object.__setattr__(self, "gpu_counts", _default_gpu_counts())
        object.__setattr__(self, "gpu_counts", tuple(sorted(set(checks.integers(
            self.gpu_counts, "gpu_counts", low=1, high=100_000, unique=False)))))
        if self.curve_requests is None:
            object.__setattr__(self, "curve_requests", self.num_requests)
        for name, low in (("num_requests", 2), ("curve_requests", 2), ("curve_gpus", 1), ("load_points", 2),
                          ("k_bins", 1), ("replications", 1), ("seed", 0)):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=low))
        for name in ("ttft_sla_s", "tpot_sla_s", "d_sla_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=True, unit="s"))
        object.__setattr__(self, "attainment", checks.number(self.attainment, "attainment", low=0, low_open=True,
                                                             high=1, what="a share in (0, 1]"))
        object.__setattr__(self, "rps_scaling", checks.number(self.rps_scaling, "rps_scaling", low=0, low_open=True))
        for name in ("use_real_timestamps", "needed_only"):
            object.__setattr__(self, name, checks.boolean(getattr(self, name), name))
        if self.use_real_timestamps and self.rps_scaling != _default_rps_scaling():
            raise ValueError(f"rps_scaling={self.rps_scaling:g} has no effect with use_real_timestamps=True (the "
                             "trace's own inter-arrival times are kept, not divided): drop one of them")
        if self.dataset is not None:
            checks.instance(self.dataset, "dataset", (str, os.PathLike),
                            expected="None, 'synthetic', a dataset name or a CSV path")
        if self.dataset == "synthetic":
            object.__setattr__(self, "dataset", None)
        if self.results_dir is not None:
            checks.path(self.results_dir, "results_dir", expected="a folder path, or None for the default folder")
        parse_executor(self.executor, queued=2)
        self.trace_options(self.seed)          # validates rps_scaling against the trace
        self.config("continuous_fcfs", 1)   # validates the SLA fields

    @classmethod
    def from_namespace(cls, namespace: dict) -> "CompareParams":
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def identity(self) -> dict:
        # needed_only chooses which tests run, never what a test computes (rows are keyed by the test's full
        # configuration): a folder may hold both, and one made before the option existed is reused
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("results_dir", "executor", "needed_only")}

    def results_path(self) -> Path:
        from workbench.study.store import folders
        from workbench.study.store.files import resolve_results_dir

        if self.results_dir is not None:
            return resolve_results_dir(self.results_dir)
        defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                    for f in fields(self)}
        return resolve_results_dir(f"results/{NOTEBOOK}/{folders.folder_name(self.identity(), defaults)}")

    def claim_results_dir(self) -> Path:
        from workbench.study.store import folders

        folder = self.results_path()
        folders.claim(folder, self.identity(), outputs=OUTPUTS)
        return folder

    def step_model(self):
        from workbench.sim import profiles

        return profiles.get_profile(self.latency)

    def config(self, scheduler: str, num_gpus: int, seed: int | None = None):
        """The SimConfig of a test: field for field what the step notebooks build (StepParams.base_config)."""
        from workbench.sim.config import SimConfig

        base = SimConfig(d_sla_s=self.d_sla_s, k_bins=self.k_bins, seed=self.seed if seed is None else seed,
                         ttft_sla_s=self.ttft_sla_s, tpot_sla_s=self.tpot_sla_s)
        return base.replace(**deployment_fields(self.latency), scheduler=scheduler, num_gpus=num_gpus)

    def trace_options(self, seed: int, scaling: float = 1.0, num_requests: int | None = None):
        from workbench.study.runs.sweep import TraceOptions

        return TraceOptions(dataset=self.dataset, num_requests=num_requests or self.num_requests,
                            rps_scaling=self.rps_scaling * scaling, use_real_timestamps=self.use_real_timestamps,
                            seed=seed)

    def trace(self, seed: int):
        return self.trace_options(seed).load()

    def seeds(self) -> list[int]:
        from workbench.study.store.replications import replication_seeds

        return replication_seeds(self.seed, self.replications)


def deployment_fields(profile: str) -> dict:
    """The SimConfig memory fields of the hardware a step-time profile was measured on."""
    from workbench.sim import profiles

    return profiles.profile_config_fields(profile)


def searched_around_need(params: CompareParams) -> dict[str, str]:
    """The schedulers searched only around the GPUs they need, each with its reference (:data:`COMPARE_REFERENCE`,
    when both are compared and ``needed_only``)."""
    if not params.needed_only:
        return {}
    return {s: ref for s, ref in COMPARE_REFERENCE.items() if s in params.schedulers and ref in params.schedulers}


def _coverage(rows: pd.DataFrame, scheduler: str) -> dict[int, bool]:
    """GPU count -> whether ``scheduler``'s capacity there (mean over the seeds) covers the replayed rate."""
    if rows is None or rows.empty or "capacity_rps" not in rows:
        return {}
    mine = rows[rows["scheduler"] == scheduler]
    if mine.empty:
        return {}
    mine = mine.assign(capacity_rps=pd.to_numeric(mine["capacity_rps"], errors="coerce").fillna(0.0),
                       offered_rps=pd.to_numeric(mine["offered_rps"], errors="coerce"))
    means = mine.groupby("num_gpus")[["capacity_rps", "offered_rps"]].mean()
    return {int(g): bool(row.capacity_rps >= row.offered_rps) for g, row in means.iterrows()}


def search_counts(params: CompareParams, rows: pd.DataFrame | None = None) -> dict[str, tuple[int, ...]]:
    """Per scheduler, the GPU counts of ``gpu_counts`` whose capacity the comparison needs, given the capacity rows
    found so far (``rows``; rows of other tests are ignored by count, so pass capacity rows only).

    Every scheduler is searched at every count, except one compared around its need
    (:func:`searched_around_need`): it waits for its reference's rows, starts at the count the reference needs
    (the fewest GPUs whose capacity covers the replayed rate; the largest count when none does), the count below it
    and ``curve_gpus`` (the load curves' range is read there), then adds the count below its fewest covering count
    until that one is known to fall short, or the count above its largest until one covers (or the counts end).
    So its answer, the fewest GPUs of ``gpu_counts`` that cover the load, is the one a search at every count gives
    where capacity grows with GPUs; call again with the new rows until the counts stop changing."""
    counts = params.gpu_counts
    out = {s: counts for s in params.schedulers}
    for scheduler, reference in searched_around_need(params).items():
        ref = _coverage(rows, reference)
        if any(g not in ref for g in counts):
            out[scheduler] = ()          # the reference's rows first
            continue
        need = min((g for g in counts if ref[g]), default=counts[-1])
        i = counts.index(need)
        want = {counts[i], counts[max(i - 1, 0)]} | ({params.curve_gpus} & set(counts))
        cov = _coverage(rows, scheduler)
        while all(g in cov for g in want):
            covering = sorted(g for g in want if cov[g])
            j = counts.index(covering[0]) if covering else counts.index(max(want))
            if covering and (j == 0 or counts[j - 1] in want):
                break                    # the fewest covering count and the one below, which falls short
            if not covering and j == len(counts) - 1:
                break                    # none covers, up to the largest count
            want.add(counts[j - 1] if covering else counts[j + 1])
        out[scheduler] = tuple(sorted(want))
    return out


def capacity_tests(params: CompareParams, counts: dict[str, tuple[int, ...]] | None = None) -> list:
    """Every scheduler's capacity search on the GPU counts ``counts`` gives it (default: every count of
    ``gpu_counts``; see :func:`search_counts`), per seed: the tests step 2 runs at the same parameters (same ids),
    so they are reused when it has run.

    Each scheduler's searches chain over step 2's GPU counts (each starts from the previous count's answer, see
    :func:`workbench.study.runs.experiments.hinted_capacity_tests`), so a test at a count of ``gpu_counts`` has
    step 2's id whatever other counts are compared; the tests it starts from are run too (they are step 2's,
    already done when it ran), listed after the compared ones."""
    from workbench.study.runs.experiments import GPU_COUNTS, _label, hinted_capacity_tests
    from workbench.study.runs.sweep import CapacitySpec, make_test, with_capacity_hint

    spec, step = CapacitySpec(attainment=params.attainment), params.step_model()
    grid = sorted({g for g in GPU_COUNTS if g <= max(params.gpu_counts)} | set(params.gpu_counts))
    out, extra, base = [], [], {}
    for r, seed in enumerate(params.seeds()):
        options = params.trace_options(seed)
        trace = options.load()
        tests = hinted_capacity_tests({(s, g): make_test(NOTEBOOK, options, params.config(s, g, seed), trace=trace,
                                                         latency=step, label=_label(s, g), capacity=spec)
                                       for s in params.schedulers for g in grid})
        by_id = {t.test_id: key for key, t in tests.items()}
        wanted = [(s, g) for s in params.schedulers
                  for g in (params.gpu_counts if counts is None else counts.get(s, ()))]
        needed, queue = set(wanted), list(wanted)
        while queue:   # the tests the compared ones start from, and theirs
            for source in tests[queue.pop()].hint_from:
                if by_id[source] not in needed:
                    needed.add(by_id[source])
                    queue.append(by_id[source])
        keys = wanted + [k for k in tests if k in needed and k not in set(wanted)]
        for key in keys:
            test = tests[key]
            if r == 0:
                base[key] = test = dataclasses.replace(test, base_test_id=test.test_id)
            else:   # as the steps' replications: start from replication 0's answer
                test = with_capacity_hint(dataclasses.replace(test, replication=r, base_test_id=base[key].test_id),
                                          base[key])
            (out if key in set(wanted) else extra).append(test)
    return out + extra


def curve_rates(params: CompareParams, cap_rows: pd.DataFrame, base_rate: float) -> np.ndarray:
    """The offered rates of the load-latency curves: geometric from 1/16 of the lowest capacity found on
    ``curve_gpus`` GPUs (any GPU count if none there) to twice the highest; around the trace's own rate when
    no capacity was found."""
    if "num_gpus" in cap_rows:
        cap_rows = compared_rows(params, cap_rows)   # the compared counts, as the ranking
    caps = pd.to_numeric(cap_rows["capacity_rps"], errors="coerce") if "capacity_rps" in cap_rows else pd.Series()
    found = cap_rows[np.isfinite(caps)] if len(caps) else cap_rows
    at_curve = found[found["num_gpus"] == params.curve_gpus] if not found.empty else found
    at_curve = at_curve if not at_curve.empty else found
    if at_curve.empty:
        low, high = base_rate / 16, base_rate * 2
    else:
        values = pd.to_numeric(at_curve["capacity_rps"])
        low, high = values.min() / 16, values.max() * 2
    return np.geomspace(low, high, params.load_points)


def load_tests(params: CompareParams, rates) -> list:
    """Replays of the first ``curve_requests`` requests by every scheduler on ``curve_gpus`` GPUs at each offered
    rate of ``rates`` (requests/s of the first seed's trace), per seed."""
    from workbench.study.runs.sweep import make_test

    step = params.step_model()
    base_rate = params.trace_options(params.seeds()[0], num_requests=params.curve_requests).load().mean_rate_rps
    out = []
    for r, seed in enumerate(params.seeds()):
        for rate in rates:
            scaling = round(float(rate / base_rate), 12)
            options = params.trace_options(seed, scaling, params.curve_requests)
            trace = options.load()
            for scheduler in params.schedulers:
                test = make_test(NOTEBOOK, options, params.config(scheduler, params.curve_gpus, seed), trace=trace,
                                 latency=step, label=f"{scheduler} at x{scaling:.3g} load")
                out.append(dataclasses.replace(test, replication=r))
    return out


def _run(tests: list, params: CompareParams, folder: Path, progress: bool, desc: str):
    """Run ``tests`` into the comparison's checkpoint; a test that fails is reported, not fatal."""
    from workbench.study.runs.sweep import SweepError, run_sweep
    from workbench.study.store.checkpoints import read_rows, select_rows

    errors: dict[str, str] = {}
    try:
        rows = run_sweep(tests, folder, checkpoint=CHECKPOINT, executor=params.executor, progress=progress,
                         desc=desc)
    except SweepError as exc:
        for test, failure in exc.failures:
            errors.setdefault(test.config.scheduler, f"{type(failure).__name__}: {failure}")
        rows = select_rows(read_rows(folder / CHECKPOINT), [t.test_id for t in tests])
    return rows, errors


@dataclass
class Comparison:
    """Everything the compare notebook shows."""

    params: CompareParams
    results_dir: Path
    capacities: pd.DataFrame          # per scheduler and GPU count (mean over seeds, 95% interval)
    curves: pd.DataFrame              # per scheduler and load point (mean over seeds, 95% interval)
    ranking: pd.DataFrame
    breaks: pd.DataFrame
    sentences: dict[str, str]
    base_rate_rps: float
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def sla_text(self) -> str:
        p = self.params
        return f"TTFT <= {p.ttft_sla_s:g} s and TPOT <= {p.tpot_sla_s * 1e3:g} ms"


def _aggregate(rows: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    from workbench.study.store.replications import summarize_replications

    keep = [c for c in (*by, *metrics, "capacity_error", "replication", "trace_label", "synthetic") if c in rows]
    return summarize_replications(rows[keep].drop(columns=["replication"], errors="ignore"), by=by, metrics=metrics)


def compared_rows(params: CompareParams, rows: pd.DataFrame) -> pd.DataFrame:
    """The capacity rows at the counts :func:`search_counts` compares for each scheduler (not the other counts of
    the search chains, nor rows of other tests)."""
    if rows.empty or "num_gpus" not in rows:
        return rows
    counts = search_counts(params, rows)
    keep = [int(g) in counts.get(s, ()) for s, g in zip(rows["scheduler"], rows["num_gpus"])]
    return rows[np.asarray(keep, dtype=bool)]


def capacity_rounds(params: CompareParams, run, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Run the comparison's capacity searches: :func:`search_counts` and :func:`capacity_tests` again with the
    rows found, until no new test is asked for.  ``run(tests)`` runs tests and returns their rows; ``rows``: rows
    already found (the suite's first sweep).  Returns every capacity row found."""
    rows = rows if rows is not None else pd.DataFrame()
    asked: set[str] = set()
    while True:
        tests = capacity_tests(params, search_counts(params, rows))
        new = [t for t in tests if t.test_id not in asked]
        if not new:
            return rows
        asked.update(t.test_id for t in tests)
        found = run(tests)
        rows = pd.concat([r for r in (rows, found) if not r.empty]) if not (rows.empty and found.empty) else rows
        if "test_id" in rows:
            rows = rows.drop_duplicates("test_id", keep="last")


def run_comparison(params: CompareParams | None = None, *, progress: bool = True) -> Comparison:
    """Capacity of every scheduler at every GPU count, then load-latency curves on ``curve_gpus`` GPUs.

    The ranking (:func:`workbench.study.answers.compare.capacity_ranking`) is by the GPUs each scheduler needs
    for the trace's own rate, then its capacity per GPU there: step 2's answer, on step 2's tests.

    The curves' offered rates are spaced geometrically from 1/16 of the
    lowest capacity found on ``curve_gpus`` GPUs to twice the highest, so
    every curve runs from light load to past its scheduler's saturation.
    Every (test, seed) is checkpointed in ``compare_schedulers.csv``; a test
    that another results folder already holds (step 2's capacities at the
    same parameters) is reused, not recomputed.
    """
    params = params or CompareParams()
    folder = params.claim_results_dir()
    seeds = params.seeds()
    base_rate = params.trace(seeds[0]).mean_rate_rps

    errors: dict[str, str] = {}

    def run(tests):
        found, failed = _run(tests, params, folder, progress, f"{NOTEBOOK} capacity")
        errors.update(failed)
        return found

    cap_rows = compared_rows(params, capacity_rounds(params, run))   # not the chains' other counts
    cap_rows = cap_rows.assign(capacity_rps=pd.to_numeric(cap_rows["capacity_rps"], errors="coerce"))
    capacities = _aggregate(cap_rows, ["scheduler", "num_gpus"], ["capacity_rps", "offered_rps"])

    rates = curve_rates(params, cap_rows, base_rate)
    load_rows, load_errors = _run(load_tests(params, rates), params, folder, progress, f"{NOTEBOOK} load curves")
    for name, reason in load_errors.items():
        errors.setdefault(name, reason)
    metrics = ["offered_rps", "attainment", "throughput_rps", "goodput_rps", "latency_p50_s", "latency_p99_s",
               "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "gpu_utilization_mean"]
    if not load_rows.empty:
        load_rows = load_rows.copy().assign(attainment=load_rows["slo_attainment"],
                                     scaling=load_rows["rps_scaling"] / params.rps_scaling)
        load_rows = load_rows[~load_rows["scheduler"].isin(errors)]
    curves = (_aggregate(load_rows, ["scheduler", "scaling"], [m for m in metrics if m in load_rows])
              .sort_values(["scheduler", "offered_rps"])
              if not load_rows.empty else pd.DataFrame(columns=["scheduler", "scaling", *metrics]))

    ranking = capacity_ranking(capacities)
    breaks = break_points(curves, params.attainment)
    sla_text = f"TTFT <= {params.ttft_sla_s:g} s and TPOT <= {params.tpot_sla_s * 1e3:g} ms"
    sentences = break_sentences(breaks, ranking, sla_text=sla_text, curve_gpus=params.curve_gpus,
                                curve_requests=params.curve_requests, num_requests=params.num_requests,
                                capacities=capacities)
    for name, reason in errors.items():
        sentences[name] = f"{name} could not be simulated with the {params.latency} profile: {reason}."
    from workbench.study.store.files import write_csv_atomic

    write_csv_atomic(folder / f"{NOTEBOOK}_capacity.csv", capacities)
    write_csv_atomic(folder / f"{NOTEBOOK}_curves.csv", curves)
    write_csv_atomic(folder / f"{NOTEBOOK}_ranking.csv", ranking)
    return Comparison(params, folder, capacities, curves.reset_index(drop=True), ranking, breaks, sentences,
                      base_rate, errors)


__all__ = ["CHECKPOINT", "COMPARE_REFERENCE", "NOTEBOOK", "OUTPUTS", "CompareParams", "Comparison", "all_schedulers",
           "capacity_rounds", "capacity_tests", "compared_rows", "curve_rates", "load_tests", "run_comparison",
           "search_counts", "searched_around_need"]
