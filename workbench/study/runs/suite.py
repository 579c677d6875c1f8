"""``python -m workbench suite``: the three step notebooks, in order, through papermill.

Each notebook is executed from the repository root with the suite's options
as papermill parameters; the executed notebook goes to
``<results_dir>/<step>.ipynb`` and an HTML rendering (nbconvert, images
embedded) to ``<results_dir>/<step>.html``.  The CSVs, PNGs,
``all_results.csv`` and ``analysis.json`` are written by the notebooks
themselves (through :mod:`workbench.study.runs.experiments`), so a rerun resumes from
their checkpoints.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from workbench import checks, paths
from workbench.study.answers import analysis, report
from workbench.study.runs.experiments import STEP3, STEPS, StepParams, check_best_gpu_count, display_path
from workbench.study.runs.sweep import atomic_write_text

log = logging.getLogger(__name__)

VALIDATION = "validation"
COMPARE = "compare_schedulers"  # every scheduler on one profile and one TTFT/TPOT SLA; after the steps
COMPARE_MAX_REQUESTS = 20_000
FIDELITY = "fidelity_vllm"  # the engine against measured vLLM runs; rendered with --validate too
FIDELITY_DISAGG = "fidelity_disagg"  # the disaggregated engine against measured DistServe runs; with --validate
PREFIX_CACHING = "prefix_caching"  # prefix caching and cache-aware routing on Mooncake; with --validate too
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


def notebook_parameters(options: SuiteOptions, step: str) -> dict:
    """The papermill parameters the suite passes to ``step``'s notebook."""
    if step == VALIDATION:
        return {"results_dir": str(options.results_path), "seed": options.seed}
    if step in (FIDELITY, FIDELITY_DISAGG, PREFIX_CACHING):
        return {"results_dir": str(options.results_path)}
    if step == COMPARE:
        gpus = [g for g in (1, 2, 4, 8) if g <= options.max_gpus]
        return {"dataset": options.dataset, "num_requests": min(options.max_requests, COMPARE_MAX_REQUESTS),
                "latency": options.latency if options.latency != "grid" else "opt-13b-a100",
                "gpu_counts": ",".join(map(str, gpus)), "curve_gpus": min(4, options.max_gpus),
                "d_sla_s": options.d_sla, "attainment": options.capacity_attainment, "k_bins": options.k_bins,
                "replications": options.replications, "seed": options.seed,
                "results_dir": str(options.results_path / COMPARE)}
    params = {f.name: getattr(options, f.name) for f in fields(StepParams)}
    params["schedulers"] = list(options.schedulers)  # papermill writes lists, not tuples
    params["results_dir"] = str(options.results_path)
    if step == STEP3:
        params["best_gpu_count"] = options.best_gpu_count
    return params


@dataclass
class StepRun:
    name: str
    notebook: Path
    html: Path
    wall_s: float
    csv: Path | None = None
    pngs: list[Path] = field(default_factory=list)


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
            for extra in ([run.csv] if run.csv else []) + run.pngs:
                lines.append(f"  {'':<26} {'':9}   {extra}")
        for name in (analysis.ALL_RESULTS, analysis.ANALYSIS):
            if (self.results_dir / name).is_file():
                lines.append(f"  {name:<26} {'':9}   {self.results_dir / name}")
        found = analysis.read_analysis(self.results_dir) or {}
        if found.get("best_gpu_count") is not None or found.get("best_k") is not None:
            lines.append(f"Best GPU count: {found.get('best_gpu_count')}; best K: {found.get('best_k')}.")
        by_gpus, by_k = found.get("best_gpu_count_by_capacity_per_gpu"), found.get("best_k_by_capacity")
        if by_gpus is not None or by_k is not None:
            lines.append(f"By capacity: best GPU count (capacity per GPU) {by_gpus}; best K {by_k}.")
        for warning in found.get("warnings", []):
            lines.append(f"Warning: {warning}")
        return "\n".join(lines)


# Wide tables scroll inside their cell instead of running off the page; numbers stay on one line.
WIDE_TABLE_CSS = """<style>
.jp-RenderedHTMLCommon table, .rendered_html table { display: block; max-width: 100%; overflow-x: auto;
  font-size: 12px; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: nowrap; }
</style>
"""
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


