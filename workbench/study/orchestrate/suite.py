"""``python -m workbench suite``: the notebooks of the study, in order, through papermill.

Which notebooks run, when and with which parameters is one table,
:data:`SUITE_NOTEBOOKS`: the three steps, the scheduler comparison, and the
fidelity reports and the other studies behind ``--validate`` (prefix caching and
disaggregation, about 20-25 s each on 2 cores: kept out of the default first run, which
stays within three minutes, install included; the README says how long it takes).  A new notebook joins the suite with
one line there (its name, title, when it runs and how its parameters come
from the suite's options); ``index.html`` and the summary take its title from
there.

Each notebook is executed from the repository root with the suite's options
as papermill parameters; the executed notebook goes to
``<results_dir>/<name>.ipynb`` and an HTML rendering (nbconvert, images
embedded) to ``<results_dir>/<name>.html``.  The CSVs, PNGs,
``all_results.csv`` and ``analysis.json`` are written by the notebooks
themselves (through :mod:`workbench.study.runs.experiments`), so a rerun resumes from
their checkpoints.  :func:`run_notebook` is also what ``python -m workbench
notebook <name> -p ...`` runs for one notebook alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from workbench import checks, paths
from workbench.study.answers import analysis, report
from workbench.study.present.console import SUITE_ENV
from workbench.study.present.text import NOTEBOOK_TITLES
from workbench.study.runs.experiments import (GPU_COUNTS, SEED_GRID, STEP1, STEP2, STEP3, STEPS, StepParams,
                                              check_best_gpu_count)
from workbench.study.store.files import atomic_write_text, display_path

log = logging.getLogger(__name__)

VALIDATION = "validation"
COMPARE = "compare_schedulers"  # every scheduler on one profile and one TTFT/TPOT SLA; after the steps
# The comparison's load-latency curves replay this many requests (its capacities, step 2's tests, all of them):
# eight loads per scheduler, every registered scheduler; the size the suite's comparison always had.
COMPARE_CURVE_REQUESTS = 20_000
FIDELITY = "fidelity_vllm"  # the engine against measured vLLM runs; rendered with --validate too
FIDELITY_DISAGG = "fidelity_disagg"  # the disaggregated engine against measured DistServe runs; with --validate
# How to split GPUs between prefill and decode as the SLO tightens (wb.best_placement on two traces, five SLO
# scales, colocated on two profiles): about 20 s on 2 cores, kept out of the default first run; with
# --validate, or on demand: python -m workbench notebook disaggregation
DISAGGREGATION = "disaggregation"
PREFIX_CACHING = "prefix_caching"  # prefix caching and cache-aware routing on Mooncake; with --validate too
HARDWARE = "hardware"  # any model on any GPU: what fits, capacity per GPU and per dollar; with --validate too
FLEET = "fleet_planning"  # the cheapest fleet for a load (GPU type, count, TP, topology); with --validate too
AUTOSCALING = "autoscaling"  # a day of changing load: peak fleet, plan per hour, reactive autoscaling; --validate
KERNEL_NAME = "python3"


class SuiteError(RuntimeError):
    """A notebook of the suite failed; the message names the executed notebook to look at."""


@dataclass(frozen=True)
class SuiteOptions(StepParams):
    """The suite's options (the seed project's CLI): the notebooks' parameters, validated the same way
    (:class:`~workbench.study.runs.experiments.StepParams`), plus which steps run, step 3's GPU count and validation."""

    steps: tuple[str, ...] = STEPS
    best_gpu_count: int | None = None
    validate: bool = False
    compare: bool = True

    def __post_init__(self):
        super().__post_init__()
        steps = checks.names(self.steps, "steps", allowed=STEPS)
        # the order of the steps is fixed: step 3 may read step 2's results
        object.__setattr__(self, "steps", tuple(s for s in STEPS if s in steps))
        for name in ("validate", "compare"):
            object.__setattr__(self, name, checks.boolean(getattr(self, name), name))
        if self.best_gpu_count is not None:
            if STEP3 not in self.steps:
                raise ValueError(f"best_gpu_count (--best-gpu-count) is step 3's GPU count, and step 3 is not "
                                 f"selected (steps: {', '.join(self.steps)}); drop it or select step 3")
            object.__setattr__(self, "best_gpu_count", check_best_gpu_count(self.best_gpu_count, self.max_gpus))


