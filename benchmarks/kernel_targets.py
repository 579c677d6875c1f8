"""Issue 22's kernel-profile targets, measured: every LLMServingSim vLLM 0.19 run replayed from its GPU's kernel
profiles with nothing tuned to it, side by side with LLMServingSim's own prediction, and the runs not measured
predicted by both of the workbench's step models.

1. Every measured run of the campaign folders (``kernel_runs.measured_run_names``: the two shipped runs, and the
   held-back Qwen3-32B TP2 and Qwen3-30B-A3B runs once their measurements are added in LLMServingSim's layout
   under ``runs/<GPU>/<model>/``, to the project's copy, the shared folder or a folder of
   ``WORKBENCH_LLMSERVINGSIM_DIRS``): mean/p50/p90 TTFT, TPOT, E2E measured, LLMServingSim's and the workbench's,
   with the errors; target: mean E2E within 5% of measured on each, simulated in under 1 s.
2. The runs with a config and no measurements: the kernel-profile prediction beside the roofline's (two
   independent derivations: per-layer kernel timings vs spec-sheet peaks and config.json facts).

    .venv/bin/python benchmarks/kernel_targets.py [--data-dir FOLDER]
"""

from __future__ import annotations

import argparse
import logging
import warnings

import pandas as pd

from workbench.study.fidelity import kernel_runs

E2E_TARGET = 0.05      # |error of mean E2E| per run
SIM_TIME_TARGET_S = 1.0


def roofline_prediction(setup) -> dict:
    """Mean TTFT, TPOT and E2E of a run (``kernel_runs.run_setup``) simulated with the roofline of its model, GPU,
    TP and EP."""
    from workbench.study.fidelity.roofline_runs import llmservingsim_roofline

    model = llmservingsim_roofline(setup)
    sim, wall = kernel_runs.replay(setup, model)
    return {**{m: float(sim[m].mean()) for m in kernel_runs.METRICS}, "sim_time_s": wall, "model": model.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="a campaign folder searched first (LLMServingSim layout)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)

    print("Campaign folders searched:", ", ".join(map(str, kernel_runs.campaign_dirs(args.data_dir))))
    measured = kernel_runs.measured_run_names(args.data_dir)
    table = kernel_runs.fidelity_table(measured, args.data_dir)
    print(f"\n1. Measured runs replayed from kernel profiles ({len(measured)}):")
    shown = table[table.metric != "sim_time_s"][["run", "metric", "statistic", "measured", "llmservingsim",
                                                  "workbench", "llmservingsim_error", "workbench_error"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    e2e = table[(table.metric == "e2e_s") & (table.statistic == "mean")].set_index("run")
    wall = table[table.metric == "sim_time_s"].set_index("run")
    print("\n   run                                      mean E2E error   LLMServingSim's   "
          "simulated in (LLMServingSim)")
    for run in measured:
        ok = abs(e2e.workbench_error[run]) <= E2E_TARGET and wall.workbench[run] < SIM_TIME_TARGET_S
        print(f"   {run:<40} {e2e.workbench_error[run]:+8.1%}        {e2e.llmservingsim_error[run]:+8.1%}"
              f"        {wall.workbench[run]:.2f} s ({wall.llmservingsim[run]:.0f} s)   "
              f"{'met' if ok else 'NOT met'}")

    predicted = kernel_runs.predicted_run_names(args.data_dir)
    if predicted:
        print(f"\n2. Runs not measured here, predicted with nothing tuned to them ({len(predicted)}):")
        kernel = kernel_runs.prediction_table(predicted, args.data_dir)
        rows = []
        for run in predicted:
            k = kernel[(kernel.run == run)]
            mean = k[k.statistic == "mean"].set_index("metric").workbench
            setup = kernel_runs.run_setup(run, args.data_dir)
            roof = roofline_prediction(setup)
            for metric in kernel_runs.METRICS:
                rows.append({"run": run, "metric": metric, "kernel_profile_mean": mean[metric],
                             "kernel_profile_p50": k[(k.metric == metric) & (k.statistic == "p50")].workbench.iloc[0],
                             "kernel_profile_p90": k[(k.metric == metric) & (k.statistic == "p90")].workbench.iloc[0],
                             "roofline_mean": roof[metric], "roofline_vs_kernel": roof[metric] / mean[metric] - 1})
            print(f"   {run}: {setup.notes}; kernel profile {setup.step.name}, roofline {roof['model']}")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
