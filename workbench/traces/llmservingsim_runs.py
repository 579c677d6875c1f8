"""LLMServingSim's measured vLLM 0.19 runs (``data/groundtruth/llmservingsim_vllm019/runs/<GPU>/<model>/``) as
:class:`~workbench.traces.serving_log.ServingLog`s.

A run folder holds ``vllm/requests.jsonl`` (one request a line: ``input_toks``, ``output_toks``, and the engine's
monotonic ``queued_ts``, ``first_token_ts``, ``last_token_ts`` in seconds), ``vllm/meta.json`` (the engine
arguments; the RTX 4090 run also its ``kv_cache.num_gpu_blocks``) and ``config.json`` (the cluster as
LLMServingSim describes it: GPU, memory, ``mem_util``).  As the folder's README defines them: TTFT =
``first_token_ts - queued_ts``, E2E = ``last_token_ts - queued_ts``, TPOT = ``(last - first) / (output - 1)``,
arrivals = ``queued_ts`` from the first.

The run's SimConfig is vLLM 0.19's scheduling (``continuous_fcfs`` with chunked prefill, as vLLM v1 runs) with
the run's ``max_num_seqs``, ``max_num_batched_tokens`` and ``block_size``; its KV blocks are the run's own
``num_gpu_blocks`` where meta.json records it, else derived from the model and GPU as vLLM does
(:func:`workbench.hardware.roofline.kv_blocks` with the run's ``mem_util``), which ``kv_blocks_source`` says.
The run's prompts carry no prefix hashes, so prefix caching (on in the run) has nothing to reuse here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.paths import DATA_DIR
from workbench.traces.serving_log import MEASURED, ServingLog
from workbench.traces.trace import Trace, TraceFormatError

RUNS_DIR = DATA_DIR / "groundtruth" / "llmservingsim_vllm019" / "runs"
# LLMServingSim's hardware names -> the GPU catalogue's
GPUS = {"RTX4090": "rtx-4090", "RTXPRO6000": "rtx-pro-6000"}


def run_folders() -> list[Path]:
    """The shipped run folders (``runs/<GPU>/<model>``)."""
    return sorted(p.parent.parent for p in RUNS_DIR.glob("*/*/vllm/requests.jsonl"))


def load_llmservingsim_run(folder) -> ServingLog:
    """One LLMServingSim run folder as a ServingLog (``name`` = ``<GPU>/<model>``; ``setup`` holds the run's
    model, GPU, tp, and where its KV blocks come from)."""
    from workbench.hardware.catalog import get_model_arch
    from workbench.hardware.roofline import kv_blocks
    from workbench.sim.config import SimConfig

    folder = Path(checks.path(folder, "folder", expected="an LLMServingSim run folder"))
    requests = folder / "vllm" / "requests.jsonl"
    if not requests.is_file():
        raise FileNotFoundError(f"{folder}: no vllm/requests.jsonl (an LLMServingSim run folder has vllm/requests.jsonl, "
                                f"vllm/meta.json and config.json; the shipped ones: "
                                f"{', '.join(str(p.relative_to(RUNS_DIR)) for p in run_folders())})")
    rows = [json.loads(line) for line in checks.read_text(requests, what="requests.jsonl").splitlines() if line.strip()]
    if not rows:
        raise TraceFormatError(f"{requests}: no requests")
    frame = pd.DataFrame(rows)
    for column in ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts"):
        if column not in frame:
            raise TraceFormatError(f"{requests}: no '{column}' field")
    meta = json.loads(checks.read_text(folder / "vllm" / "meta.json", what="meta.json"))
    cluster = json.loads(checks.read_text(folder / "config.json", what="config.json"))
    instance = cluster["nodes"][0]["instances"][0]
    engine = meta["engine_kwargs"]
    arrival = frame.queued_ts.to_numpy(float) - float(frame.queued_ts.min())
    order = np.argsort(arrival, kind="stable")
    frame, arrival = frame.iloc[order].reset_index(drop=True), arrival[order]
    out = frame.output_toks.to_numpy(np.int64)
    ttft = frame.first_token_ts.to_numpy(float) - frame.queued_ts.to_numpy(float)
    e2e = frame.last_token_ts.to_numpy(float) - frame.queued_ts.to_numpy(float)
    tpot = np.where(out > 1, (e2e - ttft) / np.maximum(out - 1, 1), np.nan)
    name = f"{folder.parent.name}/{folder.name}"
    trace = Trace.from_arrays(arrival, frame.input_toks.to_numpy(np.int64), out, source=f"measured run {name}")
    measured = pd.DataFrame({"request_id": np.arange(len(frame), dtype=np.int64), "ttft_s": ttft, "tpot_s": tpot,
                             "e2e_s": e2e})[["request_id", *MEASURED]]
    model = get_model_arch(str(meta["model"]).split("/")[-1]).name
    gpu = GPUS[instance["hardware"]]
    tp = int(engine.get("tensor_parallel_size") or 1)
    max_num_seqs = int(engine.get("max_num_seqs") or 256)
    max_tokens = int(engine.get("max_num_batched_tokens") or 2048)
    cache = meta.get("kv_cache") or {}
    block_size = int(cache.get("block_size") or 16)
    if cache.get("num_gpu_blocks"):
        blocks, blocks_source = int(cache["num_gpu_blocks"]), "measured: vllm/meta.json kv_cache.num_gpu_blocks"
    else:
        utilization = float(instance["npu_mem"].get("mem_util") or 0.9)
        blocks = kv_blocks(model, gpu, tp=tp, block_size=block_size, gpu_memory_utilization=utilization,
                           max_num_batched_tokens=max_tokens, max_num_seqs=max_num_seqs)
        blocks_source = (f"derived as vLLM does (workbench.hardware.roofline.kv_blocks, gpu_memory_utilization "
                         f"{utilization:g} from config.json): meta.json does not record num_gpu_blocks")
    config = SimConfig(scheduler="continuous_fcfs", num_gpus=1, chunked_prefill=True, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_tokens, block_size=block_size, kv_blocks=blocks)
    setup = {"model": model, "gpu": gpu, "tp": tp, "kv_blocks_source": blocks_source,
             "vllm_version": meta.get("vllm_version"), "source": str(folder)}
    return ServingLog(name, requests, trace, measured, config, setup)


def llmservingsim_prediction(folder) -> pd.DataFrame:
    """LLMServingSim's own prediction of a run (``outputs/sim.csv``, nanoseconds -> seconds): ttft_s, tpot_s,
    e2e_s per request, in the order of :func:`load_llmservingsim_run`'s trace."""
    folder = Path(folder)
    sim = pd.read_csv(folder / "outputs" / "sim.csv")
    columns = {c.lower(): c for c in sim.columns}
    need = ("arrival", "latency", "ttft", "tpot")
    missing = [c for c in need if c not in columns]
    if missing:
        raise TraceFormatError(f"{folder}/outputs/sim.csv: no column(s) {', '.join(missing)}")
    sim = sim.sort_values(columns["arrival"], kind="stable").reset_index(drop=True)
    return pd.DataFrame({"ttft_s": sim[columns["ttft"]].to_numpy(float) * 1e-9,
                         "tpot_s": sim[columns["tpot"]].to_numpy(float) * 1e-9,
                         "e2e_s": sim[columns["latency"]].to_numpy(float) * 1e-9})


__all__ = ["RUNS_DIR", "llmservingsim_prediction", "load_llmservingsim_run", "run_folders"]