def step_parameters(options: SuiteOptions, step: str) -> dict:
    """The papermill parameters of a step notebook: every StepParams field (step 3: its GPU count too)."""
    params = {f.name: getattr(options, f.name) for f in fields(StepParams)}
    params["schedulers"] = list(options.schedulers)  # papermill writes lists, not tuples
    params["results_dir"] = str(options.results_path)
    if step == STEP3:
        params["best_gpu_count"] = options.best_gpu_count
    return params


def compare_parameters(options: SuiteOptions, step: str = COMPARE) -> dict:
    """The comparison on the steps' trace, hardware model, SLA, capacity target and GPU counts, so its capacities
    are step 2's tests (reused), its ranking is at the pool sizes step 2 finds the trace needs, and it agrees with
    step 2's answers, with every registered scheduler."""
    gpus = [g for g in GPU_COUNTS if g <= options.max_gpus]
    return {"dataset": options.dataset, "num_requests": options.max_requests,
            "curve_requests": min(options.max_requests, COMPARE_CURVE_REQUESTS), "latency": options.latency,
            "gpu_counts": ",".join(map(str, gpus)), "curve_gpus": min(4, options.max_gpus),
            "d_sla_s": options.d_sla, "ttft_sla_s": options.ttft_sla, "tpot_sla_s": options.tpot_sla,
            "attainment": options.capacity_attainment, "k_bins": options.k_bins,
            "replications": options.replications, "seed": options.seed, "rps_scaling": options.rps_scaling,
            "use_real_timestamps": options.use_real_timestamps, "executor": options.executor,
            "results_dir": str(options.results_path / COMPARE)}


def validation_parameters(options: SuiteOptions, step: str = VALIDATION) -> dict:
    return {"results_dir": str(options.results_path), "seed": options.seed}


def results_only(options: SuiteOptions, step: str = "") -> dict:
    """Parameters of a notebook that only needs to know where results go."""
    return {"results_dir": str(options.results_path)}


@dataclass(frozen=True)
class SuiteNotebook:
    """One notebook of the suite: ``notebooks/<name>.ipynb``, its title, when it runs (``"step"``: a step,
    selected by ``--stepN-only``; ``"compare"``: after all three steps unless ``--no-compare``;
    ``"validate"``: with ``--validate``) and its papermill parameters from the suite's options."""

    name: str
    title: str
    when: str
    parameters: Callable[[SuiteOptions, str], dict]

    def selected(self, options: SuiteOptions) -> bool:
        if self.when == "step":
            return self.name in options.steps
        if self.when == "compare":
            return options.compare and not options.seed_grid
        return self.when == "validate" and options.validate


# The suite's notebooks, in the order they run.  A new notebook is one line here (and its title in
# workbench.study.present.text.NOTEBOOK_TITLES, where index.html finds it too).
SUITE_NOTEBOOKS: tuple[SuiteNotebook, ...] = (
    SuiteNotebook(STEP1, NOTEBOOK_TITLES[STEP1], "step", step_parameters),
    SuiteNotebook(STEP2, NOTEBOOK_TITLES[STEP2], "step", step_parameters),
    SuiteNotebook(STEP3, NOTEBOOK_TITLES[STEP3], "step", step_parameters),
    SuiteNotebook(COMPARE, NOTEBOOK_TITLES[COMPARE], "compare", compare_parameters),
    SuiteNotebook(VALIDATION, NOTEBOOK_TITLES[VALIDATION], "validate", validation_parameters),
    SuiteNotebook(FIDELITY, NOTEBOOK_TITLES[FIDELITY], "validate", results_only),
    SuiteNotebook(FIDELITY_DISAGG, NOTEBOOK_TITLES[FIDELITY_DISAGG], "validate", results_only),
    SuiteNotebook(PREFIX_CACHING, NOTEBOOK_TITLES[PREFIX_CACHING], "validate", results_only),
    SuiteNotebook(DISAGGREGATION, NOTEBOOK_TITLES[DISAGGREGATION], "validate", results_only),
    SuiteNotebook(HARDWARE, NOTEBOOK_TITLES[HARDWARE], "validate", results_only),
    SuiteNotebook(FLEET, NOTEBOOK_TITLES[FLEET], "validate", results_only),
    SuiteNotebook(AUTOSCALING, NOTEBOOK_TITLES[AUTOSCALING], "validate", results_only),
)


