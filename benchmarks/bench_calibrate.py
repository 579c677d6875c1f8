"""Calibration on one run (issue 21): its time budget, the synthetic proof, and the shipped measured runs.

    python benchmarks/bench_calibrate.py [--requests 10000] [--repeats 3] [--parts speed,proof,shipped,extrapolation]
                                         [--seeds 5]

1. **speed**: ``wb.calibrate`` from the issue's generic start on a run of ``--requests`` requests made by the
   engine from a hidden step-time model (three load stages; prompts drawn from 100 distinct ones, and
   distinct prompts), median of ``--repeats`` calibrations: wall and CPU time, simulations used, and one
   simulation of the run as the reference measured in the same process (the budget is 60 s on 2 cores).
2. **proof**: runs made by the engine from the hidden model with 5% measurement noise (two workloads with
   three load stages: 100 distinct prompts each sent many times, and distinct prompts; two held-out ones at
   other rates), calibrated on each of the first two from the generic start: every run's mean E2E error, and
   the coefficients recovered against the hidden ones.
3. **shipped**: DistServe's three vLLM runs, calibrated on each alone from the published profile and
   predicting the other two, and on two predicting the third, beside main's figures before issue 21 (and the
   spread of each fold over seeds 0-4 with ``--seeds 5``); LLMServingSim's two vLLM 0.19 runs, calibrated on
   their first 150 requests from each of three starts and predicting the last 150.
4. **extrapolation**: one light load (3 requests/s) against two stages (3 and 6/s) of a server whose decode step
   grows with the batch faster than the generic start says, predicting a heavier workload (6 and 9/s): the error,
   and the decode step by batch with the uncertainty the fit reports.
The machine is shared: the CPU time of the process is printed beside the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _models():
    import workbench as wb

    hidden = wb.StepTimeModel(prefill=(0.006, 2.5e-5, 0.0), decode=(0.006, 5e-8, 1.5e-4),
                              arrival_overhead_s=(0.003, 0.0), name="hidden")
    generic = wb.StepTimeModel(prefill=(0.01, 5e-5, 0), decode=(0.01, 0, 1e-4), name="generic")
    cfg = wb.SimConfig(scheduler="continuous_fcfs", chunked_prefill=True, max_num_batched_tokens=2048,
                       max_num_seqs=256, block_size=16, kv_blocks=40_000, prefix_caching=True)
    return hidden, generic, cfg


def speed(requests: int, repeats: int) -> None:
    import workbench as wb
    from workbench.study.fidelity.synthetic_runs import benchmark_workload, measured_run

    hidden, generic, cfg = _models()
    per_stage = requests // 3
    print(f"1. speed: calibrate on a run of {3 * per_stage:,} requests (3 load stages), from the generic start")
    for kind, distinct in (("100 shared prompts", 100), ("distinct prompts", None)):
        run = measured_run(benchmark_workload((4.0, 8.0, 12.0), per_stage, distinct_prompts=distinct, seed=1), cfg,
                           hidden, seed=2, name=kind)
        wb.simulate(run.trace, cfg, latency=generic)                  # compile and warm the caches
        sims = []
        for _ in range(5):
            t = time.perf_counter()
            wb.simulate(run.trace, cfg, latency=generic)
            sims.append(time.perf_counter() - t)
        walls, cpus, evaluations = [], [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            fitted = wb.calibrate(generic, run)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            evaluations.append(fitted.fit_report.search["evaluations"])
        wall, sim = statistics.median(walls), statistics.median(sims)
        print(f"   {kind:<20} calibrate: median {wall:5.1f} s wall, {statistics.median(cpus):5.1f} s CPU "
              f"({min(walls):.1f}-{max(walls):.1f} s over {repeats}); {statistics.median(evaluations):.0f} "
              f"simulations of 800; one simulation {sim * 1e3:.0f} ms (calibrate = {wall / sim:.0f} simulations' "
              f"time); budget 60 s: {'within' if max(walls) <= 60 else 'OVER'}")


def proof(per_stage: int) -> None:
    import workbench as wb
    from workbench.study.fidelity.calibration import simulate_run
    from workbench.study.fidelity.synthetic_runs import benchmark_workload, measured_run

    hidden, generic, cfg = _models()
    print(f"\n2. proof: the engine with a hidden model and 5% noise, {per_stage} requests per stage; calibrated "
          "from the generic start")
    print(f"   hidden:  {hidden.describe()}")
    runs = {
        "shared": measured_run(benchmark_workload((4.0, 8.0, 12.0), per_stage, distinct_prompts=100, seed=1), cfg,
                               hidden, seed=11, name="shared"),
        "distinct": measured_run(benchmark_workload((4.0, 8.0, 12.0), per_stage, seed=2), cfg, hidden, seed=12,
                                 name="distinct"),
        "distinct 6,14 req/s": measured_run(benchmark_workload((6.0, 14.0), per_stage, seed=3), cfg, hidden,
                                            seed=13, name="distinct 6,14 req/s"),
        "shared 10 req/s": measured_run(benchmark_workload((10.0,), per_stage, distinct_prompts=100, seed=4), cfg,
                                        hidden, seed=14, name="shared 10 req/s"),
    }
    print("   mean E2E error of each run (columns) predicted by the model calibrated on (rows):")
    print(f"   {'':<12}" + "".join(f"{name:>22}" for name in runs))
    for train in ("shared", "distinct"):
        fitted = wb.calibrate(generic, runs[train])
        errors = []
        for name, run in runs.items():
            table = wb.compare_to_measured(simulate_run(run, fitted), run)
            errors.append(table.loc[(name, "e2e_s"), "mean_rel_error"])
        print(f"   {train:<12}" + "".join(f"{e:>+22.1%}" for e in errors))
        report = fitted.fit_report
        print(f"      fitted: {fitted.describe()}")
        print(f"      held: {', '.join(report.held)}; {report.search['evaluations']} simulations, "
              f"{report.search['elapsed_s']:.1f} s")


def shipped(seeds: int) -> None:
    import pandas as pd

    import workbench as wb
    from workbench.sim.profiles import get_profile
    from workbench.study.fidelity import vllm_runs

    print("\n3. shipped measured runs")
    folder = REPO / "data" / "groundtruth" / "distserve_opt13b_a100_vllm"
    runs = [wb.load_serving_log(folder / f"{n}.csv") for n in ("vllm-100-1", "vllm-200-2", "vllm-350-3.5")]
    profile = get_profile("opt-13b-a100")
    table, _, refused = vllm_runs.one_run_workflow(profile, runs)
    others, _, refused_others = vllm_runs.leave_one_out_workflow(profile, runs)
    print("   DistServe vLLM v0.2 (OPT-13B, A100), calibrated on one run (rows) from opt-13b-a100, mean E2E error "
          "of the server's model (the diagonal: training, without the run's factor)")
    with pd.option_context("display.width", 200):
        print("   " + vllm_runs.error_matrix(table).map(lambda e: f"{e:+.1%}").to_string().replace("\n", "\n   "))
    if refused or refused_others:
        print(f"   refused: {refused} {refused_others}")
    spread = {}
    for seed in range(1, seeds):
        for frame in (vllm_runs.one_run_workflow(profile, runs, seed=seed)[0],
                      vllm_runs.leave_one_out_workflow(profile, runs, seed=seed)[0]):
            for row in frame[(frame.metric == "e2e_s") & (frame.role == "held-out")].itertuples():
                spread.setdefault((row.trained_on, row.run), []).append(row.mean_rel_error)
    print("   every fold, held-out mean E2E: this calibrate (seed 0) vs main before issue 21"
          + (f"; range over seeds 0-{seeds - 1}" if seeds > 1 else ""))
    for row in vllm_runs.against_main(table, others).itertuples():
        values = spread.get((row.trained_on, row.run), []) + [row.mean_rel_error]
        extra = f"   seeds {min(values):+.1%} to {max(values):+.1%}" if seeds > 1 else ""
        print(f"   {row.trained_on:>24} -> {row.run:<13} {row.mean_rel_error:+7.1%}  main {row.main_before_issue_21:+7.1%}"
              f"  {'better' if row.better else 'worse':<6}{extra}")
    generic = _models()[1]
    starts = {"llama-3.1-8b-h100": get_profile("llama-3.1-8b-h100"),
              "llama-3.1-8b-a100": get_profile("llama-3.1-8b-a100"), "generic": generic}
    print("   LLMServingSim vLLM 0.19 (Llama-3.1-8B), calibrated on the first 150 requests, predicting the last "
          "150: mean E2E error")
    for gpu in ("RTX4090", "RTXPRO6000"):
        run = wb.load_serving_log(REPO / vllm_runs.LLMSERVINGSIM_DIR / gpu / "Llama-3.1-8B" / "vllm" / "requests.jsonl")
        cells = []
        for name, start in starts.items():
            split, _, why = vllm_runs.split_workflow(start, run, 150)
            if why:
                cells.append(f"{name}: refused")
                continue
            e2e = split[split.metric == "e2e_s"].set_index("role")["mean_rel_error"]
            cells.append(f"{name}: train {e2e['training']:+.1%}, predict {e2e['held-out']:+.1%}")
        print(f"   {gpu:<11} " + "; ".join(cells))


def extrapolation() -> None:
    import workbench as wb
    from workbench.study.fidelity.calibration import simulate_run
    from workbench.study.fidelity.synthetic_runs import benchmark_workload, measured_run

    _, generic, cfg = _models()
    hidden = wb.StepTimeModel(prefill=(0.004, 2e-5, 0.0), decode=(0.004, 1e-7, 2e-4), arrival_overhead_s=(0.002, 0),
                              name="hidden")
    print("\n4. extrapolation: a server whose decode step grows with the batch 4x faster (relative to its fixed "
          "cost) than the generic start says")
    heavy = measured_run(benchmark_workload((6.0, 9.0), 800, seed=2), cfg, hidden, seed=2, name="heavy")
    for label, rates, per_stage, seed in (("one light load (3/s)", (3.0,), 800, 1), ("two stages (3, 6/s)", (3.0, 6.0),
                                                                                      600, 5)):
        run = measured_run(benchmark_workload(rates, per_stage, distinct_prompts=100, seed=seed), cfg, hidden,
                           seed=seed, name=label)
        fitted = wb.calibrate(generic, run)
        error = wb.compare_to_measured(simulate_run(heavy, fitted), heavy).loc[("heavy", "e2e_s"), "mean_rel_error"]
        steps = fitted.fit_report.decode_steps()
        truth = [hidden.decode_time_s([int(r.context_tokens)] * int(r.batch)) for r in steps.itertuples()]
        print(f"   {label:<21} predicts the heavy workload (6, 9/s) at {error:+.1%}; decode step by batch, fitted "
              "+- its reported uncertainty (hidden):")
        print("      " + ", ".join(f"{r.batch}: {r.step_s * 1e3:.2f} ms +-{r.rel_std:.0%} ({t * 1e3:.2f})"
                                  for r, t in zip(steps.itertuples(), truth)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--proof-requests-per-stage", type=int, default=2000)
    ap.add_argument("--parts", default="speed,proof,shipped,extrapolation")
    ap.add_argument("--seeds", type=int, default=1, help="shipped: also calibrate with seeds 1..N-1 (fold spread)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    warnings.simplefilter("ignore")
    if "speed" in parts:
        speed(args.requests, args.repeats)
    if "proof" in parts:
        proof(args.proof_requests_per_stage)
    if "shipped" in parts:
        shipped(args.seeds)
    if "extrapolation" in parts:
        extrapolation()


if __name__ == "__main__":
    main()
