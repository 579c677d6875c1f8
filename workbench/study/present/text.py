"""Sentences the notebooks, the figures and ``index.html`` share, so each thing is said one way.

* :func:`scheduler_sentence`: one sentence per scheduler (a scheduler registered
  later gets the first sentence of its class docstring until a line is added to
  :data:`SCHEDULER_SENTENCES`);
* :func:`schedulers_markdown`: the bullet list a notebook shows for the
  schedulers it runs;
* :func:`floor_sentence`: the share of requests no load can bring within the SLA
  (the figures draw it as the "floor"; the capacity search computes it as
  ``1 - capacity_attainable``): always said as a floor, never as its complement;
* :func:`join_and`: "a, b and c";
* :data:`NOTEBOOK_TITLES`: each notebook of the study by its title (the suite's summary, ``index.html``'s links);
* :func:`natural_key`: labels with numbers in them ("1,000 req", "10,000 req") sorted as the numbers sort.
"""

from __future__ import annotations

import re

SCHEDULER_SENTENCES = {
    "static_fifo": "one FIFO queue; an idle GPU takes up to a fixed batch size (8) of waiting requests and serves "
                   "them to completion.",
    "dynamic_no_bins": "one FIFO queue; the batch size is the smaller of a memory bound and an SLA controller's "
                       "choice (Pang et al.'s Algorithms 1 and 2), adapted after every batch.",
    "multi_bin_dynamic": "requests are split into K equal-mass bins by predicted output length, a batch holds "
                         "requests of one bin only, and each bin has its own memory and SLA controllers.",
    "multi_bin_fixed": "the Multi-Bin Batching paper's model: K bins, batches of exactly the fixed size, served "
                       "first formed, first served (a batch waits until it is full).",
    "continuous_fcfs": "continuous (iteration-level) batching as vLLM does it: requests join and leave the running "
                       "batch every step, FCFS admission under max_num_seqs, the token budget and the KV cache.",
    "continuous_sla": "continuous batching whose running-batch size limit is set by Pang et al.'s Algorithms 1 "
                      "(memory) and 2 (SLA on time per output token).",
    "continuous_multi_bin": "continuous batching admitting from K bins by predicted output length in rounds, so "
                            "the running batch fills with requests of similar length.",
}

# Each notebook of the study (``notebooks/<name>.ipynb``), in the order the suite runs them, by the title the
# suite's summary and index.html's links give it.
NOTEBOOK_TITLES = {
    "step1_request_scaling": "Step 1: request scaling",
    "step2_gpu_scaling": "Step 2: GPU scaling",
    "step3_kbins_sensitivity": "Step 3: K-bins sensitivity",
    "compare_schedulers": "Which scheduler keeps the SLA (every registered scheduler)",
    "validation": "Validation against queueing theory and the MBB model",
    "fidelity_vllm": "Fidelity against measured vLLM runs",
    "fidelity_disagg": "Fidelity of disaggregated serving against measured DistServe runs",
    "prefix_caching": "Prefix caching and cache-aware routing (Mooncake)",
    "disaggregation": "Disaggregated prefill/decode vs colocated serving as the SLO tightens",
    "hardware": "Any model on any GPU: what fits, capacity per GPU and per dollar (roofline, measured, kernel profiles)",
    "fleet_planning": "The cheapest fleet for a load: GPU type, count, TP, colocated or disaggregated",
    "autoscaling": "A day of changing load: a fleet for the peak, a plan per hour, reactive autoscaling",
}


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside ``text`` as numbers: "(seed 42, 10,000 req)" after
    "(seed 42, 2,000 req)", where a plain sort puts "1,000,000" before "10,000"."""
    parts = re.split(r"(\d[\d,]*(?:\.\d+)?)", str(text))
    return tuple((0, float(p.replace(",", "")), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def scheduler_sentence(name: str) -> str:
    """One sentence saying what ``name`` does."""
    if name in SCHEDULER_SENTENCES:
        return SCHEDULER_SENTENCES[name]
    from workbench.sim.schedulers import SCHEDULERS

    doc = " ".join((SCHEDULERS[name].__doc__ or "").split()) if name in SCHEDULERS else ""
    first = re.split(r"(?<=[.;])\s", doc, maxsplit=1)[0] if doc else "(no description)"
    return re.sub(r":\w+:`~?([\w.]+)`", r"\1", first).replace("``", "")


def schedulers_markdown(names) -> str:
    """A markdown bullet per scheduler: its name in bold and what it does."""
    return "\n".join(f"- **{name}**: {scheduler_sentence(name)}" for name in names)


def floor_sentence(floor: float, sla: str = "the SLA") -> str:
    """e.g. "Floor: 1.1% of the requests miss the SLA even alone on an idle GPU: no load brings the violation
    rate below it."  (The same quantity the figures draw as the floor line.)"""
    return (f"Floor: **{floor:.1%}** of the requests miss {sla} even alone on an idle GPU: no load brings the "
            "violation rate below it.")


def join_and(items) -> str:
    """``items`` as a sentence lists them: "a", "a and b", "a, b and c"."""
    items = [str(item) for item in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["NOTEBOOK_TITLES", "SCHEDULER_SENTENCES", "floor_sentence", "join_and", "natural_key",
           "scheduler_sentence", "schedulers_markdown"]
