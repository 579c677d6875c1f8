"""Command line: ``python -m workbench suite [options]`` (``make run ARGS="..."``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from workbench import checks
from workbench.study.runs.experiments import STEP1, STEP2, STEP3, STEPS
from workbench.traces import datasets


def _number(text: str) -> float:
    try:
        return checks.number(text, "value")
    except ValueError:
        if checks._from_text(text) is None:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        return float(checks._from_text(text))


def _positive_int(text: str) -> int:
    """A whole number >= 1; ``1e6`` and ``1_000_000`` are accepted."""
    _number(text)
    try:
        return checks.integer(text, "value", low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None


def _positive_float(text: str) -> float:
    _number(text)
    try:
        return checks.number(text, "value", low=0, low_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None


def _share(text: str) -> float:
    value = _number(text)
    try:
        return checks.number(text, "value", low=0, low_open=True, high=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {value:g}") from None


def _seed(text: str) -> int:
    _number(text)
    try:
        return checks.integer(text, "value", low=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    suite = commands.add_parser(
        "suite", help="run the three step notebooks (request scaling, GPU scaling, K-bins sensitivity)",
        description="Run notebooks/step1..3 through papermill; executed notebooks, HTML, CSVs, plots and "
                    "analysis.json go to --results-dir. A rerun resumes from the checkpoints there.")
    only = suite.add_argument_group("step selection (default: all three, in order)")
    only.add_argument("--step1-only", action="store_true", help="run step 1 (request scaling)")
    only.add_argument("--step2-only", action="store_true", help="run step 2 (GPU scaling)")
    only.add_argument("--step3-only", action="store_true",
                      help="run step 3 (K-bins); uses step 2's results already in --results-dir")
    suite.add_argument("--best-gpu-count", type=_positive_int, default=None, metavar="N",
                       help="GPU count for step 3 (default: the GPUs step 2 found the trace needs)")
    suite.add_argument("--max-requests", type=_positive_int, default=1_000_000, metavar="N",
                       help="requests per test; step 1 goes up to it in 10x steps (default 1000000)")
    suite.add_argument("--max-gpus", type=_positive_int, default=100, metavar="N",
                       help="largest GPU count tested (default 100)")
    suite.add_argument("--use-real-timestamps", action="store_true",
                       help="keep the trace's inter-arrival times instead of dividing them by --rps-scaling")
    suite.add_argument("--ttft-sla", type=_positive_float, default=1.0, metavar="S",
                       help="SLA on a step-time profile: time to first token, seconds (default 1.0)")
    suite.add_argument("--tpot-sla", type=_positive_float, default=0.05, metavar="S",
                       help="SLA on a step-time profile: time per output token, seconds (default 0.05)")
    suite.add_argument("--d-sla", type=_positive_float, default=1.0, metavar="S",
                       help="--latency seed-grid: end-to-end latency SLA per request, seconds; on a step-time "
                            "profile: the static SLA controller's batch-time budget (default 1.0)")
    suite.add_argument("--rps-scaling", type=_positive_float, default=None, metavar="X",
                       help="divide the trace's timestamps by X (default 10 on a step-time profile, 200 with "
                            "--latency seed-grid)")
    suite.add_argument("--dataset", default=None, metavar="NAME|PATH",
                       help="the trace: a dataset name or a CSV file (BurstGPT, Azure raw, Vidur or minimal layout, "
                            f"see data/README.md). Names: {datasets.help_text()}. Default: synthetic")
    suite.add_argument("--k-bins", type=_positive_int, default=4, metavar="K",
                       help="bins of the multi-bin schedulers in steps 1 and 2 (default 4)")
    suite.add_argument("--seed", type=_seed, default=42, help="seed of the simulation and the synthetic trace")
    suite.add_argument("--results-dir", default=None, metavar="DIR",
                       help="where everything is written (default: results/default at the default parameters, "
                            "else results/<the parameters that differ>, e.g. results/max_gpus=16); a folder holds "
                            "one parameter set: another set is refused there")
    suite.add_argument("--executor", default=None, metavar="SPEC",
                       help="serial, process, process:N or dask://host:port "
                            "(default: a local process pool when more than one test is queued)")
    suite.add_argument("--no-capacity", action="store_true",
                       help="replays only: skip the capacity searches (the largest arrival rate meeting the SLA)")
    suite.add_argument("--capacity-attainment", type=_share, default=0.9, metavar="X",
                       help="capacity = the largest rate at which at least this share of the requests finish "
                            "within --d-sla (default 0.9)")
    suite.add_argument("--schedulers", default=None, metavar="A,B,...",
                       help="comma-separated schedulers that step 1 compares and steps 2-3 sweep (default: "
                            "static_fifo,dynamic_no_bins,multi_bin_dynamic,continuous_fcfs; with "
                            "--latency seed-grid the seed's three static ones)")
    suite.add_argument("--latency", default=None, metavar="PROFILE",
                       help="hardware model of every scheduler: a step-time profile (default opt-13b-a100; static "
                            "schedulers run in step mode on it), judged on --ttft-sla/--tpot-sla; or 'seed-grid' "
                            "to reproduce the seed study (its formula grid, static schedulers, end-to-end --d-sla)")
    suite.add_argument("--replications", type=_positive_int, default=1, metavar="N",
                       help="run every test with N seeds (seed, seed+1, ...) and report means with 95%% "
                            "confidence intervals (default 1)")
    suite.add_argument("--validate", action="store_true",
                       help="also run the fidelity reports (validation, fidelity_vllm, fidelity_disagg) and the "
                            "other studies (prefix_caching, disaggregation: about 20-25 s each) after the steps")
    suite.add_argument("--no-compare", action="store_true",
                       help="skip the scheduler comparison (notebooks/compare_schedulers.ipynb: every scheduler on "
                            "one step-time profile and one TTFT/TPOT SLA, up to 20,000 requests), which otherwise "
                            "runs after the steps when all three steps run")
    suite.add_argument("--no-progress", action="store_true", help="no papermill progress bar")
    commands.add_parser("columns", help="print the column dictionary (every CSV column and analysis.json key) "
                                        "as markdown; docs/columns.md is this output")
    one = commands.add_parser(
        "notebook", help="run one notebook of the suite into its results folder, with its HTML and index.html",
        description="Run notebooks/<name>.ipynb through papermill as the suite would, with -p parameters as "
                    "papermill takes them: the executed notebook, its HTML rendering and index.html go to its "
                    "results folder (printed), and tests other results folders already hold are reused.")
    one.add_argument("name", help="the notebook, e.g. step2_gpu_scaling")
    one.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter (as papermill's -p; repeat for more)")
    one.add_argument("--no-progress", action="store_true", help="no papermill progress bar")
    return parser


def options_from_args(args: argparse.Namespace):
    from workbench.study.orchestrate.suite import SuiteOptions

    chosen = tuple(step for step, flag in zip((STEP1, STEP2, STEP3),
                                              (args.step1_only, args.step2_only, args.step3_only)) if flag)
    return SuiteOptions(
        steps=chosen or STEPS, max_requests=args.max_requests, max_gpus=args.max_gpus,
        use_real_timestamps=args.use_real_timestamps, rps_scaling=args.rps_scaling, d_sla=args.d_sla,
        dataset=args.dataset, k_bins=args.k_bins, seed=args.seed, results_dir=args.results_dir,
        executor=args.executor, best_gpu_count=args.best_gpu_count, validate=args.validate,
        compare=not args.no_compare and not chosen,
        capacity_search=not args.no_capacity, capacity_attainment=args.capacity_attainment,
        replications=args.replications, ttft_sla=args.ttft_sla, tpot_sla=args.tpot_sla,
        **({"schedulers": args.schedulers} if args.schedulers is not None else {}),
        **({"latency": args.latency} if args.latency is not None else {}))


def check_results_dir(path: Path) -> None:
    """The results folder must be one that can be created or written (checked now, creating nothing, so a
    path that cannot be one fails before any work starts and a refused run leaves no empty folder behind)."""
    checks.writable_folder(path, "--results-dir")


def check_executor(spec) -> None:
    """A ``dask://`` executor must answer now (seconds), not after the client's 30 s of retries."""
    if isinstance(spec, str) and spec.strip().startswith(("dask://", "tcp://", "tls://")):
        from workbench.study.runs.sweep import check_dask_reachable

        check_dask_reachable(spec)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "columns":
        from workbench.study.answers.columns import markdown

        sys.stdout.write(markdown())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from workbench.study.present.console import plain_warnings
    from workbench.study.store.folders import ResultsFolderConflict

    plain_warnings()   # each warning once, one line, no source lines
    from workbench.study.orchestrate.suite import run_suite

    if args.command == "notebook":
        return _notebook(parser, args)

    try:
        options = options_from_args(args)
        check_results_dir(options.results_path)
        options.check_results_dir()  # a foreign folder, another parameter set, an output path that is a folder
        check_executor(options.executor)
        options.check_traces()  # e.g. an rps_scaling that overflows time: refused before the folder is recorded
    except ResultsFolderConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        parser.error(str(exc))
    report, code = _run(lambda: run_suite(options, progress=not args.no_progress))
    if report is not None:
        print(report.summary())
    return code