def render_html(notebook_path: Path, html_path: Path, replacements=()) -> Path:
    """An HTML rendering of an executed notebook (images embedded, wide tables scrolling, the machine's absolute
    paths replaced by ``replacements``), written atomically.  The executed ``.ipynb`` keeps its paths, so it
    still runs where it was made."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    scrub_notebook(nb, replacements)
    traitlets_log = logging.getLogger("traitlets")
    level = traitlets_log.level
    traitlets_log.setLevel(logging.ERROR)  # "Alternative text is missing on N image(s)": plots have titles
    try:
        body, _ = HTMLExporter().from_notebook_node(nb)
    finally:
        traitlets_log.setLevel(level)
    body = body.replace("</head>", WIDE_TABLE_CSS + "</head>", 1)
    atomic_write_text(html_path, _scrub(body, replacements))
    return html_path


def run_notebook(name: str, parameters: dict, results_dir: Path, *, progress: bool = True) -> StepRun:
    """Execute ``notebooks/<name>.ipynb`` into ``results_dir`` and render it to HTML.

    ``progress`` shows papermill's cell bar only on an interactive terminal; in a log (``make run > log``)
    the suite's one line per notebook and the notebooks' one line per test say the same without redraws.
    """
    import papermill as pm

    source = paths.NOTEBOOKS_DIR / f"{name}.ipynb"
    executed = results_dir / f"{name}.ipynb"
    html = results_dir / f"{name}.html"
    dataset = parameters.get("dataset")
    replacements = path_replacements(results_dir, (Path(dataset).parent,) if dataset else ())
    log.info("running %s", source.relative_to(paths.REPO_ROOT))
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(source), str(executed), parameters=parameters, kernel_name=KERNEL_NAME,
                            cwd=str(paths.REPO_ROOT), progress_bar=progress and sys.stderr.isatty(),
                            extra_arguments=KERNEL_ARGUMENTS)
    except pm.PapermillExecutionError as exc:
        render_html(executed, html, replacements)
        raise SuiteError(f"{name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                         f"see {html} (or {executed})") from None
    wall = time.perf_counter() - t0
    render_html(executed, html, replacements)
    csv = results_dir / f"{name}.csv"
    pngs = sorted(results_dir.glob(f"{name}*.png"))  # the step's figure, then e.g. <step>_capacity.png
    return StepRun(name, executed, html, wall, csv if csv.is_file() else None, pngs)


def run_suite(options: SuiteOptions | None = None, *, progress: bool = True) -> SuiteReport:
    """Run the selected steps (and the validation notebook with ``validate``), in order."""
    options = options or SuiteOptions()
    options.check_results_dir()   # a folder holding another parameter set: refused before any trace is loaded
    options.check_traces()        # what the notebooks' plans would refuse, refused before the folder is recorded
    results_dir = options.claim_results_dir()
    t0 = time.perf_counter()
    runs = []
    if options.steps == (STEP3,) and options.best_gpu_count is None:
        found = analysis.best_gpu_count_from_results(results_dir)
        log.info("step 3 only: %s", f"step 2's best GPU count in {results_dir} is {found}" if found else
                 f"no step 2 results in {results_dir}; step 3 uses its default GPU count")
    for step in options.steps:
        runs.append(run_notebook(step, notebook_parameters(options, step), results_dir, progress=progress))
        log.info("%s done in %.1f s", step, runs[-1].wall_s)
    if options.validate:
        if (paths.NOTEBOOKS_DIR / f"{VALIDATION}.ipynb").is_file():
            runs.append(run_notebook(VALIDATION, notebook_parameters(options, VALIDATION), results_dir,
                                     progress=progress))
        else:
            log.warning("--validate: notebooks/%s.ipynb does not exist; skipped", VALIDATION)
    if options.compare:
        runs.append(run_notebook(COMPARE, notebook_parameters(options, COMPARE), results_dir, progress=progress))
    if options.validate:
        for step in (FIDELITY, FIDELITY_DISAGG, PREFIX_CACHING):
            runs.append(run_notebook(step, notebook_parameters(options, step), results_dir, progress=progress))
    index = report.write_index(results_dir)
    log.info("one page for the whole run: %s", display_path(index))
    return SuiteReport(results_dir, runs, time.perf_counter() - t0)


__all__ = ["SuiteOptions", "SuiteReport", "SuiteError", "run_suite", "notebook_parameters", "render_html"]
