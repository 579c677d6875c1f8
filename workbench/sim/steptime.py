"""Step-time models of an iteration-level (continuous-batching) engine.

A continuous-batching server runs *steps*: each step computes some prefill
tokens (whole prompts, or chunks of them) and one decode token for each
running request.  Its time depends on what it contains:

* prefill part: ``a_p + b_p * sum(l) + c_p * sum(l * (p + l))`` over the
  prompt pieces in the step, ``l`` the tokens computed now and ``p`` the
  tokens of the same prompt already computed in earlier chunks (0 without
  chunking, so the last term is DistServe's ``c * sum(l^2)``: attention of the
  new tokens over the whole prefix);
* decode part: ``a_d + b_d * sum(ctx) + c_d * n`` over the ``n`` decoding
  requests, ``ctx`` each one's context (prompt + tokens generated so far);
  with ``decode_large`` set, its coefficients replace ``decode`` when ``n >=
  decode_large_threshold`` (DistServe's two batch regimes);
* a step with both parts (chunked prefill) costs ``max(a_p, a_d)`` plus both
  variable parts: the fixed cost is paid once per step.

A prefill piece's prefix ``p`` counts every token already in the KV cache,
prefix-cache hits included: a cached prefix is not computed (``l`` counts
only the uncached tokens) but the new tokens still attend to it.

BLIS-style (v1) coefficients, a step of ``a + b * (prefill tokens computed)
+ c * (decode requests) + d * (sum of the decodes' contexts)`` whatever it
mixes (:meth:`StepTimeModel.blis`), are the special case ``prefill = (a, b,
0)``, ``decode = (a, d, c)``: a mixed step's fixed cost ``max(a, a)`` is
``a`` once, its prefill part ``b * sum(l)`` and its decode part ``d *
sum(ctx) + c * n``.  BLIS's published fits (``from_blis``) have ``d = 0``
(three betas); a fourth beta, when a defaults file has one, is ``d``.

Two per-request CPU overheads (BLIS's alpha) sit outside the GPU step:
``arrival_overhead_s = (a0, a1)`` delays a request's entry into the queue by
``a0 + a1 * prompt_tokens`` (HTTP, tokenisation), and ``token_overhead_s`` is
added to every output token's reported time (TTFT and each inter-token gap)
without delaying the next step (detokenisation, streaming).

All coefficients are in seconds.  ``coefficients()`` packs them into the
flat float64 vector the compiled engine reads (layout :data:`COEF_NAMES`).

Tabulated models.  A model with a ``table`` (a :class:`~workbench.sim.steptable.StepTable`: kernel profiles,
:meth:`StepTimeModel.from_kernel_profiles`; a roofline) prices every step from the table, not from the
coefficients: the engines read the table's packed arrays (``StepTable.pack``) and call its compiled
functions.  Its ``prefill``/``decode`` coefficients are then a *linear summary* of the table (a least-squares
fit, :func:`workbench.sim.steptable.linear_summary`), kept for what only reads coefficients (descriptions,
quick estimates); an engine or a calibration that can only use coefficients refuses a tabulated model
rather than use the summary in its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workbench import checks

COEF_NAMES = (
    "prefill_a", "prefill_b", "prefill_c",
    "decode_a", "decode_b", "decode_c",
    "decode_large_a", "decode_large_b", "decode_large_c", "decode_large_threshold",
    "arrival_overhead_a", "arrival_overhead_b", "token_overhead",
)


# Plausibility bounds (seconds), far above any GPU the profiles describe (the slowest shipped fixed cost is
# 58 ms, per prompt token 0.4 ms): a coefficient above its bound was written in milliseconds or microseconds.
_FIXED_S, _PER_TOKEN_S, _PER_TOKEN2_S, _PER_CONTEXT_S, _PER_REQUEST_S = 1.0, 0.01, 1e-3, 1e-3, 0.1
_UNIT_HINT = ("StepTimeModel takes seconds: divide milliseconds by 1000 (a DistServe profile in ms is read with "
              "StepTimeModel.from_profile, a BLIS one in us with from_blis, which convert)")
_TERMS = {  # part -> (what a, b, c multiply, their plausibility bounds)
    "prefill": (("fixed cost per step", "per prompt token", "per prompt token squared"),
                (_FIXED_S, _PER_TOKEN_S, _PER_TOKEN2_S)),
    "decode": (("fixed cost per step", "per context token", "per running request"),
               (_FIXED_S, _PER_CONTEXT_S, _PER_REQUEST_S)),
}
_TERMS["decode_large"] = _TERMS["decode"]


def _coefficients(name: str, value, count: int, labels, bounds, *, negative_last: bool = False) -> tuple:
    """``count`` finite coefficients in seconds, >= 0 (the last may be negative with ``negative_last``)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != count:
        letters = ", ".join("abc"[:count]) if count == 3 else "a0, a1"
        raise checks.InvalidType(f"{name}: must be {count} numbers ({letters}) in seconds, got {value!r}")
    out = []
    for k, (v, label, bound) in enumerate(zip(value, labels, bounds)):
        low = None if (negative_last and k == count - 1) else 0
        out.append(checks.number(v, f"{name}[{k}] ({label})", low=low, unit="s", sane_high=bound,
                                 sane_hint=_UNIT_HINT))
    return tuple(out)