def _run(work):
    """(what ``work()`` returns, 0), or (None, the exit code) after saying why it stopped: 2 for a results folder
    that holds another parameter set, 1 for a notebook that failed."""
    from workbench.study.store.folders import ResultsFolderConflict
    from workbench.study.orchestrate.suite import SuiteError

    try:
        return work(), 0
    except ResultsFolderConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 1


def _papermill_value(text: str):
    """A -p value as papermill reads it: a number, True/False/None, else the text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _notebook_params_class(name: str):
    """The NotebookParams subclass that validates notebook ``name``'s parameters (its ``notebook`` is ``name``)."""
    import workbench.study.runs.disaggregation  # noqa: F401  (each module registers its class)
    import workbench.study.runs.prefix_caching  # noqa: F401
    import workbench.study.runs.hardware  # noqa: F401
    import workbench.study.fidelity.disagg_runs  # noqa: F401
    import workbench.study.fidelity.validation  # noqa: F401
    import workbench.study.fidelity.vllm_runs  # noqa: F401
    from workbench.study.store.folders import NotebookParams

    todo, found = [NotebookParams], []
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        found += [cls] if cls.notebook == name else []
    if len(found) != 1:
        raise LookupError(f"notebook {name}: {len(found)} parameter classes name it, expected one")
    return found[0]


