"""Write the three step notebooks (without outputs) so they stay consistent.

    .venv/bin/python notebooks/_build_notebooks.py          # rewrite them
    .venv/bin/python notebooks/_build_notebooks.py --check  # exit 1 if they are stale

The notebooks hold parameters, calls into ``workbench``, plots and commentary;
every piece of logic lives in ``workbench.study.experiments`` / ``analysis`` / ``plots``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

COMMON_PARAMETERS = '''\
max_requests = 1_000_000  # requests per test (step 1: the largest volume)
max_gpus = 100  # GPU counts above this are skipped
use_real_timestamps = False  # True: keep the trace's own inter-arrival times
rps_scaling = 200.0  # divide the trace's timestamps by this (stress mode)
d_sla = 1.0  # end-to-end latency SLA per request, seconds
dataset = None  # None: the embedded synthetic BurstGPT-like trace; or a path to a BurstGPT CSV
k_bins = 4  # bins of the multi-bin schedulers
seed = 42  # seeds the simulation and the synthetic trace
results_dir = "results/default"  # relative to the current directory (the repo root when run from notebooks/)
executor = None  # None: process pool if >1 test is queued; "serial", "process:N", "dask://host:port"
capacity_search = True  # also search capacity: the largest arrival rate at which the SLA target holds
capacity_attainment = 0.9  # capacity target: this share of requests within d_sla (0.95: out of reach, see below)
'''

SCHEDULERS_MD = '''\
The schedulers, in one sentence each:

- **static_fifo**: one FIFO queue; an idle GPU takes up to a fixed batch size (8) of waiting requests.
- **dynamic_no_bins**: one FIFO queue; the batch size is the smaller of a memory bound and an SLA \
controller's choice, adapted after every batch.
- **multi_bin_dynamic**: requests are split into K equal-mass bins by predicted output length, a batch \
holds requests of one bin only, and each bin has its own memory and SLA controllers.
- **multi_bin_fixed** (not used in the three steps): the Multi-Bin Batching paper's model, K bins with \
batches of exactly the fixed size, served first formed, first served.

The default trace is **synthetic**: a BurstGPT-like stand-in generated from the real trace's published \
statistics (the real BurstGPT CSVs cannot be shipped). Every result row and plot title says so; pass \
`dataset` to use a real BurstGPT file.'''

SETUP = '''\
%matplotlib inline
import logging

from IPython.display import Markdown, display

from workbench.study import analysis
from workbench.study import experiments
from workbench.study import plots

logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("workbench").setLevel(logging.INFO)

params = experiments.StepParams(
    max_requests=max_requests, max_gpus=max_gpus, use_real_timestamps=use_real_timestamps,
    rps_scaling=rps_scaling, d_sla=d_sla, dataset=dataset, k_bins=k_bins, seed=seed,
    results_dir=results_dir, executor=executor, capacity_search=capacity_search,
    capacity_attainment=capacity_attainment)
'''

CAPACITY_WHY = (
    "**Capacity is not replayed throughput.** A replay runs the trace at one load (`rps_scaling`), so it only "
    "tells whether the pool keeps up at that load: once it does, throughput equals the offered load whatever "
    "the GPUs or bins, and nothing queues to tell them apart. Capacity replays the *same* trace faster or "
    "slower (same request mix, same bursts) and bisects for the highest load at which at least "
    "`capacity_attainment` of the requests still finish within `d_sla`.")

CAPACITY_TARGET = (
    "**Why the target is 0.9, not 0.95.** Two things cap the attainment any load can give on this trace. "
    "First, some requests are too long to finish within `d_sla` even alone on an idle GPU; the share that "
    "could, the *attainable share*, is printed below from the rows. Second, the trace's timestamps are whole "
    "seconds, as in BurstGPT, so many arrivals share their instant with another, and replaying the trace "
    "slower never separates them. On one GPU, requests that arrive together are batched together (or wait "
    "for each other) at any load, and a short request batched with a long one misses the SLA; on several "
    "GPUs the dynamic schedulers share simultaneous arrivals out over the idle GPUs (`spread_idle`), while "
    "`static_fifo` still stacks them on one. A configuration that misses the target even at the lowest load "
    "the search tries is listed below as *unreachable*, with the best attainment the search measured: that "
    "is a finding in itself, the SLA this policy cannot keep on this trace at any load.")

CAPACITY_CELL = '''\
display(Markdown(analysis.capacity_markdown(results)))
analysis.capacity_table(results)
'''

FINISH = '''\
result = plan.finish(results)  # all_results.csv + analysis.json, written atomically
display(Markdown(analysis.step_markdown(result, plan.step)))
'''


def md(text: str):
    return new_markdown_cell(text)


def code(text: str, tags: tuple[str, ...] = ()):
    cell = new_code_cell(text.rstrip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def parameters(extra: str = "") -> object:
    return code("# Parameters (papermill overrides them: -p name value)\n" + COMMON_PARAMETERS + extra,
                tags=("parameters",))


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives identical files
        cell["id"] = f"cell-{i:02d}"
    return nb


def step1() -> nbformat.NotebookNode:
    volumes = (1_000, 10_000, 100_000, 1_000_000)
    cells = [
        md("# Step 1: request scaling\n\n"
           "How do the schedulers hold up as the number of requests grows? Request volumes go up in 10x steps "
           "from 1,000 to `max_requests` (`request_volumes` overrides the list); `static_fifo` and "
           "`dynamic_no_bins` run on 1 GPU, `multi_bin_dynamic` on 1, 2 and 4 GPUs, all with K = `k_bins`.\n\n"
           + SCHEDULERS_MD),
        parameters("request_volumes = None  # e.g. [1_000, 5_000]: overrides the 10x steps\n"),
        code(SETUP + "plan = experiments.plan_step1(params, request_volumes=request_volumes)\n"
             "display(Markdown(plan.describe()))\nplan.table()"),
        md("## Run, one cell per request volume\n\n"
           "Each finished test is checkpointed in `step1_request_scaling.csv` before the next starts; rerunning "
           "a cell recomputes nothing that is already there. A cell whose volume is not in this run's list "
           "does nothing."),
    ]
    for v in volumes:
        cells.append(code(f"experiments.brief(plan.run({v:_}))"))
    cells += [
        code("results = plan.run()  # every test of the step (runs any volume not covered above)\n"
             "experiments.brief(results)"),
        md("## Plots\n\nOne line per scheduler configuration; the x axis (requests) is logarithmic. "
           "The dotted line marks the 5% SLA violation rate used for breaking points."),
        code("plots.plot_request_scaling(results, results_dir=plan.results_dir)"),
        md("## Capacity on 1 GPU\n\n" + CAPACITY_WHY + " Here each scheduler's capacity is searched on 1 GPU at "
           "the largest request volume, so the schedulers are compared on equal hardware at the load each can "
           "take.\n\n" + CAPACITY_TARGET),
        code(CAPACITY_CELL),
        code("plots.plot_step1_capacity(results, results_dir=plan.results_dir)"),
        md("## Commentary\n\n"
           "Throughput grows with the volume until the GPUs saturate; past that point queues build up, the "
           "p99 latency climbs by orders of magnitude and goodput (requests finished within the SLA) falls "
           "even while throughput stays flat. A configuration's *breaking point* is the first volume whose "
           "SLA violation rate exceeds 5%. More GPUs push the breaking point out; binning by predicted length "
           "lets a GPU batch similar requests, so a batch is not held up by its one long member. The "
           "capacities say the same at a fixed GPU count: without bins, requests that arrive together share a "
           "batch however light the load, which is why those schedulers may have no capacity at all at the "
           "target. Where there is one, it is far below the replayed throughput: the replay counts every "
           "request served, however late, capacity only the load at which the SLA target still holds."),
        code(FINISH),
    ]
    return notebook(cells)


def step2() -> nbformat.NotebookNode:
    cells = [
        md("# Step 2: GPU scaling\n\n"
           "`max_requests` requests served by `multi_bin_dynamic` on 1, 2, 4, 8, 16, 32, 64 and 100 GPUs "
           "(those up to `max_gpus`).\n\n"
           "**Best GPU count**: the smallest GPU count whose goodput is within 1% of the best goodput. "
           "(The seed project took the raw maximum, which on a saturating trace picks the largest pool for a "
           "gain in the noise.) **Scaling efficiency**: throughput per GPU relative to 1 GPU.\n\n"
           "**Capacity** (with `capacity_search`): the largest arrival rate each GPU count sustains within the "
           "SLA target. **Capacity scaling efficiency**: capacity(n) / (n x capacity(1)), 1 = ideal linear "
           "scaling. **Best GPU count by capacity per GPU**: the highest capacity per GPU (counts within 1% of "
           "it: the fewest GPUs). More GPUs should never give less capacity on the same trace; the analysis "
           "checks it and lists any exception.\n\n"
           + SCHEDULERS_MD),
        parameters(),
        code(SETUP + "plan = experiments.plan_step2(params)\ndisplay(Markdown(plan.describe()))\nplan.table()"),
        md("## Run\n\nEach finished test is checkpointed in `step2_gpu_scaling.csv` before the next starts."),
        code("results = plan.run()\nexperiments.brief(results)"),
        md("## Plots\n\nThe dashed line marks the best GPU count."),
        code("plots.plot_gpu_scaling(results, results_dir=plan.results_dir)"),
        md("## Capacity against GPU count\n\n" + CAPACITY_WHY + " That is why the replayed throughput above "
           "flattens at the offered load while capacity keeps growing with the pool.\n\n" + CAPACITY_TARGET),
        code(CAPACITY_CELL),
        md("Left: capacity against GPUs (log-log); the dotted line is ideal linear scaling from the 1-GPU "
           "capacity, the dashed one the replayed throughput. Right: capacity per GPU, with the scaling "
           "efficiency on the right axis; the dashed line marks the best GPU count by capacity per GPU, the "
           "dash-dotted one the best by the goodput rule."),
        code("plots.plot_gpu_capacity(results, results_dir=plan.results_dir)"),
        md("## Commentary\n\n"
           "Throughput can only grow until it matches the offered load; after that extra GPUs buy latency, "
           "not throughput, so the scaling efficiency falls as 1/n. Goodput keeps improving as long as queues "
           "still break the SLA, which is why the best GPU count is read from goodput and not from "
           "throughput. Step 3 uses this count unless it is given explicitly.\n\n"
           "Capacity answers the other question: how much load each pool takes within the SLA (table above). "
           "It can grow faster than the pool: on one GPU requests that arrive together wait for each other, "
           "which caps attainment even at vanishing load, and a larger pool absorbs the trace's bursts at a "
           "higher mean utilization (pooling, as in Erlang C). Where capacity per GPU keeps rising, the best "
           "GPU count by capacity per GPU is the largest pool tested, while the goodput rule names the "
           "smallest pool that keeps up with the one replayed load: they answer different questions, and "
           "step 3 uses the goodput rule's count. If the summary below lists a fall of capacity with more "
           "GPUs, a fall within the search resolution is the bisection's uncertainty; a larger one would mean "
           "attainment is not monotone in load there (the search logs a warning when it sees that)."),
        code(FINISH),
    ]
    return notebook(cells)


def step3() -> nbformat.NotebookNode:
    cells = [
        md("# Step 3: K-bins sensitivity\n\n"
           "`max_requests` requests served by `multi_bin_dynamic` at `best_gpu_count` GPUs with K = 1, 2, 4, "
           "8, 16 and 32 bins. When `best_gpu_count` is not given, it is step 2's best GPU count, read from "
           "`all_results.csv` in the same `results_dir`; without step 2 results the notebook says so and uses "
           "the default of 64 GPUs (at most `max_gpus`).\n\n"
           "**Best K**: the K with the lowest SLA violation rate (ties: higher goodput, then smaller K). "
           "**Effective bins**: the bins actually used; equal-mass edges can merge when many requests share "
           "a predicted length.\n\n"
           "**Capacity** (with `capacity_search`): the largest arrival rate each K sustains within the SLA target "
           "at that GPU count, which is where bins should matter: at the replayed load every K delivers the same "
           "throughput (the offered load) and differs only in its violation rate. **Best K by capacity**: the "
           "highest capacity (K values within 1% of it: the smaller K).\n\n" + SCHEDULERS_MD),
        parameters("best_gpu_count = None  # None: step 2's best GPU count from results_dir\n"),
        code(SETUP + "plan = experiments.plan_step3(params, best_gpu_count=best_gpu_count)\n"
             "display(Markdown(plan.describe()))\nplan.table()"),
        md("## Run\n\nEach finished test is checkpointed in `step3_kbins_sensitivity.csv` before the next "
           "starts."),
        code("results = plan.run()\nexperiments.brief(results)"),
        md("## Plots\n\nThe dashed line marks the best K; the dotted line in the last panel is "
           "effective bins = K."),
        code("plots.plot_kbins_sensitivity(results, results_dir=plan.results_dir)"),
        md("## Capacity against K\n\n" + CAPACITY_WHY + " At the step's GPU count every K replays at the same "
           "throughput; their capacities say how much more load each takes.\n\n" + CAPACITY_TARGET),
        code(CAPACITY_CELL),
        md("The dashed orange line is the replayed throughput (the offered load, whatever K); the dashed green "
           "one marks the best K by capacity."),
        code("plots.plot_kbins_capacity(results, results_dir=plan.results_dir)"),
        md("## Commentary\n\n"
           "K = 1 is plain dynamic batching. More bins make the requests in a batch more alike in length, so "
           "less GPU time is spent waiting for the longest member; the price is more, smaller queues, and "
           "with many bins some bins fill slowly at low load. Where the curves flatten, further bins buy "
           "nothing. Capacity shows it at the load that matters, the highest one the pool can take: with "
           "K = 1 requests that arrive together share a batch whatever their lengths, which can leave it with "
           "no capacity at all at the target, and each doubling of K lets more of them go to separate "
           "batches (and GPUs)."),
        code(FINISH),
    ]
    return notebook(cells)


NOTEBOOKS = {"step1_request_scaling.ipynb": step1, "step2_gpu_scaling.ipynb": step2,
             "step3_kbins_sensitivity.ipynb": step3}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in NOTEBOOKS.items():
        text = nbformat.writes(build()) + "\n"
        path = HERE / name
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale notebooks (rerun {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