def suite_notebook(name: str) -> SuiteNotebook:
    for notebook in SUITE_NOTEBOOKS:
        if notebook.name == name:
            return notebook
    raise ValueError(f"notebook: unknown {name!r}; the suite's notebooks: "
                     f"{', '.join(n.name for n in SUITE_NOTEBOOKS)}")


def notebook_parameters(options: SuiteOptions, name: str) -> dict:
    """The papermill parameters the suite passes to notebook ``name``."""
    return suite_notebook(name).parameters(options, name)


@dataclass
class StepRun:
    name: str
    notebook: Path
    html: Path
    wall_s: float
    files: list[Path] = field(default_factory=list)   # what the notebook wrote: its CSVs, then its figures
    rendering: object = None   # the HTML rendering still under way (a future), if any


@dataclass
class SuiteReport:
    results_dir: Path
    runs: list[StepRun]
    wall_s: float

    def summary(self) -> str:
        """Where everything is, and how long each step took."""
        lines = [f"Suite finished in {self.wall_s:.1f} s; results in {self.results_dir}",
                 f"  {'index.html (open this)':<26} {'':9}   {self.results_dir / report.INDEX}"]
        for run in self.runs:
            lines.append(f"  {run.name:<26} {run.wall_s:7.1f} s   {run.html}")
            for extra in run.files:
                lines.append(f"  {'':<26} {'':9}   {extra}")
        for name in (analysis.ALL_RESULTS, analysis.ANALYSIS):
            if (self.results_dir / name).is_file():
                lines.append(f"  {name:<26} {'':9}   {self.results_dir / name}")
        lines.extend(answer_lines(analysis.read_analysis(self.results_dir) or {}))
        return "\n".join(lines)


def answer_lines(found: dict) -> list[str]:
    """The run's answers in sentences (only those its steps produced; never "None"), each naming its target, an
    answer that cannot be trusted marked "Warning:" on its own line, then the warnings no answer carries: each said
    once."""
    lines = []
    validity = found.get("validity") or {}
    s2 = found.get("step2_gpu_scaling") or {}
    s3 = found.get("step3_kbins_sensitivity") or {}
    largest = max(s2.get("gpu_counts") or [0])

    def shown(key, check):   # never "None": a GPU count no pool tested reaches is "more than" the largest
        if check.get("value") is None and key == "gpus_needed" and largest:
            return f"more than {largest}"
        return check.get("value")

    answers = [(key, check) for key, check in validity.items() if shown(key, check) is not None]
    if answers:
        lines.append("Answers:")
        target = found.get("sla_target")
        if target is not None and found.get("sla"):
            lines.append(f"  Target of every answer: at least {target:.0%} of requests within {found['sla']}.")
        for key, check in answers:
            caveat = "Warning: " if check.get("valid") is False else ""
            lines.append(f"  {ANSWER_NAMES.get(key, key)}: {shown(key, check)}. {caveat}{check.get('sentence', '')}")
    needed = s2.get("gpus_needed_by_scheduler") or {}
    if needed:
        headroom = s2.get("headroom_by_scheduler") or {}
        lines.append("  GPUs needed per scheduler (fewest whose capacity covers the replayed load, headroom): "
                     + ", ".join(f"{n} " + (f"{g} ({headroom[n]:+.0%})" if g is not None and headroom.get(n) is not None
                                            else str(g) if g is not None else f"more than {largest}")
                                 for n, g in needed.items()) + ".")
    by_k = s3.get("best_k_by_scheduler") or {}
    if by_k:
        gpus = (s3.get("gpu_count") or {}).get("num_gpus")
        lines.append("  Best K by capacity" + (f" on {gpus} GPUs" if gpus is not None else "") + ": "
                     + ", ".join(f"{n} {k}" for n, k in by_k.items()) + ".")
    said = {check.get("sentence") for _, check in answers}
    for warning in found.get("warnings", []):   # each said once: those an answer carries are not repeated
        if warning not in said:
            lines.append(f"Warning: {warning}")
    return lines