@dataclass(frozen=True)
class StepTimeModel:
    """Seconds per engine step as a function of what the step contains (see the module docstring).

    ``StepTimeModel(prefill=(a, b, c), decode=(a, b, c))``: prefill ``a + b*sum(l) + c*sum(l^2)``,
    decode ``a + b*sum(ctx) + c*batch``, in seconds.
    """

    prefill: tuple[float, float, float]
    decode: tuple[float, float, float]
    decode_large: tuple[float, float, float] | None = None
    decode_large_threshold: int = 0
    arrival_overhead_s: tuple[float, float] = (0.0, 0.0)
    token_overhead_s: float = 0.0
    name: str = "custom"
    source: str = field(default="", compare=False)
    fit_report: object = field(default=None, compare=False, repr=False)  # set by workbench.calibrate
    # pipeline parallelism (the disaggregated engine's decode instances, decode_pp > 1): the part of a step's
    # fixed cost that every stage repeats (kernel launches, scheduling), seconds; a stage of a pp-way pipelined
    # step takes (step - pipeline_overhead_s) / pp + pipeline_overhead_s
    pipeline_overhead_s: float = 0.0
    # a StepTable: when set, it prices every step and prefill/decode are its linear summary (module docstring)
    table: object = field(default=None, repr=False)

    def __post_init__(self):
        # a negative quadratic prefill term is a published fit's curvature (DistServe's OPT-66B tp2 has one):
        # allowed, and simulate checks that the longest prompt stays where the step time still grows
        object.__setattr__(self, "prefill", _coefficients("prefill", self.prefill, 3, *_TERMS["prefill"],
                                                          negative_last=True))
        object.__setattr__(self, "decode", _coefficients("decode", self.decode, 3, *_TERMS["decode"]))
        if self.decode_large is not None:
            object.__setattr__(self, "decode_large", _coefficients("decode_large", self.decode_large, 3,
                                                                   *_TERMS["decode_large"]))
            object.__setattr__(self, "decode_large_threshold", checks.integer(
                self.decode_large_threshold, "decode_large_threshold", low=1, high=2**31 - 1,
                hint="the batch size from which decode_large applies"))
        else:
            object.__setattr__(self, "decode_large_threshold", checks.integer(
                self.decode_large_threshold, "decode_large_threshold", low=0, high=2**31 - 1))
            if self.decode_large_threshold:
                raise ValueError(f"decode_large_threshold: {self.decode_large_threshold} has no effect without "
                                 "decode_large (the large-batch decode coefficients); pass decode_large=(a, b, c) "
                                 "too, or leave the threshold out")
        object.__setattr__(self, "arrival_overhead_s", _coefficients(
            "arrival_overhead_s", self.arrival_overhead_s, 2, ("fixed, per request", "per prompt token"),
            (_FIXED_S, _PER_TOKEN_S)))
        object.__setattr__(self, "token_overhead_s", checks.number(
            self.token_overhead_s, "token_overhead_s", low=0, unit="s", sane_high=_FIXED_S, sane_hint=_UNIT_HINT))
        checks.instance(self.name, "name", str, expected="a text label")
        if self.table is not None:
            from workbench.sim.steptable import StepTable
            checks.instance(self.table, "table", StepTable, expected="a StepTable (workbench.sim.steptable) or None")
            if self.decode_large is not None:
                raise ValueError("decode_large: a tabulated model (table=...) prices every batch size from its "
                                 "table; leave decode_large out")
        if self.prefill_time_s([1]) <= 0 or self.decode_time_s([1]) <= 0:
            raise ValueError("a step must take time: a one-token prefill and a one-request decode step must "
                             f"take > 0 s (got prefill={self.prefill}, decode={self.decode}); are the units seconds?")
        object.__setattr__(self, "pipeline_overhead_s", checks.number(
            self.pipeline_overhead_s, "pipeline_overhead_s", low=0, unit="s", sane_high=_FIXED_S,
            sane_hint=_UNIT_HINT, hint="the part of a step's fixed cost every pipeline stage repeats"))
        a, b, c = self.prefill
        if c < 0 and (a <= 0 or b <= 0):
            raise ValueError(f"prefill: a negative per-token-squared term (c = {c:g} s) needs a > 0 and b > 0 so "
                             f"that short prefills take time, got prefill={self.prefill}")

    @property
    def kind(self) -> str:
        """What the step times come from: the table's kind ("kernel-profile", "roofline", ...) or "linear"."""
        return self.table.kind if self.table is not None else "linear"

    @property
    def max_prefill_tokens(self) -> float:
        """The longest prompt for which this model's prefill time still grows with each token: ``b / -c`` when the
        quadratic term is negative (a fit's curvature), else unbounded.  ``simulate`` refuses a trace whose
        longest served prompt is beyond it (the step time would shrink, then turn negative)."""
        if self.table is not None:
            return math.inf
        _, b, c = self.prefill
        return b / -c if c < 0 else math.inf

    @classmethod
    def from_kernel_profiles(cls, folder, *, tp: int = 1, model_config=None, ep: int = 1, link_bw_gbs: float | None = None, link_latency_s: float = 0.0,
                             skew: bool = True, allow_extrapolation: bool = False,
                             name: str | None = None) -> "StepTimeModel":
        """Step times composed from LLMServingSim's per-layer kernel profiles (a bundle folder with
        ``meta.yaml`` and ``tp<N>/*.csv``) and the model's ``config.json`` (layer count and kinds); see
        :func:`workbench.sim.kernel_profiles.kernel_profile_model` for every argument."""
        from workbench.sim.kernel_profiles import kernel_profile_model
        return kernel_profile_model(folder, tp=tp, model_config=model_config, ep=ep, link_bw_gbs=link_bw_gbs,
                                    link_latency_s=link_latency_s, skew=skew,
                                    allow_extrapolation=allow_extrapolation, name=name)

    @classmethod
    def from_profile(cls, path, *, model: str, tp: int = 1) -> "StepTimeModel":
        """Read a DistServe step-time profile JSON (ms -> s; two decode regimes); see :mod:`workbench.sim.profiles`."""
        from workbench.sim.profiles import distserve_profile
        return distserve_profile(path, model=model, tp=tp)

    @classmethod
    def from_blis(cls, *, model: str, gpu: str, tp: int = 1, vllm_version: str | None = None,
                  path=None) -> "StepTimeModel":
        """Read a BLIS defaults entry (us -> s; beta -> steps, alpha -> overheads; lowest ``best_loss`` refit)."""
        from workbench.sim.profiles import blis_profile
        return blis_profile(model=model, gpu=gpu, tp=tp, vllm_version=vllm_version, path=path)

    @classmethod
    def roofline(cls, model, gpu, tp: int = 1, dtype: str = "bf16", **options) -> "StepTimeModel":
        """Step times of ``model`` (a catalogued name or a config.json path) on ``gpu`` (a catalogued name) at
        tensor parallelism ``tp`` from first principles: the roofline of :mod:`workbench.hardware.roofline`, its
        efficiencies fitted once across the workbench's measured data and stated there, never per run (kind
        ``"roofline"``).  ``options``: ``table=False`` for its linear fit (what calibration refits),
        ``max_num_seqs``/``max_num_batched_tokens`` (the batches that fit covers), ``name``, ``engine``, ``ep``
        (a mixture of experts' expert parallelism across a data-parallel group of that many replicas)."""
        from workbench.hardware.roofline import step_model
        return step_model(model, gpu, tp=tp, dtype=dtype, **options)

    @classmethod
    def blis(cls, step_s: float, prefill_token_s: float, decode_request_s: float, decode_context_token_s: float = 0.0,
             *, arrival_overhead_s=(0.0, 0.0), token_overhead_s: float = 0.0, pipeline_overhead_s: float = 0.0,
             name: str = "blis-style", source: str = "") -> "StepTimeModel":
        """A step of ``step_s + prefill_token_s * (prefill tokens computed) + decode_request_s * (decodes) +
        decode_context_token_s * (sum of the decodes' contexts)`` seconds, whatever the step mixes (BLIS's beta
        vector plus a decode-context term): ``prefill = (step_s, prefill_token_s, 0)``, ``decode = (step_s,
        decode_context_token_s, decode_request_s)``; ``pipeline_overhead_s`` as in the constructor (the
        disaggregated engine's pipelined decode)."""
        step_s, prefill_token_s, decode_request_s, decode_context_token_s = (
            checks.number(value, name, low=0, unit="s", sane_high=bound, sane_hint=_UNIT_HINT)
            for value, name, bound in ((step_s, "step_s", _FIXED_S), (prefill_token_s, "prefill_token_s", _PER_TOKEN_S),
                                       (decode_request_s, "decode_request_s", _PER_REQUEST_S),
                                       (decode_context_token_s, "decode_context_token_s", _PER_CONTEXT_S)))
        return cls(prefill=(step_s, prefill_token_s, 0.0), decode=(step_s, decode_context_token_s, decode_request_s),
                   arrival_overhead_s=arrival_overhead_s, token_overhead_s=token_overhead_s,
                   pipeline_overhead_s=pipeline_overhead_s, name=name, source=source)

    def coefficients(self) -> np.ndarray:
        """The flat float64 vector the compiled engine reads (order :data:`COEF_NAMES`)."""
        large = self.decode_large if self.decode_large is not None else self.decode
        threshold = self.decode_large_threshold if self.decode_large is not None else 2**62
        return np.array([*self.prefill, *self.decode, *large, float(threshold),
                         *self.arrival_overhead_s, self.token_overhead_s], dtype=np.float64)

    def prefill_time_s(self, prompt_lengths, prefix_lengths=None) -> float:
        """Time of a prefill-only step computing ``prompt_lengths`` tokens (after ``prefix_lengths``)."""
        if self.table is not None:
            return self.table.step_time_s(prompt_lengths, prefix_lengths, ())
        l = np.asarray(prompt_lengths, dtype=np.float64)
        p = np.zeros_like(l) if prefix_lengths is None else np.asarray(prefix_lengths, dtype=np.float64)
        a, b, c = self.prefill
        return float(a + b * l.sum() + c * (l * (p + l)).sum())

    def step_time_s(self, prompt_lengths=(), prefix_lengths=None, context_lengths=()) -> float:
        """Time of a step computing prompt pieces (``prompt_lengths`` tokens after ``prefix_lengths`` already in
        the cache) and decoding requests of ``context_lengths``: the fixed cost once (``max(a_p, a_d)`` when it
        has both), then both variable parts."""
        if self.table is not None:
            return self.table.step_time_s(prompt_lengths, prefix_lengths, context_lengths)
        l = checks.array(prompt_lengths, "prompt_lengths", integral=True, low=0, what="tokens")
        ctx = checks.array(context_lengths, "context_lengths", integral=True, low=0, what="tokens")
        if l.size == 0 and ctx.size == 0:
            raise ValueError("step_time_s: a step computes prompt tokens, decodes, or both; prompt_lengths and "
                             "context_lengths are both empty")
        if l.size == 0:
            if prefix_lengths is not None and np.size(prefix_lengths):
                raise ValueError("prefix_lengths: one per prompt piece, but prompt_lengths is empty")
            return self.decode_time_s(ctx)
        p = np.zeros_like(l) if prefix_lengths is None else checks.array(
            prefix_lengths, "prefix_lengths", integral=True, low=0, length=l.size, what="tokens")
        a_p, b_p, c_p = self.prefill
        prefill_part = b_p * l.sum() + c_p * (l * (p + l)).sum()
        if ctx.size == 0:
            return float(a_p + prefill_part)
        a_d, b_d, c_d = self.decode_large if (self.decode_large is not None
                                              and ctx.size >= self.decode_large_threshold) else self.decode
        return float(max(a_p, a_d) + prefill_part + b_d * ctx.sum() + c_d * ctx.size)

    def decode_time_s(self, context_lengths) -> float:
        """Time of a decode-only step over requests with these context lengths."""
        if self.table is not None:
            return self.table.step_time_s((), None, context_lengths)
        ctx = np.asarray(context_lengths, dtype=np.float64)
        n = ctx.size
        a, b, c = self.decode_large if (self.decode_large is not None and n >= self.decode_large_threshold) \
            else self.decode
        return float(a + b * ctx.sum() + c * n)

    def describe(self) -> str:
        ms = lambda t: ", ".join(f"{v * 1e3:.4g}" for v in t)  # noqa: E731
        if self.table is not None:
            label = self.name if self.kind in self.name else f"{self.name} [{self.kind}]"
            text = (f"{label}: step times from its table ({self.table.source}); linear summary "
                    f"prefill ({ms(self.prefill)}) ms, decode ({ms(self.decode)}) ms")
            if any(self.arrival_overhead_s) or self.token_overhead_s:
                text += (f", overheads: arrival ({ms(self.arrival_overhead_s)}) ms, "
                         f"per token {self.token_overhead_s * 1e3:.4g} ms")
            return text
        text = f"{self.name}: prefill ({ms(self.prefill)}) ms, decode ({ms(self.decode)}) ms"
        if self.decode_large is not None:
            text += f", decode at batch >= {self.decode_large_threshold} ({ms(self.decode_large)}) ms"
        if self.pipeline_overhead_s:
            text += f", per pipeline stage {self.pipeline_overhead_s * 1e3:.4g} ms of each step's fixed cost"
        if any(self.arrival_overhead_s) or self.token_overhead_s:
            text += (f", overheads: arrival ({ms(self.arrival_overhead_s)}) ms, "
                     f"per token {self.token_overhead_s * 1e3:.4g} ms")
        return text
