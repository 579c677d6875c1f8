"""Published step-time profiles, read into :class:`~workbench.sim.steptime.StepTimeModel`, and a registry of them.

Two formats:

* **DistServe** (``profiler-*.json``, LLMServe/DistServe): per model and
  tensor-parallel degree, milliseconds; ``prefill = [a, b, c]`` for
  ``a + b*sum(l) + c*sum(l^2)``, ``decoding_smallbs`` / ``decoding_largebs`` =
  ``[a, b, c]`` for ``a + b*sum(ctx) + c*batch`` below / at or above
  ``decoding_large_small_bs_threshold``.
* **BLIS** (``blis_defaults_*.yaml``, inference-sim/inference-sim): per model,
  GPU, TP and vLLM version, microseconds; ``beta = [b0, b1, b2]`` for a step of
  ``b0 + b1*prefill_tokens + b2*decode_tokens``, so ``b0`` is the fixed cost of
  both step kinds, ``b1`` the per-prefill-token cost (no quadratic term) and
  ``b2`` the per-decode-request cost (no context term; a fourth beta, if an entry
  has one, is the per-decode-context-token cost: :meth:`StepTimeModel.blis`); ``alpha = [a0, a1, a2]``:
  ``a0 + a1*prompt_tokens`` before a request joins the queue, ``a2`` added to
  every output token's reported time.  Several refits of one combination are
  told apart by ``best_loss``: the lowest wins (entries without one rank last).

The registry names a few of them (:func:`profile_names`, :func:`get_profile`);
:func:`default_step_model` is ``opt-13b-a100``, the profile validated against
the measured vLLM runs in ``data/groundtruth/`` (``notebooks/fidelity_vllm.ipynb``).

Every pair of a catalogued model and GPU (``workbench.hardware``) is a profile
name too: ``"<model>@<gpu>"``, ``"<model>@<gpu>/tp<N>"`` (e.g.
``"llama-3.1-8b@h100-sxm/tp2"``) or, for a mixture of experts split over a data-parallel group of ``M``
replicas, ``"<model>@<gpu>/ep<M>"``, the roofline of that deployment
(``StepTimeModel.roofline``; vLLM V1's efficiencies), with the memory of that
GPU (:func:`profile_config_fields`).  :func:`profile_kind` says what a profile's
step times come from: ``"measured"`` (DistServe's and BLIS's profiles) or
``"roofline"`` (an estimate from the hardware's peaks, not a measurement).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from functools import lru_cache
from pathlib import Path

from workbench import checks
from workbench.paths import DATA_DIR
from workbench.sim.memory import A100_80GB_TOTAL_GB, DEFAULT_MEMORY
from workbench.sim.steptime import StepTimeModel

log = logging.getLogger(__name__)

DISTSERVE_PROFILE = DATA_DIR / "groundtruth" / "distserve_opt13b_a100_vllm" / "profiler-a100-80g.vllm.json"
# DistServe's own engine (the measured disaggregated runs): the same format, TP 1, 2, 4
DISTSERVE_ENGINE_PROFILE = DATA_DIR / "groundtruth" / "distserve_opt13b_a100_disagg" / "profiler-a100-80g.distserve.json"
BLIS_DEFAULTS = DATA_DIR / "step_profiles" / "blis_defaults_e1a880a4.yaml"
MS, US = 1e-3, 1e-6
# A one-token step faster than this says the file is in another unit (seconds): DistServe profiles large models
# (tens of ms per step); BLIS's fastest shipped entry takes 48 us
DISTSERVE_MIN_STEP_S, BLIS_MIN_STEP_S = 1e-3, 1e-5


def _coefficients_of(entry: dict, key: str, where: str, sizes: tuple[int, ...] = (3,)) -> tuple[float, ...]:
    """The list of ``sizes`` numbers under ``key`` (each a finite number, named by file, entry and position)."""
    value = entry.get(key)
    if not isinstance(value, (list, tuple)) or len(value) not in sizes:
        count = " or ".join(("three", "four")[n - 3] if n in (3, 4) else str(n) for n in sizes)
        raise ValueError(f"{where}: '{key}' must be a list of {count} numbers, got {value!r}")
    return tuple(checks.number(v, f"{where}: '{key}'[{k}]") for k, v in enumerate(value))


def _entry_of(container, where: str, expected: str) -> dict:
    """``container`` if it is an object (a mapping), else an error naming the file and the entry."""
    if not isinstance(container, dict):
        raise ValueError(f"{where}: must be {expected}, got {checks._shown(container)}")
    return container


def _step_model(where: str, unit: str, scale: float, min_step_s: float, make=StepTimeModel,
                **fields) -> StepTimeModel:
    """The StepTimeModel of a profile entry; a bad coefficient, or one in another unit than the format's,
    is reported with the file and the entry (``where``); ``make`` builds it from ``fields``."""
    try:
        step = make(**fields)
    except ValueError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    prefill, decode = step.prefill_time_s([1]), step.decode_time_s([1])
    if min(prefill, decode) < min_step_s:
        raise ValueError(f"{where}: a one-token prefill step takes {prefill / scale:.3g} {unit} and a one-request "
                         f"decode step {decode / scale:.3g} {unit}, below {min_step_s / scale:g} {unit} (no GPU runs "
                         f"a model's forward pass that fast): the coefficients are not in {unit}; are they in "
                         "seconds? Convert them, or build wb.StepTimeModel(...) in seconds yourself")
    return step


def distserve_profile(path: str | os.PathLike = DISTSERVE_PROFILE, *, model: str, tp: int = 1) -> StepTimeModel:
    """The StepTimeModel of ``model`` at tensor parallelism ``tp`` in a DistServe profile JSON (ms -> s)."""
    checks.instance(model, "model", str, expected="a model name such as 'facebook/opt-13b'")
    tp = checks.integer(tp, "tp", low=1)
    path = Path(checks.path(path, "path", expected="a profile file path"))
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, not a DistServe profile file")
    try:
        profile = json.loads(checks.read_text(path, what="profile file"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such DistServe profile file; the shipped one is {DISTSERVE_PROFILE}") \
            from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a DistServe profile (invalid JSON: {exc})") from None
    if not isinstance(profile, dict):
        raise ValueError(f"{path}: not a DistServe profile (expected an object keyed by model name)")
    if model not in profile:
        raise ValueError(f"{path}: no model {model!r}; it has {', '.join(sorted(map(str, profile)))}")
    by_tp = _entry_of(profile[model], f"{path}: {model}",
                      'an object keyed by tensor parallelism ("1", "2", ...)')
    if str(tp) not in by_tp:
        raise ValueError(f"{path}: {model} has no tp={tp}; it has tp in {{{', '.join(sorted(map(str, by_tp)))}}}")
    where = f"{path}: {model} tp={tp}"
    entry = _entry_of(by_tp[str(tp)], where, "an object with prefill, decoding_smallbs, ...")
    for key in ("prefill", "decoding_smallbs", "decoding_largebs", "decoding_large_small_bs_threshold"):
        if key not in entry:
            raise ValueError(f"{where}: missing '{key}'")
    ms = lambda t: tuple(v * MS for v in t)  # noqa: E731
    return _step_model(
        where, "ms", MS, DISTSERVE_MIN_STEP_S,
        prefill=ms(_coefficients_of(entry, "prefill", where)),
        decode=ms(_coefficients_of(entry, "decoding_smallbs", where)),
        decode_large=ms(_coefficients_of(entry, "decoding_largebs", where)),
        decode_large_threshold=checks.integer(entry["decoding_large_small_bs_threshold"],
                                              f"{where}: decoding_large_small_bs_threshold", low=1),
        name=f"distserve {model} tp{tp}",
        source=f"{path} ({model}, tp={tp}; DistServe profile, ms -> s)",
        pipeline_overhead_s=pipeline_overhead_of(by_tp, where=f"{path}: {model}") * MS,
    )


_NO_PIPELINE_SAID: set[str] = set()   # profiles whose "no pipeline overhead" was logged (once each)


def pipeline_overhead_of(by_tp: dict, *, where: str = "profile") -> float:
    """The part of a decode step's fixed cost that does not shrink with parallelism, from a DistServe profile's
    entries at several tensor-parallel degrees (milliseconds).

    A decode step's fixed cost ``a`` is reading the weights, split over the ``tp`` GPUs, plus per-step work
    (kernel launches, scheduling) every GPU repeats: ``a(tp) = o + k / tp``.  Fitted by least squares over the
    profile's TP degrees (small-batch regime); ``o`` is what every pipeline stage repeats too (the disaggregated
    engine's rule R9).  For DistServe's OPT-13B A100 profile: a = 19.93, 13.29, 10.26 ms at TP 1, 2, 4 gives
    o = 7.0 ms and k = 12.9 ms (25.7 GB of weights at 2.0 TB/s: the A100's memory bandwidth).  0 when the profile
    has fewer than two TP degrees or ``a`` does not fall with TP (then it does not split this way).
    """
    points = []
    for tp, entry in by_tp.items():
        if isinstance(entry, dict) and "decoding_smallbs" in entry:
            tp = checks.integer(tp, f"{where}: TP degree {tp!r}", low=1)
            points.append((1.0 / tp, _coefficients_of(entry, "decoding_smallbs", f"{where} tp={tp}")[0]))
    if len(points) < 2:
        return 0.0
    x = [p[0] for p in points]
    y = [p[1] for p in points]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((v - mx) ** 2 for v in x)
    if sxx <= 0:
        return 0.0
    k = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sxx
    o = my - k * mx
    if k <= 0 or o < 0:
        if where not in _NO_PIPELINE_SAID:   # said once per profile, not at every TP degree resolved
            _NO_PIPELINE_SAID.add(where)
            log.debug("%s: the decode fixed cost does not fall with TP as weights/TP + overhead; no pipeline "
                      "overhead", Path(where).name if "/" in str(where) else where)
        return 0.0
    return o


@lru_cache(maxsize=4)
def _blis_models(path: str, mtime_ns: int) -> tuple[dict, ...]:
    import yaml

    try:
        document = yaml.safe_load(checks.read_text(path, what="BLIS defaults file"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a BLIS defaults file (invalid YAML: {exc})") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list):
        raise ValueError(f"{path}: not a BLIS defaults file (no 'models:' list)")
    for i, entry in enumerate(models):
        _entry_of(entry, f"{path}: models[{i}]", "a mapping (id, GPU, tensor_parallelism, ...)")
        where = f"{path}: models[{i}] ({entry.get('id')})"
        if "tensor_parallelism" in entry:
            checks.integer(entry["tensor_parallelism"], f"{where}: tensor_parallelism", low=1)
        if entry.get("best_loss") is not None:
            checks.number(entry["best_loss"], f"{where}: best_loss")
    return tuple(models)


def _version_matches(wanted: str, version: str) -> bool:
    wanted = wanted.lower().lstrip("v")
    return version.lower().rsplit(":", 1)[-1].lstrip("v") == wanted


def blis_entries(path: str | os.PathLike = BLIS_DEFAULTS) -> list[dict]:
    """Every model entry of a BLIS defaults file (id, GPU, tensor_parallelism, vllm_version, coefficients)."""
    path = Path(checks.path(path, "path", expected="a BLIS defaults file path"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such BLIS defaults file{' (a folder)' if path.is_dir() else ''}; "
                                f"the shipped one is {BLIS_DEFAULTS}")
    return [dict(m) for m in _blis_models(str(path), path.stat().st_mtime_ns)]


def blis_profile(*, model: str, gpu: str, tp: int = 1, vllm_version: str | None = None,
                 path: str | os.PathLike | None = None) -> StepTimeModel:
    """The StepTimeModel of a BLIS entry (us -> s): the refit with the lowest ``best_loss`` among the matches.

    ``model`` and ``gpu`` match case-insensitively (``gpu="A100"`` matches ``A100-80``); ``vllm_version``
    (e.g. ``"v0.8.4"``), if given, must match the image tag.
    """
    checks.instance(model, "model", str, expected="a model id such as 'qwen/qwen3-14b'")
    checks.instance(gpu, "gpu", str, expected="a GPU name such as 'H100' or 'A100-80'")
    tp = checks.integer(tp, "tp", low=1)
    checks.instance(vllm_version, "vllm_version", (str, type(None)), expected="a version such as 'v0.8.4', or None")
    path = Path(checks.path(path, "path", expected="a BLIS defaults file path")) \
        if path is not None else BLIS_DEFAULTS
    entries = blis_entries(path)

    def gpu_matches(name: str) -> bool:
        name, wanted = str(name).lower(), gpu.lower()
        return name == wanted or name.split("-")[0] == wanted

    matches = [m for m in entries
               if str(m.get("id", "")).lower() == model.lower() and gpu_matches(m.get("GPU", ""))
               and int(m.get("tensor_parallelism", 0)) == int(tp)
               and (vllm_version is None or _version_matches(vllm_version, str(m.get("vllm_version", ""))))]
    if not matches:
        same_model = [m for m in entries if str(m.get("id", "")).lower() == model.lower()]
        if same_model:
            have = sorted({f"gpu={m['GPU']} tp={m['tensor_parallelism']} "
                           f"vllm={str(m['vllm_version']).rsplit(':', 1)[-1]}" for m in same_model})
            raise ValueError(f"{path}: no entry for {model} with gpu={gpu} tp={tp}"
                             f"{'' if vllm_version is None else f' vllm={vllm_version}'}; it has: {'; '.join(have)}")
        raise ValueError(f"{path}: no model {model!r}; it has {', '.join(sorted({str(m.get('id')) for m in entries}))}")
    best = min(matches, key=lambda m: float(m["best_loss"]) if m.get("best_loss") is not None else math.inf)
    where = f"{path}: {best['id']} {best['GPU']} tp={best['tensor_parallelism']}"
    # a fourth beta, when an entry has one: per token of decode context
    b0, b1, b2, b3 = (*_coefficients_of(best, "beta_coeffs", where, sizes=(3, 4)), 0.0)[:4]
    a0, a1, a2 = _coefficients_of(best, "alpha_coeffs", where)
    version = str(best.get("vllm_version", "")).rsplit(":", 1)[-1]
    loss = best.get("best_loss")
    if len(matches) > 1:
        log.info("%s: %d refits match; using the one with best_loss %s", where, len(matches), loss)
    return _step_model(
        where, "us", US, BLIS_MIN_STEP_S, make=lambda **f: StepTimeModel.blis(
            b0 * US, b1 * US, b2 * US, b3 * US, **f),
        arrival_overhead_s=(a0 * US, a1 * US),
        token_overhead_s=a2 * US,
        name=f"blis {best['id']} {best['GPU']} tp{best['tensor_parallelism']} vllm {version}",
        source=f"{path} ({best['id']}, {best['GPU']}, tp={best['tensor_parallelism']}, {version}, "
               f"best_loss={loss}; BLIS beta/alpha, us -> s)",
    )


# name -> (loader, keyword arguments, one-line description)
PROFILES: dict[str, tuple] = {
    "opt-13b-a100": (distserve_profile, {"model": "facebook/opt-13b", "tp": 1},
                     "OPT-13B on one A100-80GB, vLLM v0.2 (DistServe profile; validated against measured runs)"),
    "opt-13b-a100-tp2": (distserve_profile, {"model": "facebook/opt-13b", "tp": 2},
                         "OPT-13B on two A100-80GB, tensor parallel (DistServe profile)"),
    "opt-66b-a100-tp4": (distserve_profile, {"model": "facebook/opt-66b", "tp": 4},
                         "OPT-66B on four A100-80GB, tensor parallel (DistServe profile)"),
    "llama-3.1-8b-a100": (blis_profile, {"model": "meta-llama/llama-3.1-8b-instruct", "gpu": "A100-80", "tp": 1},
                          "Llama-3.1-8B-Instruct on one A100-80GB, vLLM v0.8.4 (BLIS)"),
    "llama-3.1-8b-h100": (blis_profile, {"model": "meta-llama/llama-3.1-8b-instruct", "gpu": "H100", "tp": 1},
                          "Llama-3.1-8B-Instruct on one H100, vLLM v0.11.0 (BLIS)"),
    "llama-3.3-70b-h100-tp4": (blis_profile, {"model": "meta-llama/llama-3.3-70b-instruct", "gpu": "H100", "tp": 4},
                               "Llama-3.3-70B-Instruct on four H100, vLLM v0.8.4 (BLIS)"),
    "qwen3-14b-h100": (blis_profile, {"model": "qwen/qwen3-14b", "gpu": "H100", "tp": 1},
                       "Qwen3-14B on one H100, vLLM v0.11.0 (BLIS)"),
}
PROFILES["opt-13b-a100-distserve"] = (
    distserve_profile, {"path": DISTSERVE_ENGINE_PROFILE, "model": "facebook/opt-13b", "tp": 1},
    "OPT-13B on A100-80GB, DistServe's engine, TP 1 (2, 4 by tp=); the disaggregated runs' profile")
DEFAULT_PROFILE = "opt-13b-a100"   # the library's default hardware model and the suite's (wb.simulate, SimConfig)
# the seed study's formula grid (a LatencyModel, not a profile): "grid" is the name it had first
SEED_GRID_NAMES = ("seed-grid", "grid")
# the disaggregated engine's default: resolved at each pool's TP degree
DEFAULT_DISAGG_PROFILE = "opt-13b-a100-distserve"

# profile name -> the SimConfig memory fields of the hardware it was measured on (one replica); from the
# setup of the measured runs (data/groundtruth/distserve_opt13b_a100_vllm/setup.json): vLLM's
# gpu_memory_utilization 0.95 and about 2 GB of activation peak kept free, which gives the setup's
# 4046 KV blocks of 16 tokens.  A tensor-parallel replica of tp GPUs has tp times the memory.
PROFILE_MEMORY: dict[str, dict] = {
    "opt-13b-a100": DEFAULT_MEMORY,   # SimConfig's defaults
    "opt-13b-a100-tp2": {"model": "opt-13b", "gpu_mem_gb": 2 * A100_80GB_TOTAL_GB, "gpu_memory_utilization": 0.95,
                         "mem_margin_gb": 2.0},
    # per GPU (a disaggregated instance of g GPUs gets g x this, minus the weights once): DistServe's engine keeps
    # 1% of a GPU's memory for activations (distserve/worker.py _profile_num_available_blocks), which gives its
    # profiled 66,144 tokens (4134 blocks) of KV on one A100 (simdistserve/.../max_num_tokens.csv)
    "opt-13b-a100-distserve": {"model": "opt-13b", "gpu_mem_gb": A100_80GB_TOTAL_GB, "gpu_memory_utilization": 0.95,
                               "mem_margin_gb": 0.01 * A100_80GB_TOTAL_GB},
}


def profile_names() -> list[str]:
    """The registered profile names (``get_profile(name)`` loads one; roofline names ``<model>@<gpu>[/tp<N>][/ep<M>]``
    of any catalogued pair work too, see :func:`parse_roofline_name`)."""
    return list(PROFILES)


ROOFLINE_SEPARATOR = "@"


def parse_roofline_name(name) -> tuple[str, str, int] | None:
    """``(model, gpu, tp)`` of a roofline profile name ``<model>@<gpu>[/tp<N>][/ep<M>]`` whose model and GPU are
    catalogued, None for a name without ``@``; an unknown model or GPU, or a bad suffix, raises naming the
    closest catalogued names (:func:`roofline_name_parts` also gives the expert parallelism)."""
    parts = roofline_name_parts(name)
    return None if parts is None else parts[:3]


def roofline_name_parts(name) -> tuple[str, str, int, int] | None:
    """``(model, gpu, tp, ep)`` of a roofline profile name ``<model>@<gpu>[/tp<N>][/ep<M>]``: ``tp`` GPUs per
    replica; ``ep``, a mixture of experts' expert parallelism over a data-parallel group of ``ep`` replicas
    (``"qwen3-30b-a3b@rtx-pro-6000/ep2"``); None for a name without ``@``."""
    from workbench.hardware.catalog import get_gpu, get_model_arch

    if not isinstance(name, str) or ROOFLINE_SEPARATOR not in name:
        return None
    model, _, gpu = name.partition(ROOFLINE_SEPARATOR)
    degrees = {"tp": 1, "ep": 1}
    seen = set()
    while True:
        head, slash, tail = gpu.rpartition("/")
        kind = tail[:2].lower()
        if not slash or kind not in degrees or kind in seen:
            break
        seen.add(kind)
        gpu = head
        try:
            degrees[kind] = int(tail[2:])
        except ValueError:
            degree = "a tensor" if kind == "tp" else "an expert"
            raise ValueError(f"profile {name!r}: the suffix {tail!r} is not {degree}-parallel degree; write "
                             f"{model}@{head}/{kind}2 (or leave it out for 1)") from None
        if degrees[kind] < 1:
            raise ValueError(f"profile {name!r}: {kind} must be >= 1, got {degrees[kind]}")
    return get_model_arch(model.strip()).name, get_gpu(gpu.strip()).key, degrees["tp"], degrees["ep"]


def is_profile(name) -> bool:
    """Whether ``name`` is a registered profile or the roofline name of a catalogued model and GPU."""
    if not isinstance(name, str):
        return False
    if name in PROFILES:
        return True
    try:
        return parse_roofline_name(name) is not None
    except ValueError:
        return False


def check_profile(name, what: str = "latency", *, extra=(), hint: str = "") -> str:
    """``name`` if it is a profile (:func:`is_profile`) or one of ``extra``; else the error names what is wrong:
    for a ``<model>@<gpu>`` name the unknown model or GPU with the closest catalogued ones, otherwise the
    registered names and the closest."""
    if isinstance(name, str) and (name in extra or name in PROFILES):
        return name
    if isinstance(name, str) and ROOFLINE_SEPARATOR in name:
        try:
            parse_roofline_name(name)
        except ValueError as exc:
            raise type(exc)(f"{what}: {exc}") from None
        return name
    return checks.choice(name, what, [*extra, *PROFILES], hint=(hint + "; " if hint else "") +
                         "or a roofline '<model>@<gpu>[/tp<N>][/ep<M>]' of the catalogues "
                         "(e.g. 'llama-3.1-8b@h100-sxm')")


def profile_kind(name: str) -> str:
    """What the step times of profile ``name`` come from: ``"measured"`` (a registered profile of measured
    steps) or ``"roofline"`` (estimated from the hardware's peaks)."""
    if name in PROFILES:
        return "measured"
    if parse_roofline_name(name) is not None:
        return "roofline"
    raise ValueError(f"unknown step-time profile {name!r}")


def step_model_kind(step) -> str:
    """What a StepTimeModel's step times come from: its table's kind (``"roofline"``, ``"kernel-profile"``),
    ``"measured"`` for a registered profile (its name, or its name at another TP degree), else ``"linear"`` (a
    linear model given by hand or calibrated)."""
    kind = getattr(step, "kind", "linear")
    if kind != "linear":
        return kind
    name = str(getattr(step, "name", ""))
    return "measured" if name.split(" ")[0] in PROFILES else "linear"


def name_kind(name: str) -> str:
    """:func:`profile_kind` of a profile name, or ``"linear"`` for a name that is not a profile (a model built by
    hand), never an error (labels of stored results)."""
    try:
        return profile_kind(name)
    except ValueError:
        return "linear"


def describe_profile(name: str) -> str:
    """One line on profile ``name``, saying what its step times come from."""
    if name in PROFILES:
        return f"{PROFILES[name][2]} [measured]"
    model, gpu, tp, ep = roofline_name_parts(name)
    from workbench.hardware.catalog import get_gpu, get_model_arch

    group = f", experts split over a data-parallel group of {ep}" if ep > 1 else ""
    return (f"{get_model_arch(model).hf_id or model} on {tp} x {get_gpu(gpu).name}{group} [roofline: estimated "
            "from config.json facts and spec-sheet peaks, not measured]")


def describe_profiles() -> dict[str, str]:
    """Name -> one-line description of every registered profile."""
    return {name: entry[2] for name, entry in PROFILES.items()}


def get_profile(name: str, tp: int | None = None, *, linear: bool = False) -> StepTimeModel:
    """The registered step-time profile ``name`` (see :func:`profile_names`), or the roofline of a
    ``<model>@<gpu>[/tp<N>][/ep<M>]`` name; ``tp`` resolves it at another tensor-parallel degree from the same source
    (the DistServe and BLIS files hold several; a roofline any), e.g. a disaggregated deployment's prefill
    instances at TP 2 and decode instances at TP 1.  ``linear=True``: a roofline in its linear form
    (``StepTimeModel.roofline(..., table=False)``, what calibration refits); measured profiles are linear."""
    tp = checks.integer(tp, "tp", low=1, none=True, hint="a tensor-parallel degree (GPUs of one instance)")
    if isinstance(name, str) and name not in PROFILES and ROOFLINE_SEPARATOR in name:
        check_profile(name, "profile")
        return _roofline_profile(name, tp, linear)
    if not isinstance(name, str) or name not in PROFILES:
        error = ValueError if isinstance(name, str) else checks.InvalidType
        raise error(f"unknown step-time profile {name!r}; registered: {', '.join(PROFILES)}, or a roofline "
                    "'<model>@<gpu>[/tp<N>]'")
    return _load_profile(name, tp)


@lru_cache(maxsize=64)
def _roofline_profile(name: str, tp: int | None, linear: bool) -> StepTimeModel:
    from workbench.hardware.roofline import step_model

    model, gpu, named_tp, ep = roofline_name_parts(name)
    tp = named_tp if tp is None else tp
    label = name if tp == named_tp else f"{model}@{gpu}/tp{tp}" + (f"/ep{ep}" if ep > 1 else "")
    return step_model(model, gpu, tp=tp, ep=ep, table=not linear, name=label)


@lru_cache(maxsize=None)
def _load_profile(name: str, tp: int | None) -> StepTimeModel:
    loader, kwargs, _ = PROFILES[name]
    if tp is None or tp == kwargs.get("tp", 1):
        return dataclasses.replace(loader(**kwargs), name=name)
    try:
        model = loader(**{**kwargs, "tp": tp})
    except ValueError as exc:
        raise ValueError(f"profile {name!r} has no entry at tp={tp}: {exc}") from None
    return dataclasses.replace(model, name=f"{name} tp{tp}")


def profile_config_fields(name: str) -> dict:
    """The SimConfig memory fields (``model``, ``gpu_mem_gb``, ...) of the hardware profile ``name`` ran on
    (``"seed-grid"``: the memory the seed study's formula grid runs with, :data:`workbench.sim.memory.GRID_MEMORY`).

    ``SimConfig(scheduler=..., **profile_config_fields("opt-13b-a100"))`` gives a replica the KV capacity
    of the measured setup (OPT-13B on one A100-80GB: 64,742 tokens = 4046 blocks of 16), so a static
    scheduler in step mode and a continuous one share both the step times and the memory.
    """
    if name in SEED_GRID_NAMES:   # the seed study's formula grid: its labels' model on a 16 GB GPU
        from workbench.sim.memory import GRID_MEMORY

        return dict(GRID_MEMORY)
    roofline = roofline_name_parts(name) if name not in PROFILES else None
    if roofline is not None:
        model, gpu, tp, ep = roofline
        return roofline_memory_fields(model, gpu, tp, ep=ep)
    if name not in PROFILES:
        raise ValueError(f"unknown step-time profile {name!r}; registered: {', '.join(PROFILES)}")
    if name not in PROFILE_MEMORY:
        raise ValueError(f"profile {name!r} has no memory preset (its model has none in "
                         f"workbench.sim.memory.MODELS); profiles with one: {', '.join(PROFILE_MEMORY)}. "
                         "Set model/gpu_mem_gb (or model_mem_gb and kv_gb_per_token) in the SimConfig yourself")
    return dict(PROFILE_MEMORY[name])


def roofline_memory_fields(model: str, gpu: str, tp: int = 1, *, gpu_memory_utilization: float = 0.9,
                           max_num_batched_tokens: int = 16384, max_num_seqs: int = 256, ep: int = 1) -> dict:
    """The SimConfig memory fields of one ``tp``-GPU replica of ``model`` on ``gpu``, so that the derived KV
    capacity is vLLM's (:func:`workbench.hardware.roofline.kv_blocks`): the replica's memory, the activation
    peak of each GPU as the margin, the KV bytes per token summed over its GPUs (KV heads replicated when fewer
    than ``tp``); with expert parallelism ``ep > 1`` also the replica's share of the weights (``model_mem_gb``:
    its experts split ``ep`` ways).  A model that does not fit is refused with the numbers."""
    from workbench.hardware.roofline import kv_blocks, kv_memory

    kv_blocks(model, gpu, tp=tp, ep=ep, gpu_memory_utilization=gpu_memory_utilization,
              max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs)   # DoesNotFit
    budget = kv_memory(model, gpu, tp=tp, ep=ep, gpu_memory_utilization=gpu_memory_utilization,
                       max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs)
    fields = {"model": model, "gpu_mem_gb": tp * budget["total"] / 1e9,
              "gpu_memory_utilization": gpu_memory_utilization, "mem_margin_gb": tp * budget["activation_peak"] / 1e9,
              "kv_gb_per_token": tp * budget["kv_bytes_per_token"] / 1e9}
    if ep > 1:
        fields["model_mem_gb"] = tp * budget["weights"] / 1e9
    return fields


def default_step_model() -> StepTimeModel:
    """The continuous engine's default step-time model: ``opt-13b-a100`` (DistServe's published profile)."""
    return get_profile(DEFAULT_PROFILE)


__all__ = ["BLIS_DEFAULTS", "DEFAULT_DISAGG_PROFILE", "DEFAULT_PROFILE", "DISTSERVE_ENGINE_PROFILE", "DISTSERVE_PROFILE",
           "pipeline_overhead_of", "PROFILES", "blis_entries", "blis_profile",
           "default_step_model", "describe_profiles", "distserve_profile", "get_profile", "profile_config_fields",
           "profile_names", "PROFILE_MEMORY", "check_profile", "describe_profile", "is_profile",
           "parse_roofline_name", "profile_kind", "roofline_name_parts", "roofline_memory_fields", "step_model_kind", "name_kind"]