ANSWER_NAMES = {"best_config_step1": "Step 1, best configuration (1-4 GPUs)",
                "gpus_needed": "Step 2, GPUs the trace needs",
                "best_gpu_count_by_capacity_per_gpu": "Step 2, most capacity per GPU at",
                "best_k": "Step 3, best K (most capacity)"}


# Wide tables scroll inside their cell instead of running off the page; numbers stay on one line, a long text
# (a note, a reason) wraps in a cell of its own width (marked by render_html), never cut off.
WIDE_TABLE_CSS = """<style>
.jp-RenderedHTMLCommon table, .rendered_html table { display: block; max-width: 100%; overflow-x: auto;
  font-size: 12px; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: nowrap; }
.jp-RenderedHTMLCommon td.text { white-space: normal; min-width: 24em; max-width: 48em; text-align: left; }
</style>
"""
LONG_CELL_CHARS = 40   # a table cell with more text than this wraps (class "text")
_CELL = re.compile(r"<td>([^<]*)</td>")


def _wrap_long_cells(body: str) -> str:
    """``<td class="text">`` for every table cell holding a long text, so it wraps instead of stretching the table."""
    return _CELL.sub(lambda m: f'<td class="text">{m.group(1)}</td>' if len(m.group(1).strip()) > LONG_CELL_CHARS
                     else m.group(0), body)
# The kernel warns that it runs over TCP without encryption: it listens on localhost only, for the suite's
# own client, and the warning would be the first thing every `make run` prints.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def path_replacements(results_dir: Path, extra: tuple[Path, ...] = ()) -> list[tuple[str, str]]:
    """(absolute path, shareable form) pairs, longest first: results folder, repository, dataset folders, home."""
    pairs = {str(results_dir.resolve()): display_path(results_dir), str(paths.REPO_ROOT.resolve()): "."}
    for folder in extra:
        pairs.setdefault(str(folder.resolve()), display_path(folder))
    home = str(Path.home().resolve())
    if home not in ("/", ""):
        pairs.setdefault(home, "~")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _scrub(text: str, replacements) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def scrub_notebook(nb, replacements) -> None:
    """Replace the machine's absolute paths in every cell source and text output of ``nb`` (in place)."""
    for cell in nb.cells:
        cell.source = _scrub(cell.source, replacements)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _scrub(out["text"], replacements)
            for key in ("evalue",):
                if key in out:
                    out[key] = _scrub(out[key], replacements)
            if "traceback" in out:
                out["traceback"] = [_scrub(line, replacements) for line in out["traceback"]]
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = _scrub(value, replacements)
    nb.metadata.get("papermill", {}).pop("input_path", None)
    nb.metadata.get("papermill", {}).pop("output_path", None)
    params = nb.metadata.get("papermill", {}).get("parameters", {})
    for name, value in params.items():
        if isinstance(value, str):
            params[name] = _scrub(value, replacements)


def notebook_title(nb, name: str = "") -> str:
    """The title of a notebook: its first level-1 markdown heading, as text (no markdown marks), else the
    suite's title for ``name``, else ``name``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            heading = re.match(r"^#\s+(.+?)\s*#*\s*$", line)
            if heading:
                text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))   # [text](link) -> text
                return re.sub(r"[*_`]", "", text).strip()
    return NOTEBOOK_TITLES.get(name, name)


def render_html(notebook_path: Path, html_path: Path, replacements=()) -> Path:
    """An HTML rendering of an executed notebook (images embedded, wide tables scrolling, the machine's absolute
    paths replaced by ``replacements``, the page titled by :func:`notebook_title`), written atomically.  The
    executed ``.ipynb`` keeps its paths, so it still runs where it was made."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    scrub_notebook(nb, replacements)
    nb.metadata["title"] = notebook_title(nb, Path(notebook_path).stem)   # the page's <title> (else "Notebook")
    traitlets_log = logging.getLogger("traitlets")
    level = traitlets_log.level
    traitlets_log.setLevel(logging.ERROR)  # "Alternative text is missing on N image(s)": plots have titles
    try:
        body, _ = HTMLExporter().from_notebook_node(nb)
    finally:
        traitlets_log.setLevel(level)
    body = _wrap_long_cells(body.replace("</head>", WIDE_TABLE_CSS + "</head>", 1))
    atomic_write_text(html_path, _scrub(body, replacements))
    return html_path


