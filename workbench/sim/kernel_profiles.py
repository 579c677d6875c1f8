"""Step times composed from per-layer kernel profiles, as LLMServingSim composes them.

LLMServingSim (casys-kaist/LLMServingSim, MIT; the shared data comes from commit 5daddb21) times every layer
of one transformer block with vLLM's layerwise profiler on the real GPU and ships the timings as a *bundle*
(``profiler/perf/<GPU>/<model>/<variant>/``: ``meta.yaml`` and ``tp<N>/dense.csv``, ``per_sequence.csv``,
``attention.csv``, ``moe.csv``, ``skew_fit.csv``; schema in its ``profiler/README.md`` and
``docs/docs/profiler/output-bundle.md``).  Its simulator prices one engine step by walking the model's layer
sequence (``serving/core/trace_generator.py::_synthesize_trace``): the prologue (embedding) once, then per
transformer layer the pre-attention layers, attention, the post-attention layers and the MLP (dense layers,
or the MoE block), then the head (final norm, LM head, sampler).  This module follows it:

* dense layers at the step's token count (``_lookup_dense``: 1-D linear interpolation over ``tokens``);
* per-sequence layers (LM head, sampler) at the step's number of requests (``_lookup_per_sequence``;
  ``_build_batch_ctx``: ``lm_head_len = len(batch.requests)``, prefill pieces and decodes);
* attention once per layer at (sum of the prefill chunks, sum of their cached context, number of decodes,
  mean decode context), 4-D multilinear with a nearest-slice fallback (``_lookup_attention``,
  ``_attn_slice_lookup``, ``_build_batch_ctx``), plus the skew correction for decodes of unequal context
  (``_lookup_attention_with_skew``, ``_skew_alpha``: ``t_mean + alpha (t_max - t_mean)``, alpha from the
  bundle's ``skew_fit.csv`` buckets, ``alpha_default`` for a bucket it lacks);
* MoE models: the MoE block per layer at the tokens each expert-parallel rank computes and the experts they
  activate, from ``moe.csv`` (profiled at TP 1, ``_lookup_moe``), with the balanced router's closed form
  (``gate_function.py::GateRouter._balanced_route_ep``: ``min(round(tokens k / ep), E / ep)`` experts,
  ``round(tokens (1 - ((ep - 1) / ep)^k))`` tokens per rank);
* tensor parallelism: the ``tp<N>`` folder's shapes (profiled with per-rank shapes), plus an all-reduce of the
  layer output (``tokens x hidden x 2`` bytes) after ``o_proj`` and ``down_proj``
  (``_TP_ALLREDUCE_AFTER``); expert parallelism: an all-gather before the MoE block (``tokens / ep`` rows of
  ``hidden + experts`` values) and a reduce-scatter after it (``tokens`` rows of ``hidden``)
  (``_emit_moe_block``).  LLMServingSim hands these to ASTRA-Sim's network model with the cluster config's
  ``link_bw`` (GB/s) and ``link_latency``; here they are priced with the ring algorithm's cost (the cluster
  builder's collective implementation is ``ring``, ``config_builder.py``): an all-reduce of ``S`` bytes over
  ``p`` ranks takes ``2 (p - 1) (latency + S / (p bw))``, an all-gather of ``S`` bytes per rank
  ``(p - 1) (latency + S / bw)``, a reduce-scatter of ``S`` bytes ``(p - 1) (latency + S / (p bw))``.

Eager profiles, CUDA-graph runs.  The bundles were profiled with ``enforce_eager: true`` (``meta.yaml``;
``profiler/core/config.py::HOST_ENGINE_DEFAULTS``: "Disable CUDA graphs so every launch is an independently
timeable event. layerwise_profile requires this"), while the measured vLLM 0.19 runs used CUDA graphs
(``cudagraph_mode`` FULL_AND_PIECEWISE).  What is timed is each module's *CUDA kernel time*
(``profiler/core/hooks/timings.py::extract_samples`` reads ``cuda_time_us`` of the layerwise-profile tree),
not wall time: the CPU launch gaps that make an eager step slower than its kernels are not in the
numbers.  A step priced as the sum of its kernels is therefore the step as a CUDA graph replays it (no
launch gaps), which is how LLMServingSim uses the bundles (it adds nothing for launches) and how it is used
here: no correction is applied, and none is fitted.  (The measured runs also used async scheduling, so the
CPU's scheduling work overlaps the GPU's.)

The numbers are summed as LLMServingSim sums them, with two differences that move a step by well under a
microsecond: it rounds every layer to whole nanoseconds, and it looks attention up at the *floor* of the
mean decode context (``sum // n``) where the exact mean is used here (needed for the closed form of a run of
decode steps, see :mod:`workbench.sim.steptable`).  Everything is tabulated once, outside the compiled
engine: the token table at every whole token count up to the dense grid's end (dense and MoE layers, all
layers, collectives), the sequence table on the per-sequence grid, attention of all layers on the union of
the bundle's grids (exact: LLMServingSim's lookup is linear between its own grid points, and a bilinear
function sampled on a finer grid is reproduced by bilinear interpolation on it).

Bad input: a bundle folder without ``meta.yaml`` or without the ``tp<N>`` folder asked for, a missing CSV or
layer, a CSV with a missing column or a non-numeric/negative time, a model config missing a field: each is
refused with what is missing and where.  A run that forms steps outside the profiled grid (a chunk longer
than profiled, a context past ``max_kv``, more decodes than profiled) is refused after it with how far it
went (:meth:`workbench.sim.steptable.StepTable.check_seen`), unless ``allow_extrapolation=True``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.steptable import SkewTable, StepTable, linear_summary

log = logging.getLogger(__name__)

# The layer sequences of LLMServingSim's architecture catalogs (profiler/models/<model_type>.yaml, `sequence:`),
# keyed by the Hugging Face config's model_type.  Layers of the per_sequence category are listed in PER_SEQUENCE;
# "attention" and "moe" are their own categories; every other layer is dense.
ARCHITECTURES = {
    "llama": {"prologue": ["embedding"], "pre_attn": ["layernorm", "qkv_proj", "rotary_emb", "attention"],
              "post_attn": ["o_proj", "layernorm"], "mlp_dense": ["gate_up_proj", "act_fn", "down_proj"],
              "mlp_moe": [], "head": ["final_layernorm", "lm_head", "sampler"]},
    "qwen3": {"prologue": ["embedding"], "pre_attn": ["layernorm", "qkv_proj", "qk_norm", "rotary_emb", "attention"],
              "post_attn": ["o_proj", "layernorm"], "mlp_dense": ["gate_up_proj", "act_fn", "down_proj"],
              "mlp_moe": [], "head": ["final_layernorm", "lm_head", "sampler"]},
    "qwen3_moe": {"prologue": ["embedding"],
                  "pre_attn": ["layernorm", "qkv_proj", "qk_norm", "rotary_emb", "attention"],
                  "post_attn": ["o_proj", "layernorm"], "mlp_dense": [], "mlp_moe": ["moe"],
                  "head": ["final_layernorm", "lm_head", "sampler"]},
    "mixtral": {"prologue": ["embedding"], "pre_attn": ["layernorm", "qkv_proj", "rotary_emb", "attention"],
                "post_attn": ["o_proj", "layernorm"], "mlp_dense": [], "mlp_moe": ["moe"],
                "head": ["final_layernorm", "lm_head", "sampler"]},
    "phimoe": {"prologue": ["embedding"], "pre_attn": ["layernorm", "qkv_proj", "rotary_emb", "attention"],
               "post_attn": ["o_proj", "layernorm"], "mlp_dense": [], "mlp_moe": ["moe"],
               "head": ["final_layernorm", "lm_head", "sampler"]},
}
PER_SEQUENCE = ("lm_head", "sampler")
TP_ALLREDUCE_AFTER = ("o_proj", "down_proj")   # trace_generator.py::_TP_ALLREDUCE_AFTER
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}
_COLUMNS = {"dense.csv": ("layer", "tokens", "time_us"), "per_sequence.csv": ("layer", "sequences", "time_us"),
            "attention.csv": ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"),
            "moe.csv": ("tokens", "activated_experts", "time_us"),
            "skew_fit.csv": ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha")}


# ---------------------------------------------------------------- reading
def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"kernel profile bundle {path.parent}: no meta.yaml there (the bundle's variant "
                                "folder, e.g. .../RTXPRO6000/meta-llama/Llama-3.1-8B/bf16, holds meta.yaml and "
                                "tp<N>/)")
    with open(path, encoding="utf-8") as f:
        meta = yaml.safe_load(f)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(meta).__name__}")
    return meta


def _read_csv(path: Path) -> pd.DataFrame:
    """A bundle CSV with its columns checked: numbers finite, times >= 0."""
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"kernel profile bundle: {path} is missing (a {path.parent.name} folder holds "
                                f"{', '.join(n for n in _COLUMNS if n not in ('moe.csv', 'skew_fit.csv'))}, plus "
                                "moe.csv for MoE models and skew_fit.csv when meta.yaml's skew_fit is enabled)")
    df = pd.read_csv(path)
    missing = [c for c in _COLUMNS[name] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    if df.empty:
        raise ValueError(f"{path}: no rows")
    numeric = [c for c in _COLUMNS[name] if c not in ("layer", "n_label", "skew_rate_label", "kv_big_label",
                                                      "kp_label")]
    for c in numeric:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: column {c} line {i + 2}: {df[c].iloc[i]!r} is not a finite number")
        if c != "alpha" and (values < 0).any():
            i = int(np.flatnonzero((values < 0).to_numpy())[0])
            raise ValueError(f"{path}: column {c} line {i + 2}: {values.iloc[i]:g} is negative")
        df[c] = values
    return df


def read_model_config(path) -> dict:
    """The Hugging Face ``config.json`` facts a kernel-profile model needs (layers, hidden size, experts)."""
    path = checks.existing_file(path, "model_config", what="model config.json")
    try:
        cfg = json.loads(checks.read_text(path, what="model config.json"))
    except json.JSONDecodeError as e:
        raise ValueError(f"model_config: {path} is not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"model_config: {path} must hold a JSON object")
    for key in ("model_type", "num_hidden_layers", "hidden_size"):
        if key not in cfg:
            raise ValueError(f"model_config: {path} has no {key!r} (a Hugging Face config.json has it)")
    if cfg["model_type"] not in ARCHITECTURES:
        raise ValueError(f"model_config: {path}: model_type {cfg['model_type']!r} has no layer sequence here; "
                         f"known: {', '.join(sorted(ARCHITECTURES))} (LLMServingSim's profiler/models/*.yaml)")
    return cfg


def _find_model_config(folder: Path, model: str) -> Path:
    """``model_configs/<org>/<name>.json`` in the bundle's folder or one of its ancestors (the data layout)."""
    for parent in [folder, *folder.parents]:
        candidate = parent / "model_configs" / f"{model}.json"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model_config: no model_configs/{model}.json next to {folder} or above it; pass "
                            "model_config=<path to the model's Hugging Face config.json>")