def _claim_notebook_folder(name: str, declared: dict, parameters: dict) -> Path:
    """Claim the folder of notebook ``name`` with the parameters its kernel will see (its ``parameters`` cell's
    defaults, then ``parameters``; ``results_dir`` defaults to results/<name>), validated by its parameters
    class: the same claim the notebook makes, made before papermill writes the executed notebook there (a folder
    holding only that notebook would otherwise be refused as not the workbench's)."""
    import ast

    namespace = {}
    for key, spec in declared.items():
        try:
            namespace[key] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            pass   # not a literal: the class's own default (the notebook refuses a mismatch by name)
    namespace["results_dir"] = f"results/{name}"
    namespace.update(parameters)
    return _notebook_params_class(name).from_namespace(namespace).claim_results_dir().resolve()


def _notebook(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``python -m workbench notebook <name> -p ...``: one notebook as the suite runs it."""
    import papermill as pm

    from workbench import paths
    from workbench.study.answers import report
    from workbench.study.runs.experiments import STEPS, StepParams
    from workbench.study.store.files import display_path
    from workbench.study.orchestrate.suite import SUITE_NOTEBOOKS, run_notebook

    names = [n.name for n in SUITE_NOTEBOOKS]
    try:
        checks.choice(args.name, "notebook", names, hint="the suite's notebooks")
        parameters = {name: _papermill_value(value) for name, value in args.parameters}
        # a misspelt -p would be ignored by papermill and run the default: refused, with the closest name
        declared = pm.inspect_notebook(str(paths.NOTEBOOKS_DIR / f"{args.name}.ipynb"))
        checks.keywords(parameters, f"notebook {args.name}: -p", declared)
        if args.name in STEPS:
            known = {k: v for k, v in parameters.items() if k in StepParams.__dataclass_fields__}
            folder = StepParams(**known).claim_results_dir()
        elif args.name == "compare_schedulers":
            from workbench.study.runs.compare import CompareParams

            known = {k: v for k, v in parameters.items() if k in CompareParams.__dataclass_fields__}
            folder = CompareParams(**known).claim_results_dir()
        else:   # its parameters class claims its part of the folder now, before papermill writes into it
            folder = _claim_notebook_folder(args.name, declared, parameters)
        parameters["results_dir"] = str(folder)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        parser.error(str(exc))
    print(f"{args.name}: results go to {display_path(folder)}/", file=sys.stderr)
    run, code = _run(lambda: run_notebook(args.name, parameters, folder, progress=not args.no_progress))
    if run is None:
        return code
    # a steps' or the comparison's folder gets the suite's page (analysis.json's answers, the ranking); a study
    # notebook's folder its own page (unless the notebook was run into a steps' folder: that page links it)
    study = args.name not in STEPS and args.name != "compare_schedulers" and not report.is_steps_folder(folder)
    index = report.write_notebook_index(folder) if study else report.write_index(folder)
    print(f"{args.name} finished in {run.wall_s:.1f} s; {display_path(run.html)}, {display_path(index)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