class SharedKernel:
    """One kernel for every notebook of a suite run, its namespace cleared between notebooks.

    A kernel of its own per notebook costs seconds each time: starting it, importing the workbench, loading
    the compiled engines, spawning the sweep's pool workers (and their trace caches).  Shared, the modules,
    compiled code and pool workers serve every notebook, while each notebook still starts from an empty
    namespace (IPython's ``reset``), as if alone.  The suite's environment marks the kernel as the suite's
    (:data:`SUITE_ENV`), so notebooks leave the terminal to the suite.  A kill of the suite ends the kernel
    (ipykernel's parent poller) and so its pool workers.
    """

    def __init__(self):
        from jupyter_client.manager import KernelManager

        # the notebook clients papermill leaves to the kernel's owner warn when collected; nothing to act on
        logging.getLogger("traitlets").setLevel(logging.ERROR)
        before = os.environ.get(SUITE_ENV)
        os.environ[SUITE_ENV] = "1"      # the kernel inherits it
        try:
            self.km = KernelManager(kernel_name=KERNEL_NAME)
            self.km.start_kernel(extra_arguments=KERNEL_ARGUMENTS, cwd=str(paths.REPO_ROOT))
        finally:
            if before is None:
                os.environ.pop(SUITE_ENV, None)
            else:
                os.environ[SUITE_ENV] = before
        self.used = False

    def fresh(self):
        """The kernel manager, its namespace emptied if a notebook ran in it before."""
        if self.used:
            client = self.km.client()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=60)
                # a new session: an empty namespace and the cell count from 1, as a kernel of its own would have
                client.execute_interactive("get_ipython().reset(new_session=True)", store_history=False,
                                           timeout=60, output_hook=lambda msg: None)
            finally:
                client.stop_channels()
        self.used = True
        return self.km

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=False)

    def __enter__(self) -> "SharedKernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_notebook(name: str, parameters: dict, results_dir: Path, *, progress: bool = True,
                 kernel: SharedKernel | None = None, render=None) -> StepRun:
    """Execute ``notebooks/<name>.ipynb`` into ``results_dir`` and render it to HTML.

    ``progress`` shows papermill's cell bar only on an interactive terminal; in a log (``make run > log``)
    the suite's one line per notebook and the notebooks' one line per test say the same without redraws.
    ``kernel``: a :class:`SharedKernel` to run in (default: a kernel of its own).  ``render``: a
    ``concurrent.futures`` executor to render the HTML on while the caller goes on (default: now).
    """
    import papermill as pm

    source = paths.NOTEBOOKS_DIR / f"{name}.ipynb"
    executed = results_dir / f"{name}.ipynb"
    html = results_dir / f"{name}.html"
    dataset = parameters.get("dataset")
    replacements = path_replacements(results_dir, (Path(dataset).parent,) if dataset else ())
    log.info("running %s", source.relative_to(paths.REPO_ROOT))
    t0 = time.perf_counter()
    own = kernel is None
    kernel = kernel or SharedKernel()
    try:
        pm.execute_notebook(str(source), str(executed), parameters=parameters, kernel_name=KERNEL_NAME,
                            cwd=str(paths.REPO_ROOT), progress_bar=progress and sys.stderr.isatty(),
                            km=kernel.fresh())
    except pm.PapermillExecutionError as exc:
        render_html(executed, html, replacements)
        raise SuiteError(f"{name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                         f"see {html} (or {executed})") from None
    finally:
        if own:
            kernel.close()
    wall = time.perf_counter() - t0
    if render is not None:
        pending = render.submit(render_html, executed, html, replacements)
    else:
        render_html(executed, html, replacements)
        pending = None
    return StepRun(name, executed, html, wall, notebook_outputs(results_dir, name), pending)


def notebook_outputs(results_dir: Path, name: str) -> list[Path]:
    """The CSVs, then the figures, notebook ``name`` wrote: ``<name>.csv``, ``<name>_*.csv`` (e.g. the step's
    summary), ``<name>*.png``, in ``results_dir`` and in its own subfolder ``results_dir/<name>/`` (the
    comparison's)."""
    found = []
    for pattern in (f"{name}.csv", f"{name}_*.csv", f"{name}.png", f"{name}_*.png"):
        for folder in (results_dir, results_dir / name):
            found.extend(sorted(p for p in folder.glob(pattern) if p.is_file()))
    return list(dict.fromkeys(found))


def precompute(options: SuiteOptions, *, progress: bool = True) -> None:
    """Run the tests of the selected steps and of the comparison before their notebooks, in few sweeps.

    Notebook by notebook, each sweep waits for its slowest chain of capacity searches while a worker idles,
    and the next notebook cannot start; one sweep over steps 1 and 2 and the comparison's capacities at every
    count (step 1's searches are step 2's tests, and step 2's the comparison's: each runs once), then one over
    step 3 (at the GPUs step 2 found the trace needs, which needs step 2's rows) and the comparison's searches
    around the GPUs its added schedulers need (which need their references' rows; another sweep of those while
    they ask for more, :func:`workbench.study.runs.compare.capacity_rounds`), then the comparison's load curves
    (which need its capacities).  The notebooks then find every test checkpointed and draw.  Nothing here
    changes a result: the tests are the notebooks' own (same ids)."""
    from workbench.study.runs import compare
    from workbench.study.runs import experiments
    from workbench.study.runs.sweep import SweepPart

    params = StepParams(**{f.name: getattr(options, f.name) for f in fields(StepParams)})
    selected = {n.name for n in SUITE_NOTEBOOKS if n.selected(options)}
    _compile_engines(params)
    first, second = [], []
    plans = {}
    for step, planner in ((STEP1, experiments.plan_step1), (STEP2, experiments.plan_step2)):
        if step in selected:
            plans[step] = planner(params)
            first.append(SweepPart(plans[step].tests, plans[step].results_dir, f"{step}.csv", step))
    cparams = None
    capacity = f"{COMPARE} capacity"
    if COMPARE in selected:
        cparams = compare.CompareParams(**compare_parameters(options))
        folder = cparams.claim_results_dir()
        first.append(SweepPart(compare.capacity_tests(cparams, compare.search_counts(cparams)), folder,
                               compare.CHECKPOINT, capacity))
    done = dict(zip([p.desc for p in first], _sweeps(first, options, progress, "suite (steps 1-2, comparison "
                                                                                  "capacities)")))
    if STEP3 in selected:
        gpus = options.best_gpu_count
        if gpus is None and STEP2 in done and not done[STEP2].empty:
            gpus = (analysis.gpus_needed_answer(analysis.primary_rows(analysis.summarize(done[STEP2]))) or {}).get(
                "num_gpus")
        plan3 = experiments.plan_step3(params, best_gpu_count=gpus)
        second.append(SweepPart(plan3.tests, plan3.results_dir, f"{STEP3}.csv", STEP3))
    if cparams is None:
        _sweeps(second, options, progress, "suite (step 3)")
        return

    def run(tests):   # the comparison's next capacity searches, beside step 3's tests in the first round
        parts = [*second, SweepPart(tests, folder, compare.CHECKPOINT, capacity)]
        second.clear()
        return _sweeps(parts, options, progress, "suite (step 3, comparison capacities)" if len(parts) > 1
                       else "suite (comparison capacities)")[-1]

    cap_rows = compare.capacity_rounds(cparams, run, done[capacity])
    _sweeps(second, options, progress, "suite (step 3)")   # when the comparison asked for nothing more
    rates = compare.curve_rates(cparams, cap_rows, cparams.trace(cparams.seeds()[0]).mean_rate_rps)
    _sweeps([SweepPart(compare.load_tests(cparams, rates), folder, compare.CHECKPOINT, f"{COMPARE} load curves")],
            options, progress, "suite (comparison curves)")


def _compile_engines(params: StepParams) -> None:
    """Compile the engines here once, before the pool's workers start: on a fresh clone each worker would
    otherwise compile them at the same time (about 15 s of CPU each); then every worker loads numba's cache.
    Costs a second when the cache is there."""
    from workbench.sim.simulate import simulate
    from workbench.traces.trace import Trace

    t0 = time.perf_counter()
    n = 64
    tiny = Trace.from_arrays(np.arange(n, dtype=float), np.full(n, 8), np.full(n, 4), source="compile")
    for scheduler in ("static_fifo",) if params.seed_grid else ("static_fifo", "continuous_fcfs"):
        simulate(tiny, params.base_config(scheduler=scheduler, num_gpus=2), latency=params.latency_model())
    log.info("engines ready in %.1f s", time.perf_counter() - t0)


def _sweeps(parts, options: SuiteOptions, progress: bool, desc: str) -> list:
    """``run_sweeps``; a test that fails is left to its notebook, which runs it again and says why."""
    from workbench.study.runs.sweep import SweepError, run_sweeps
    from workbench.study.store.checkpoints import read_rows, select_rows

    try:
        return run_sweeps(parts, executor=options.executor, progress=progress, desc=desc)
    except SweepError as exc:
        log.warning("%d test(s) failed; their notebooks run them again and say why", len(exc.failures))
        return [select_rows(read_rows(part.path()), [t.test_id for t in part.tests]) for part in parts]


def run_suite(options: SuiteOptions | None = None, *, progress: bool = True) -> SuiteReport:
    """Run the notebooks of :data:`SUITE_NOTEBOOKS` that ``options`` select, in order, then ``index.html``.

    Their tests run first (:func:`precompute`), so the notebooks draw what is checkpointed."""
    options = options or SuiteOptions()
    options.check_results_dir()   # a folder holding another parameter set: refused before any trace is loaded
    options.check_traces()        # what the notebooks' plans would refuse, refused before the folder is recorded
    results_dir = options.claim_results_dir()
    t0 = time.perf_counter()
    from workbench.study.store.checkpoints import CheckpointError

    try:
        precompute(options, progress=progress)
    except CheckpointError as exc:   # it names the file, line and column, and what to do: said as it is
        raise SuiteError(str(exc)) from None
    log.info("every test done in %.1f s; now the notebooks", time.perf_counter() - t0)
    runs = []
    if options.steps == (STEP3,) and options.best_gpu_count is None:
        found = analysis.gpus_needed_from_results(results_dir)
        log.info("step 3 only: %s", f"step 2 found the trace needs {found} GPUs in {display_path(results_dir)}" if found
                 else f"no step 2 results in {display_path(results_dir)}; step 3 uses its default GPU count")
    if options.compare and options.seed_grid:
        log.info("the scheduler comparison is skipped with latency=%s: it times every scheduler on a step-time "
                 "profile and judges TTFT/TPOT, which the seed grid cannot", SEED_GRID)
    with SharedKernel() as kernel, cf.ThreadPoolExecutor(max_workers=1) as render:
        for notebook in SUITE_NOTEBOOKS:
            if not notebook.selected(options):
                continue
            if not (paths.NOTEBOOKS_DIR / f"{notebook.name}.ipynb").is_file():
                log.warning("notebooks/%s.ipynb does not exist; skipped", notebook.name)
                continue
            runs.append(run_notebook(notebook.name, notebook.parameters(options, notebook.name), results_dir,
                                     progress=progress, kernel=kernel, render=render))
            log.info("%s done in %.1f s", notebook.name, runs[-1].wall_s)
    for run in runs:
        if run.rendering is not None:
            run.rendering.result()     # an HTML rendering that failed fails the suite
    index = report.write_index(results_dir, titles=notebook_titles())
    log.info("one page for the whole run: %s", display_path(index))
    return SuiteReport(results_dir, runs, time.perf_counter() - t0)


def notebook_titles() -> dict[str, str]:
    """Notebook name -> title, for index.html's links."""
    return {n.name: n.title for n in SUITE_NOTEBOOKS}


__all__ = ["SuiteOptions", "SuiteReport", "SuiteError", "SuiteNotebook", "SUITE_NOTEBOOKS", "run_suite", "run_notebook",
           "notebook_parameters", "render_html"]