# ---------------------------------------------------------------- LLMServingSim's interpolation, vectorised
def _bracket_np(grid: np.ndarray, x: np.ndarray):
    """(lo, hi, t) per query, as ``trace_generator.py::_axis_bracket``: the first value below the grid, linear
    inside, extrapolated from the last two above it."""
    x = np.asarray(x, dtype=np.float64)
    n = grid.size
    if n == 1:
        z = np.zeros(x.shape, np.int64)
        return z, z, np.zeros(x.shape)
    idx = np.searchsorted(grid, x, side="right")
    lo = np.clip(idx - 1, 0, n - 2)
    hi = lo + 1
    t = (x - grid[lo]) / (grid[hi] - grid[lo])
    below = x <= grid[0]
    lo = np.where(below, 0, lo)
    hi = np.where(below, 0, hi)
    t = np.where(below, 0.0, t)
    return lo, hi, t


def _interp_np(grid: np.ndarray, values: np.ndarray, x) -> np.ndarray:
    lo, hi, t = _bracket_np(grid, x)
    return values[lo] + t * (values[hi] - values[lo])


def _one_d(df: pd.DataFrame, key: str, layer: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = df[df["layer"] == layer].sort_values(key).drop_duplicates(subset=[key])
    if rows.empty:
        raise ValueError(f"kernel profile bundle: {path} has no rows for layer {layer!r} (its layers: "
                         f"{', '.join(sorted(map(str, df['layer'].unique())))}), which the model's layer sequence "
                         "needs; re-profile it")
    return rows[key].to_numpy(np.float64), rows["time_us"].to_numpy(np.float64) * 1e-6


def _attention_table(df: pd.DataFrame, layers: int):
    """All layers' attention on the union of the bundle's grids (seconds), as ``_lookup_attention`` prices it."""
    cols = [df[c].to_numpy(np.float64) for c in ("prefill_chunk", "n_decode", "kv_prefill", "kv_decode")]
    time_s = df["time_us"].to_numpy(np.float64) * 1e-6
    pc_u, nd_u, kp_u, kv_u = (np.unique(c) for c in cols)
    order = np.lexsort(cols[::-1])            # by pc, then nd, kp, kv; the first of duplicates kept
    pc, nd, kp, kv = (c[order] for c in cols)
    time_s = time_s[order]
    keep = np.ones(order.size, bool)
    keep[1:] = (np.diff(pc) != 0) | (np.diff(nd) != 0) | (np.diff(kp) != 0) | (np.diff(kv) != 0)
    pc, nd, kp, kv, time_s = pc[keep], nd[keep], kp[keep], kv[keep], time_s[keep]
    slices = {}
    starts = np.flatnonzero(np.r_[True, (np.diff(pc) != 0) | (np.diff(nd) != 0)])
    for a, b in zip(starts, np.r_[starts[1:], pc.size]):
        rows_at = np.flatnonzero(np.r_[True, np.diff(kp[a:b]) != 0]) + a
        kps = kp[rows_at]
        rows = []
        for ra, rb in zip(rows_at, np.r_[rows_at[1:], b]):
            keys, vals = kv[ra:rb], time_s[ra:rb]
            rows.append(np.full(kv_u.size, vals[0]) if keys.size == 1 else _interp_np(keys, vals, kv_u))
        rows = np.array(rows)                     # (the slice's kp values, union kv)
        lo, hi, t = _bracket_np(kps, kp_u)
        slices[(float(pc[a]), float(nd[a]))] = rows[lo] + t[:, None] * (rows[hi] - rows[lo])   # (union kp, kv)
    pairs = sorted(slices)
    table = np.empty((pc_u.size, kp_u.size, nd_u.size, kv_u.size))
    for i, p in enumerate(pc_u):
        for k, n in enumerate(nd_u):
            key = (float(p), float(n))
            if key not in slices:   # the closest profiled (pc, nd) pair (_lookup_attention's _corner)
                key = min(pairs, key=lambda q: (q[0] - p) ** 2 + (q[1] - n) ** 2)
            table[i, :, k, :] = slices[key]
    return pc_u, kp_u, nd_u, kv_u, table * layers


def _moe_s(df: pd.DataFrame, tokens: np.ndarray, activated: np.ndarray) -> np.ndarray:
    """The MoE block at these per-rank tokens and activated experts (``_lookup_moe``: rows by activated experts,
    ``_lookup_bounds`` between them, each row 1-D over its own tokens)."""
    ae_vals = np.unique(df["activated_experts"].to_numpy(np.float64))
    rows = []
    for ae in ae_vals:
        g = df[df["activated_experts"] == ae].sort_values("tokens").drop_duplicates(subset=["tokens"])
        rows.append((g["tokens"].to_numpy(np.float64), g["time_us"].to_numpy(np.float64) * 1e-6))
    out = np.empty(tokens.size)
    lo, hi, t = _bracket_np(ae_vals, np.maximum(activated, 1))
    for i, (x, a0, a1, w) in enumerate(zip(np.maximum(tokens, 1), lo, hi, t)):
        v0 = _interp_np(*rows[a0], x)
        out[i] = v0 if a0 == a1 else v0 + w * (_interp_np(*rows[a1], x) - v0)
    return np.where(tokens > 0, out, 0.0)


def _ring(kind: str, size_bytes: np.ndarray, ranks: int, bw_bytes_s: float, latency_s: float) -> np.ndarray:
    """Seconds of a ring collective over ``ranks`` (module docstring)."""
    p = ranks
    if kind == "allreduce":
        return 2 * (p - 1) * (latency_s + size_bytes / (p * bw_bytes_s))
    if kind == "allgather":
        return (p - 1) * (latency_s + size_bytes / bw_bytes_s)
    return (p - 1) * (latency_s + size_bytes / (p * bw_bytes_s))   # reducescatter


# ---------------------------------------------------------------- the model
def kernel_profile_table(folder, *, tp: int = 1, model_config=None, ep: int = 1, link_bw_gbs: float | None = None,
                         link_latency_s: float = 0.0, skew: bool = True,
                         allow_extrapolation: bool = False) -> tuple[StepTable, dict, dict]:
    """The :class:`StepTable` of a bundle (see :func:`kernel_profile_model`), its ``meta.yaml`` and model config."""
    folder = Path(checks.path(folder, "folder", expected="a kernel profile bundle folder"))
    if not folder.is_dir():
        raise FileNotFoundError(f"folder: {folder} is not a folder (a kernel profile bundle's variant folder, "
                                "e.g. data/groundtruth/llmservingsim_vllm019/kernel_profiles/RTXPRO6000/meta-llama/"
                                "Llama-3.1-8B/bf16)")
    tp = checks.integer(tp, "tp", low=1, high=1024)
    ep = checks.integer(ep, "ep", low=1, high=1024)
    skew = checks.boolean(skew, "skew")
    meta = _read_yaml(folder / "meta.yaml")
    tp_dir = folder / f"tp{tp}"
    if not tp_dir.is_dir():
        found = sorted(p.name for p in folder.glob("tp*") if p.is_dir())
        raise FileNotFoundError(f"tp: the bundle {folder} has no tp{tp} folder (profiled: {', '.join(found) or 'none'})")
    model_name = str(meta.get("model", ""))
    if model_config is None:
        if not model_name:
            raise ValueError(f"{folder / 'meta.yaml'} names no model: pass model_config=<path to config.json>")
        model_config = _find_model_config(folder, model_name)
    cfg = read_model_config(model_config)
    arch = ARCHITECTURES[cfg["model_type"]]
    layers = checks.integer(cfg["num_hidden_layers"], "model_config num_hidden_layers", low=1)
    hidden = checks.integer(cfg["hidden_size"], "model_config hidden_size", low=1)
    experts = int(cfg.get("num_local_experts", cfg.get("num_experts", 0)) or 0)
    moe = bool(arch["mlp_moe"])
    if moe and experts < 1:
        raise ValueError(f"model_config: {model_config} is a {cfg['model_type']} (MoE) config without num_experts "
                         "or num_local_experts")
    if ep > 1 and not moe:
        raise ValueError(f"ep: expert parallelism needs an MoE model; {cfg['model_type']} has no experts")
    top_k = max(1, min(int(cfg.get("num_experts_per_tok", 1)), max(experts, 1)))
    variant = str(meta.get("variant", folder.name))
    elem_bytes = BYTES.get(variant.split("-")[0], 2)
    if (tp > 1 or ep > 1) and link_bw_gbs is None:
        raise ValueError(f"link_bw_gbs: tp={tp}, ep={ep} needs the GPUs' link bandwidth for the collectives "
                         "(GB/s; LLMServingSim's cluster config link_bw), and link_latency_s")
    bw = None if link_bw_gbs is None else checks.number(link_bw_gbs, "link_bw_gbs", low=0, low_open=True,
                                                          unit="GB/s", sane_high=1e5,
                                                          sane_hint="the field is in GB/s: NVLink 4 is 900")
    latency = checks.number(link_latency_s, "link_latency_s", low=0, unit="s", sane_high=0.01,
                            sane_hint="the field is in seconds: 20 microseconds is 2e-5")

    dense_path, seq_path, att_path = tp_dir / "dense.csv", tp_dir / "per_sequence.csv", tp_dir / "attention.csv"
    dense = _read_csv(dense_path)
    per_seq = _read_csv(seq_path)
    attention = _read_csv(att_path)

    # tokens: every whole count up to the dense grid's end (exact for the MoE rounding as for the dense layers)
    once = arch["prologue"] + [x for x in arch["head"] if x not in PER_SEQUENCE]
    per_layer = [x for x in arch["pre_attn"] + arch["post_attn"] + arch["mlp_dense"] if x != "attention"]
    grids = {name: _one_d(dense, "tokens", name, dense_path) for name in set(once + per_layer)}
    top = int(max(g[0][-1] for g in grids.values()))
    tokens = np.arange(1, top + 1, dtype=np.float64)
    token_s = np.zeros(tokens.size)
    for name in once:
        token_s += _interp_np(*grids[name], tokens)
    for name in per_layer:
        token_s += layers * _interp_np(*grids[name], tokens)
    parts = ["dense layers"]
    if moe:
        moe_path = folder / "tp1" / "moe.csv"   # profiled at TP 1 only (_lookup_moe)
        moe_df = _read_csv(moe_path)
        hit = 1.0 if ep <= 1 else 1.0 - ((ep - 1) / ep) ** top_k
        local = np.round(tokens * hit)
        activated = np.minimum(np.round(tokens * top_k / ep), max(1, experts // ep))
        token_s += layers * _moe_s(moe_df, local, activated)
        parts.append(f"MoE ({experts} experts, top-{top_k}, ep {ep})")
    if tp > 1:
        n_ar = layers * sum(1 for x in arch["post_attn"] + arch["mlp_dense"] if x in TP_ALLREDUCE_AFTER)
        token_s += n_ar * _ring("allreduce", tokens * hidden * elem_bytes, tp, bw * 1e9, latency)
        parts.append(f"{n_ar} all-reduces per step over tp {tp}")
    if ep > 1:
        gather = np.maximum(1, np.floor(tokens / ep)) * (hidden + experts) * elem_bytes
        scatter = tokens * hidden * elem_bytes
        token_s += layers * (_ring("allgather", gather, ep, bw * 1e9, latency)
                             + _ring("reducescatter", scatter, ep, bw * 1e9, latency))
        parts.append(f"all-gather and reduce-scatter per MoE layer over ep {ep}")

    seq_layers = [x for x in arch["head"] if x in PER_SEQUENCE]
    seq_grids = {name: _one_d(per_seq, "sequences", name, seq_path) for name in seq_layers}
    # every whole count up to the grid's end (exact for whole counts; an evenly spaced grid is looked up directly)
    seq_grid = np.arange(1, int(max(g[0][-1] for g in seq_grids.values())) + 1, dtype=np.float64)
    seq_s = sum(_interp_np(*seq_grids[name], seq_grid) for name in seq_layers)

    pc_u, kp_u, nd_u, kv_u, att = _attention_table(attention, layers)
    skew_table = _skew_table(meta, folder, tp) if skew else None
    source = (f"LLMServingSim kernel profiles {folder} (tp{tp}, vLLM {meta.get('vllm_version', '?')}, "
              f"{meta.get('gpu', meta.get('hardware', '?'))}): {layers} layers of {cfg['model_type']}, "
              + ", ".join(parts) + ", attention"
              + (" with the skew correction" if skew_table is not None else " (no skew correction)"))
    table = StepTable(token_grid=tokens, token_s=token_s, seq_grid=seq_grid, seq_s=seq_s, pc_grid=pc_u,
                      kp_grid=kp_u, nd_grid=nd_u, kv_grid=kv_u, attention_s=att, skew=skew_table,
                      extrapolate=allow_extrapolation, kind="kernel-profile", source=source)
    return table, meta, cfg


def _skew_table(meta: dict, folder: Path, tp: int) -> SkewTable | None:
    """The bundle's skew correction for ``tp`` (``_hydrate_skew_fit_tables``, ``_skew_alpha``), or None when
    ``meta.yaml`` says it was not profiled (LLMServingSim then applies none)."""
    fit = meta.get("skew_fit") or {}
    if not fit.get("enabled"):
        return None
    per_tp = fit.get("per_tp") or {}
    entry = per_tp.get(tp, per_tp.get(str(tp)))
    if not isinstance(entry, dict):
        raise ValueError(f"{folder / 'meta.yaml'}: skew_fit is enabled but has no per_tp entry for tp {tp}; pass "
                         "skew=False to price without the skew correction")
    axes = entry.get("bucket_axes") or fit.get("bucket_axes")
    if not isinstance(axes, dict):
        raise ValueError(f"{folder / 'meta.yaml'}: skew_fit has no bucket_axes")
    path = folder / str(entry.get("bucket_table", f"tp{tp}/skew_fit.csv"))
    df = _read_csv(path)
    default = float(entry.get("alpha_default", 0.0))
    names = (("n_bins", "n_labels", "n_label"), ("skew_rate_bins", "skew_rate_labels", "skew_rate_label"),
             ("kv_big_bins", "kv_big_labels", "kv_big_label"), ("kp_bins", "kp_labels", "kp_label"))
    edges, index = [], []
    for bins, labels, column in names:
        if bins not in axes or labels not in axes or len(axes[labels]) != len(axes[bins]) - 1:
            raise ValueError(f"{folder / 'meta.yaml'}: skew_fit.bucket_axes needs {bins} and {labels} (one label "
                             "per bucket)")
        edges.append(np.asarray(axes[bins], dtype=np.float64))
        lookup = {str(lab): i for i, lab in enumerate(axes[labels])}
        unknown = sorted(set(map(str, df[column])) - set(lookup))
        if unknown:
            raise ValueError(f"{path}: {column} label(s) {', '.join(unknown)} are not among meta.yaml's {labels}")
        index.append(df[column].map(lambda v, lk=lookup: lk[str(v)]).to_numpy())
    pc_values = np.unique(df["pc"].to_numpy(np.float64))
    pc_index = np.searchsorted(pc_values, df["pc"].to_numpy(np.float64))
    alpha = np.full((pc_values.size, *(e.size - 1 for e in edges)), default)
    alpha[(pc_index, *index)] = df["alpha"].to_numpy(np.float64)
    return SkewTable(pc_values=pc_values, n_edges=edges[0], rate_edges=edges[1], kv_max_edges=edges[2],
                     kp_edges=edges[3], alpha=alpha, alpha_default=default)


def kernel_profile_model(folder, *, tp: int = 1, model_config=None, ep: int = 1, link_bw_gbs: float | None = None,
                         link_latency_s: float = 0.0, skew: bool = True, allow_extrapolation: bool = False,
                         name: str | None = None):
    """A :class:`~workbench.sim.steptime.StepTimeModel` whose steps are priced from a kernel profile bundle.

    ``folder``: the bundle's variant folder (``meta.yaml``, ``tp<N>/``); ``tp``: which ``tp<N>`` folder (the
    tensor-parallel degree); ``model_config``: the model's Hugging Face ``config.json`` (default:
    ``model_configs/<meta.yaml's model>.json`` in the folder or above it); ``ep``: expert-parallel degree of
    an MoE model across its data-parallel group; ``link_bw_gbs`` (GB/s) and ``link_latency_s``: the link the
    collectives use (needed when ``tp > 1`` or ``ep > 1``; LLMServingSim's cluster ``link_bw`` and
    ``link_latency``); ``skew``: apply the bundle's skew correction (as LLMServingSim does when the bundle has
    one); ``allow_extrapolation``: let runs go past the profiled grids (linear extrapolation, logged) instead
    of refusing them.  Nothing is fitted to any run.
    """
    from workbench.sim.steptime import StepTimeModel

    table, meta, cfg = kernel_profile_table(folder, tp=tp, model_config=model_config, ep=ep,
                                            link_bw_gbs=link_bw_gbs, link_latency_s=link_latency_s, skew=skew,
                                            allow_extrapolation=allow_extrapolation)
    prefill, decode = linear_summary(table)
    if name is None:
        model = str(meta.get("model", "model")).split("/")[-1]
        name = f"{model}@{meta.get('hardware', 'gpu')} tp{tp}" + (f" ep{ep}" if ep > 1 else "") + " [kernel-profile]"
    return StepTimeModel(prefill=prefill, decode=decode, table=table, name=name, source=table.source)

