"""Measured runs made by the engine from a known step-time model: the proof that calibration recovers it.

A serving benchmark drives a server with a workload in load stages and records each request's times.
:func:`benchmark_workload` builds such a workload (Poisson arrivals at a rate per stage; prompts either
distinct or drawn from a set of distinct prompts each sent many times, as chat benchmarks with a few
system prompts do; log-normal prompt and output lengths), and :func:`measured_run` plays it through the
continuous engine with a hidden :class:`~workbench.sim.steptime.StepTimeModel` and adds measurement noise
(each request's TTFT and decode time times ``1 + noise * N(0, 1)``, independently), then reads the result
back through :func:`wb.load_serving_log <workbench.traces.serving_log.load_serving_log>` (from a DataFrame
with a ``prompt_id`` column, as a user would), so the run is exactly what a user's log would give.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench import checks


def benchmark_workload(rates_rps, requests_per_stage: int, *, distinct_prompts: int | None = None,
                       prompt_mean: float = 800.0, output_mean: float = 200.0, sigma: float = 0.6,
                       max_prompt: int = 4000, max_output: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A benchmark's requests (request_id, arrival_s, prompt_tokens, output_tokens, prompt_id): one stage per rate
    in ``rates_rps``, ``requests_per_stage`` Poisson arrivals each; with ``distinct_prompts`` the prompts are
    drawn (uniformly) from that many distinct prompts, each with its own length, else every prompt is its own."""
    rates = checks.numbers(rates_rps, "rates_rps", low=0)
    if any(r <= 0 for r in rates):
        raise ValueError(f"rates_rps: every stage's rate must be > 0 requests/s, got {list(rates)}")
    n_stage = checks.integer(requests_per_stage, "requests_per_stage", low=1)
    rng = np.random.default_rng(checks.integer(seed, "seed", low=0))
    gaps = np.concatenate([rng.exponential(1.0 / rate, n_stage) for rate in rates])
    arrival = np.cumsum(gaps) - gaps[0]
    n = arrival.size

    def lengths(mean: float, size: int, top: int) -> np.ndarray:
        mu = np.log(mean) - sigma ** 2 / 2           # a log-normal with this mean
        return np.clip(np.round(rng.lognormal(mu, sigma, size)), 1, top).astype(np.int64)

    if distinct_prompts is None:
        prompt_id = np.arange(n)
        prompt = lengths(prompt_mean, n, max_prompt)
    else:
        k = checks.integer(distinct_prompts, "distinct_prompts", low=1)
        prompt_id = rng.integers(0, k, n)
        prompt = lengths(prompt_mean, k, max_prompt)[prompt_id]
    output = lengths(output_mean, n, max_output)
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": arrival, "prompt_tokens": prompt,
                         "output_tokens": output, "prompt_id": prompt_id})


def measured_run(workload: pd.DataFrame, cfg, truth, *, noise: float = 0.05, seed: int = 0, name: str = "synthetic"):
    """The run a server timed by ``truth`` would have logged for ``workload`` under ``cfg`` (module docstring)."""
    from workbench.sim.simulate import simulate
    from workbench.traces.serving_log import load_serving_log

    noise = checks.number(noise, "noise", low=0, high=0.5)
    rng = np.random.default_rng(checks.integer(seed, "seed", low=0))
    shape = workload.assign(ttft_s=1.0, tpot_s=np.nan, e2e_s=1.0)
    shape.loc[shape.output_tokens > 1, ["ttft_s", "tpot_s", "e2e_s"]] = [1.0, 0.0, 1.0]
    trace = load_serving_log(shape, config=cfg, name=name).trace      # the prefix hashes a user's log would give
    res = simulate(trace, cfg, latency=truth).requests
    if (res["status"] != "completed").any():
        raise ValueError(f"measured_run: {int((res['status'] != 'completed').sum())} requests not served under cfg "
                         "(a measured run serves every request); give cfg more kv_blocks")
    ttft = res["ttft_s"].to_numpy() * (1 + noise * rng.standard_normal(len(res)))
    decode = (res["e2e_s"] - res["ttft_s"]).to_numpy() * (1 + noise * rng.standard_normal(len(res)))
    ttft, decode = np.maximum(ttft, 1e-6), np.maximum(decode, 0.0)
    out = trace.output_tokens
    frame = pd.DataFrame({"request_id": np.arange(len(trace)), "arrival_s": trace.arrival_s,
                          "prompt_tokens": trace.prompt_tokens, "output_tokens": out, "ttft_s": ttft,
                          "tpot_s": np.where(out > 1, decode / np.maximum(out - 1, 1), np.nan),
                          "e2e_s": ttft + decode,
                          "prompt_id": workload.sort_values("arrival_s", kind="stable")["prompt_id"].to_numpy()})
    return load_serving_log(frame, config=cfg, name=name)


__all__ = ["benchmark_workload", "measured_run"]
