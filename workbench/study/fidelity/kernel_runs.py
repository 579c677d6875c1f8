"""Replaying LLMServingSim's measured vLLM 0.19 runs with step times from kernel profiles.

The data (``data/groundtruth/llmservingsim_vllm019/``, MIT, from casys-kaist/LLMServingSim at 5daddb21): two
measured runs (``runs/<GPU>/<model>/``: vLLM's per-request log ``vllm/requests.jsonl``, its engine arguments
``vllm/meta.json``, the cluster as LLMServingSim describes it ``config.json``, and LLMServingSim's own
prediction of the same requests ``outputs/sim.csv``), the per-layer kernel profiles of the GPUs and models,
and the serving configs and workload of two runs whose measurements are not shipped.

A replay takes everything from those files and fits nothing: the requests' queue-entry times and token
counts from ``requests.jsonl``; the engine (vLLM v1: chunked prefill, FCFS, the run's ``max_num_seqs`` and
``max_num_batched_tokens``, blocks of 16 tokens) from ``meta.json``; the KV cache from vLLM's own
``num_gpu_blocks`` when ``meta.json`` has it (minus v1's null block), else as LLMServingSim sizes it
(``serving/core/memory_model.py``: ``mem_size`` GiB x ``mem_util`` minus the weights, in KV bytes per token);
step times from the GPU's kernel profile bundle at the cluster's TP (and expert-parallel degree, with its
link for the collectives), :func:`workbench.sim.kernel_profiles.kernel_profile_model`.  The unshipped runs'
setups are predicted the same way from their ``config.json`` and the workload LLMServingSim replayed
(``workloads/sharegpt-qwen3-300-sps10.csv``: its ``sharegpt-qwen3-32b-300-sps10.jsonl`` reduced to token
counts and arrival times; the Qwen3-30B-A3B file is byte-identical), with the engine settings the data's
README states for the campaign (``max_num_seqs`` 128, ``max_num_batched_tokens`` 2048, chunked prefill).
vLLM 0.19's own defaults that the runs' ``resolved_config`` shows are kept: prefix caching on
(``enable_prefix_caching``) and the full-sequence admission gate (``scheduler_reserve_full_isl``, the
engine's ``reserve_full_isl``).

What a replay leaves out: shared prompt prefixes (the logs carry no token ids to hash; LLMServingSim reports
0-3% of prompt tokens hit on these ShareGPT prompts), so the prefix cache serves only a preempted request's
own blocks when it is admitted again; and, for the data-parallel MoE run (its two ranks share a ``dp_group``
and run in lock step, ``SimConfig.dp_lockstep``: every rank runs each step, an idle one a dummy step, padded to
the group's largest token count), the rounding of that count up to a CUDA-graph capture size.

Where the runs are found (:func:`campaign_dirs`): the project's copy, the folders of the environment variable
``WORKBENCH_LLMSERVINGSIM_DIRS``, the shared reference folder beside the project when it is there, or a
``data_dir`` passed in.  A run is *measured* when its ``runs/<GPU>/<model>/vllm/requests.jsonl`` is in one of
them (:func:`measured_run_names`), *predicted* when only its ``configs_of_unshipped_runs/<GPU>/<model>/
config.json`` is (:func:`predicted_run_names`).  So the measurements of the two unshipped runs, added in the
campaign's layout (``vllm/requests.jsonl``, ``vllm/meta.json``, ``config.json``, optionally
``outputs/sim.csv``), are replayed and scored by the same code, with nothing changed.

:func:`fidelity_table` returns the side-by-side comparison a notebook draws (measured / LLMServingSim /
workbench) of every measured run, :func:`prediction_table` the predictions of the runs not measured;
``benchmarks/kernel_targets.py`` prints both with the issue's targets.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.paths import REPO_ROOT

DATA_DIR = REPO_ROOT / "data" / "groundtruth" / "llmservingsim_vllm019"
# the project's shared reference material, beside the project root, when it is there: measurements of the campaign
# added to it (its runs/<GPU>/<model>/ folders) are found as they are added to the project's copy
SHARED_DIR = REPO_ROOT.parent / "shared" / "data" / "groundtruth" / "llmservingsim_vllm019"
# more campaign folders of the same layout (runs/, kernel_profiles/, model_configs/), separated by os.pathsep
DIRS_ENV = "WORKBENCH_LLMSERVINGSIM_DIRS"
# the runs the workbench ships measured (the roofline fit may use these and no others) and the two whose
# measurements it does not ship (their configs and workload only)
SHIPPED_RUNS = ("RTX4090/Llama-3.1-8B", "RTXPRO6000/Llama-3.1-8B")
UNSHIPPED_RUNS = ("RTXPRO6000/Qwen3-32B", "RTXPRO6000/Qwen3-30B-A3B-Instruct-2507")
# the workload LLMServingSim replayed for a run whose measurements are not at hand
UNSHIPPED_WORKLOAD = "sharegpt-qwen3-300-sps10.csv"
# the campaign's engine settings, as the data's README states them (for the runs without a meta.json)
CAMPAIGN_MAX_NUM_SEQS = 128
CAMPAIGN_MAX_BATCHED_TOKENS = 2048
BLOCK_SIZE = 16
GIB = 2**30
METRICS = ("ttft_s", "tpot_s", "e2e_s")


# ---------------------------------------------------------------- reading the files
def read_vllm_requests(path) -> pd.DataFrame:
    """vLLM's per-request log (``requests.jsonl``: input_toks, output_toks, queued_ts, first_token_ts,
    last_token_ts, engine clock in seconds) as ``arrival_s`` (queue entry, from the first), ``prompt_tokens``,
    ``output_tokens``, ``ttft_s``, ``tpot_s`` and ``e2e_s``, as the data's README defines them."""
    path = checks.existing_file(path, "requests", what="vLLM requests.jsonl")
    rows = []
    for i, line in enumerate(checks.read_text(path, what="vLLM requests.jsonl").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {i + 1}: not JSON ({e})") from None
    df = pd.DataFrame(rows)
    needed = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")
    missing = [c for c in needed if c not in df.columns]
    if missing or df.empty:
        raise ValueError(f"{path}: needs the fields {', '.join(needed)} on every line (missing: "
                         f"{', '.join(missing) or 'no lines'})")
    queued = df["queued_ts"].to_numpy(np.float64)
    first = df["first_token_ts"].to_numpy(np.float64)
    last = df["last_token_ts"].to_numpy(np.float64)
    output = df["output_toks"].to_numpy(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (last - first) / np.maximum(output - 1, 1), np.nan)
    return pd.DataFrame({"arrival_s": queued - queued.min(), "prompt_tokens": df["input_toks"].to_numpy(np.int64),
                         "output_tokens": output, "ttft_s": first - queued, "tpot_s": tpot, "e2e_s": last - queued})


def read_llmservingsim_output(path) -> pd.DataFrame:
    """LLMServingSim's per-request prediction (``sim.csv``, nanoseconds) as ``ttft_s``, ``tpot_s``, ``e2e_s``."""
    path = checks.existing_file(path, "sim_csv", what="LLMServingSim sim.csv")
    df = pd.read_csv(path)
    for c in ("TTFT", "TPOT", "latency"):
        if c not in df.columns:
            raise ValueError(f"{path}: no column {c!r} (LLMServingSim's sim.csv has TTFT, TPOT, latency)")
    return pd.DataFrame({"ttft_s": df["TTFT"] * 1e-9, "tpot_s": df["TPOT"] * 1e-9, "e2e_s": df["latency"] * 1e-9})


def _json(path: Path) -> dict:
    path = checks.existing_file(path, "path", what="JSON file")
    try:
        return json.loads(checks.read_text(path, what="JSON file"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None


# ---------------------------------------------------------------- a run's setup
@dataclass(frozen=True)
class KernelRun:
    """One run of the campaign, set up for the workbench: the trace, the engine settings, the step model."""

    name: str
    trace: object          # wb.Trace
    config: object         # wb.SimConfig
    step: object           # wb.StepTimeModel (kernel-profile)
    measured: pd.DataFrame | None       # per request (read_vllm_requests), None for an unshipped run
    llmservingsim: pd.DataFrame | None  # LLMServingSim's prediction, per request
    notes: str
    hardware: str = ""     # LLMServingSim's GPU name ("RTXPRO6000")
    model_id: str = ""     # the served model's Hugging Face id ("Qwen/Qwen3-32B")
    tp: int = 1            # tensor-parallel degree of each instance
    ep: int = 1            # expert-parallel degree (a mixture of experts across a data-parallel group)


def _instances(cluster: dict, path: Path) -> list[dict]:
    try:
        return [inst for node in cluster["nodes"] for inst in node["instances"]]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: expected LLMServingSim's cluster config (nodes[].instances[])") from None


def weight_bytes(cfg: dict, *, tp: int = 1, ep: int = 1, bytes_per_value: int = 2) -> float:
    """Bytes of one GPU's share of the weights, from a Hugging Face config (embedding, layers, LM head; experts
    split ``ep`` ways, everything else ``tp`` ways)."""
    h = cfg["hidden_size"]
    v = cfg["vocab_size"]
    layers = cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim", h // heads)
    attn = h * (heads + 2 * kv_heads) * head_dim + heads * head_dim * h
    experts = int(cfg.get("num_local_experts", cfg.get("num_experts", 0)) or 0)
    if experts:
        mlp = experts * 3 * h * cfg.get("moe_intermediate_size", cfg["intermediate_size"]) / ep + h * experts
    else:
        mlp = 3 * h * cfg["intermediate_size"]
    embed = v * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return bytes_per_value * (embed / tp + layers * (attn / tp + mlp / (1 if experts else tp)))


def kv_bytes_per_token(cfg: dict, *, tp: int = 1, bytes_per_value: int = 2) -> float:
    """KV-cache bytes per token on one GPU: keys and values of every layer's KV heads (split ``tp`` ways)."""
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // heads)
    return 2 * cfg["num_hidden_layers"] * max(1, kv_heads // tp) * head_dim * bytes_per_value


def campaign_dirs(data_dir=None) -> list[Path]:
    """The folders searched for runs, kernel profiles, model configs and workloads, in order: ``data_dir`` (a
    folder of the same layout: ``runs/<GPU>/<model>/``, ``kernel_profiles/``, ``model_configs/``, any of them),
    the project's copy (:data:`DATA_DIR`), the folders in the environment variable :data:`DIRS_ENV`, and the
    shared reference folder beside the project (:data:`SHARED_DIR`) when it exists.  A run found in several is
    taken from the first."""
    first = [] if data_dir is None else [checks.existing_dir(data_dir, "data_dir", what="LLMServingSim campaign "
                                                                                       "folder")]
    dirs = first + [DATA_DIR] + [Path(d) for d in os.environ.get(DIRS_ENV, "").split(os.pathsep) if d.strip()]
    dirs += [SHARED_DIR] if SHARED_DIR.is_dir() else []
    out = []
    for d in dirs:
        if d.is_dir() and all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


MEASURED = "runs/*/*/vllm/requests.jsonl"                   # a measured run's requests
CONFIGURED = "configs_of_unshipped_runs/*/*/config.json"     # a run known by its serving config only


def _run_folders(dirs: list[Path], pattern: str) -> dict[str, Path]:
    found = {}
    for d in dirs:
        for path in sorted(d.glob(pattern)):
            folder = path.parent if path.parent.name != "vllm" else path.parent.parent
            found.setdefault(f"{folder.parent.name}/{folder.name}", folder)
    return found


def measured_run_names(data_dir=None) -> tuple[str, ...]:
    """Every measured run in the campaign folders (:func:`campaign_dirs`): ``runs/<GPU>/<model>/`` with vLLM's
    ``vllm/requests.jsonl``, as ``"<GPU>/<model>"``.  Measurements of the unshipped runs, once added to a campaign
    folder in the same layout, are found here and replayed like the shipped ones."""
    return tuple(_run_folders(campaign_dirs(data_dir), MEASURED))


def predicted_run_names(data_dir=None) -> tuple[str, ...]:
    """The runs with a serving config but no measurements in any campaign folder (``configs_of_unshipped_runs/
    <GPU>/<model>/config.json``): predicted from their configs, kernel profiles and LLMServingSim's workload."""
    dirs = campaign_dirs(data_dir)
    measured = _run_folders(dirs, MEASURED)
    return tuple(n for n in _run_folders(dirs, CONFIGURED) if n not in measured)


def _locate(run: str, dirs: list[Path]) -> tuple[Path, bool]:
    """The run's folder and whether it is measured (a measured run wins over a config-only one)."""
    measured = _run_folders(dirs, MEASURED)
    if run in measured:
        return measured[run], True
    configured = _run_folders(dirs, CONFIGURED)
    if run in configured:
        return configured[run], False
    checks.choice(run, "run", tuple(measured) + tuple(configured))   # names the closest known runs
    raise AssertionError("unreachable")


def _find(dirs: list[Path], pattern: str, what: str) -> Path:
    for d in dirs:
        matches = sorted(d.glob(pattern))
        if matches:
            return matches[0]
    raise FileNotFoundError(f"no {what} ({pattern}) in the campaign folders {', '.join(map(str, dirs))}")


def run_setup(run: str, data_dir=None) -> KernelRun:
    """The trace, engine settings and kernel-profile step model of a run (``"RTX4090/Llama-3.1-8B"``: a measured
    run of :func:`measured_run_names` or a configured one of :func:`predicted_run_names`), from the files alone
    (module docstring)."""
    from workbench.sim.config import SimConfig
    from workbench.sim.steptime import StepTimeModel
    from workbench.traces.trace import Trace

    checks.instance(run, "run", str, expected='a run name such as "RTX4090/Llama-3.1-8B"')
    dirs = campaign_dirs(data_dir)
    folder, is_measured = _locate(run, dirs)
    hardware, model = run.split("/")
    cluster_path = folder / "config.json"
    cluster = _json(cluster_path)
    instances = _instances(cluster, cluster_path)
    inst = instances[0]
    tp = int(inst.get("tp_size", 1))
    ep = int(inst.get("ep_size", 1) or 1)
    bundle = _find(dirs, f"kernel_profiles/{hardware}/*/{model}/bf16",
                   f"kernel profile bundle of {model} on {hardware}")
    step = StepTimeModel.from_kernel_profiles(
        bundle, tp=tp, ep=ep, link_bw_gbs=float(cluster["link_bw"]),
        link_latency_s=float(cluster["link_latency"]) * 1e-9)
    model_cfg = _json(_find(dirs, f"model_configs/*/{model}.json", f"config.json of {model}"))
    notes = []
    if is_measured:
        measured = read_vllm_requests(folder / "vllm" / "requests.jsonl")
        sim_csv = folder / "outputs" / "sim.csv"
        theirs = read_llmservingsim_output(sim_csv) if sim_csv.is_file() else None
        meta = _json(folder / "vllm" / "meta.json")
        engine = meta.get("engine_kwargs", {})
        max_num_seqs = int(engine.get("max_num_seqs", CAMPAIGN_MAX_NUM_SEQS))
        max_tokens = int(engine.get("max_num_batched_tokens", CAMPAIGN_MAX_BATCHED_TOKENS))
        blocks = (meta.get("kv_cache") or {}).get("num_gpu_blocks")
        caching = bool((meta.get("kv_cache") or {}).get("enable_prefix_caching", True))
        trace = Trace.from_arrays(measured["arrival_s"], measured["prompt_tokens"], measured["output_tokens"],
                                     source=f"vLLM 0.19 run {run} (LLMServingSim bench)")
    else:
        measured = theirs = None
        max_num_seqs, max_tokens, blocks, caching = CAMPAIGN_MAX_NUM_SEQS, CAMPAIGN_MAX_BATCHED_TOKENS, None, True
        if run not in UNSHIPPED_RUNS:
            raise ValueError(f"run {run!r}: no measurements ({folder.parent.parent.parent / 'runs' / run}/vllm/"
                             f"requests.jsonl) and no workload known for it: a configured run is replayed on "
                             f"LLMServingSim's workload {UNSHIPPED_WORKLOAD}, which is that of "
                             f"{', '.join(UNSHIPPED_RUNS)}")
        work = pd.read_csv(_find(dirs, f"workloads/{UNSHIPPED_WORKLOAD}", "LLMServingSim workload"))
        trace = Trace.from_arrays(work["arrival_time_ns"] * 1e-9, work["input_toks"], work["output_toks"],
                                     source=f"LLMServingSim workload of {run} (unshipped run)")
        notes.append(f"engine settings from the campaign README (max_num_seqs {max_num_seqs}, "
                     f"max_num_batched_tokens {max_tokens})")
    if blocks:
        kv_blocks = int(blocks) - 1   # vLLM v1's null block (continuous_engine rule 7)
        notes.append(f"KV cache: vLLM's num_gpu_blocks {blocks}")
    else:
        mem = inst["npu_mem"]
        free = mem["mem_size"] * GIB * mem["mem_util"] - weight_bytes(model_cfg, tp=tp, ep=ep)
        kv_blocks = int(free // kv_bytes_per_token(model_cfg, tp=tp)) // BLOCK_SIZE
        notes.append(f"KV cache: {mem['mem_size']} GiB x {mem['mem_util']} less the weights ({kv_blocks:,} blocks)")
    groups = {inst.get("dp_group") for inst in instances}
    lockstep = len(instances) > 1 and len(groups) == 1 and None not in groups   # one data-parallel group
    if len(instances) > 1:
        notes.append(f"{len(instances)} data-parallel ranks {'in lock step' if lockstep else 'as independent replicas'}"
                     " (least_outstanding)")
    cfg = SimConfig(scheduler="continuous_fcfs", num_gpus=len(instances), chunked_prefill=True, reserve_full_isl=True,
                       max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens, block_size=BLOCK_SIZE,
                       kv_blocks=kv_blocks, router="least_outstanding", prefix_caching=caching,
                       dp_lockstep=lockstep)
    return KernelRun(name=run, trace=trace, config=cfg, step=step, measured=measured, llmservingsim=theirs,
                     notes="; ".join(notes), hardware=hardware, model_id=str(inst.get("model_name", model)), tp=tp,
                     ep=ep)


def replay(setup: KernelRun, step=None) -> tuple[pd.DataFrame, float]:
    """Simulate the run (with its own kernel-profile model, or ``step``): per-request TTFT/TPOT/E2E in trace
    order, and the wall time of ``simulate`` in seconds."""
    from workbench.sim.simulate import simulate
    from workbench.sim.simulate import SlaScaleWarning

    t0 = time.perf_counter()
    with warnings.catch_warnings():   # the SLA fields do not enter a replay: their scale is not checked
        warnings.simplefilter("ignore", SlaScaleWarning)
        res = simulate(setup.trace, setup.config, latency=setup.step if step is None else step)
    wall = time.perf_counter() - t0
    c = res.continuous
    return pd.DataFrame({m: c[m] for m in METRICS}), wall


def _stats(df: pd.DataFrame) -> dict:
    out = {}
    for m in METRICS:
        x = df[m].to_numpy(np.float64)
        x = x[np.isfinite(x)]
        out[(m, "mean")] = float(x.mean())
        out[(m, "p50")] = float(np.percentile(x, 50))
        out[(m, "p90")] = float(np.percentile(x, 90))
    return out


# LLMServingSim's own simulation times of the shipped runs (the data's README: 396 s and 157 s for 300 requests)
LLMSERVINGSIM_SIM_S = {"RTX4090/Llama-3.1-8B": 396.0, "RTXPRO6000/Llama-3.1-8B": 157.0}


def fidelity_table(runs=None, data_dir=None, *, linear_summary: bool = False) -> pd.DataFrame:
    """Measured vs LLMServingSim vs workbench (kernel-profile step table), one row per run, metric (ttft_s,
    tpot_s, e2e_s) and statistic (mean, p50, p90), in seconds, with the relative errors of both simulators, and
    per run a ``sim_time_s`` row (simulation wall time; LLMServingSim's from the data's README).  ``runs``: run
    names, default every measured run of the campaign folders (:func:`measured_run_names`: the shipped ones and
    any measurements added since); a run without LLMServingSim's ``outputs/sim.csv`` has NaN in its columns.
    With ``linear_summary``, a column ``workbench_linear`` replays the same run with the table's least-squares
    linear summary instead (the issue's naive route)."""
    import dataclasses

    known = measured_run_names(data_dir)
    rows = []
    for run in checks.names(known if runs is None else runs, "runs", allowed=known):
        setup = run_setup(run, data_dir)
        mine, wall = replay(setup)
        measured, ours = _stats(setup.measured), _stats(mine)
        theirs = _stats(setup.llmservingsim) if setup.llmservingsim is not None else {}
        lin = None
        if linear_summary:
            lin_df, _ = replay(setup, dataclasses.replace(setup.step, table=None,
                                                          name=setup.step.name + " linear summary"))
            lin = _stats(lin_df)
        for (metric, stat), value in measured.items():
            row = {"run": run, "metric": metric, "statistic": stat, "measured": value,
                   "llmservingsim": theirs.get((metric, stat), np.nan), "workbench": ours[(metric, stat)]}
            if lin is not None:
                row["workbench_linear"] = lin[(metric, stat)]
            rows.append(row)
        rows.append({"run": run, "metric": "sim_time_s", "statistic": "wall", "measured": np.nan,
                     "llmservingsim": LLMSERVINGSIM_SIM_S.get(run, np.nan), "workbench": wall})
    df = pd.DataFrame(rows)
    for col in ("llmservingsim", "workbench") + (("workbench_linear",) if linear_summary else ()):
        df[f"{col}_error"] = df[col] / df["measured"] - 1
    df["workbench_model"] = "kernel-profile"
    return df


def prediction_table(runs=UNSHIPPED_RUNS, data_dir=None) -> pd.DataFrame:
    """The unshipped runs (or ``runs``) predicted from their configs and kernel profiles (nothing tuned to any
    run): mean, p50 and p90 of TTFT, TPOT and E2E in seconds, and the simulation's wall time.  A run whose
    measurements have been added to a campaign folder is set up from them (its own engine settings and
    requests), as :func:`fidelity_table` replays it."""
    rows = []
    known = measured_run_names(data_dir) + predicted_run_names(data_dir)
    for run in checks.names(runs, "runs", allowed=known):
        setup = run_setup(run, data_dir)
        mine, wall = replay(setup)
        for (metric, stat), value in _stats(mine).items():
            rows.append({"run": run, "metric": metric, "statistic": stat, "workbench": value})
        rows.append({"run": run, "metric": "sim_time_s", "statistic": "wall", "workbench": wall})
    df = pd.DataFrame(rows)
    df["workbench_model"] = "kernel-profile"
    return df
