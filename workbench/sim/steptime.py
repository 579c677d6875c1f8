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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COEF_NAMES = (
    "prefill_a", "prefill_b", "prefill_c",
    "decode_a", "decode_b", "decode_c",
    "decode_large_a", "decode_large_b", "decode_large_c", "decode_large_threshold",
    "arrival_overhead_a", "arrival_overhead_b", "token_overhead",
)


def _triple(name: str, value) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be three numbers (a, b, c) in seconds, got {value!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: must be three finite numbers (a, b, c) in seconds, got {value!r}")
    return values


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

    def __post_init__(self):
        object.__setattr__(self, "prefill", _triple("prefill", self.prefill))
        object.__setattr__(self, "decode", _triple("decode", self.decode))
        if self.decode_large is not None:
            object.__setattr__(self, "decode_large", _triple("decode_large", self.decode_large))
            if int(self.decode_large_threshold) < 1:
                raise ValueError("decode_large_threshold: must be >= 1 when decode_large is given "
                                 f"(the batch size from which decode_large applies), got {self.decode_large_threshold!r}")
        object.__setattr__(self, "decode_large_threshold", int(self.decode_large_threshold))
        try:
            a0, a1 = (float(v) for v in self.arrival_overhead_s)
        except (TypeError, ValueError):
            raise ValueError(f"arrival_overhead_s: must be two numbers (a0, a1) in seconds, "
                             f"got {self.arrival_overhead_s!r}") from None
        object.__setattr__(self, "arrival_overhead_s", (a0, a1))
        object.__setattr__(self, "token_overhead_s", float(self.token_overhead_s))
        values = self.coefficients()
        if not np.all(np.isfinite(values)):
            raise ValueError(f"step-time coefficients must be finite, got {dict(zip(COEF_NAMES, values))}")
        if self.prefill_time_s([1]) <= 0 or self.decode_time_s([1]) <= 0:
            raise ValueError("a step must take time: a one-token prefill and a one-request decode step must "
                             f"take > 0 s (got prefill={self.prefill}, decode={self.decode}); are the units seconds?")
        if min(a0, a1, self.token_overhead_s) < 0:
            raise ValueError("overheads must be >= 0 seconds")

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
    def blis(cls, step_s: float, prefill_token_s: float, decode_request_s: float, decode_context_token_s: float = 0.0,
             *, arrival_overhead_s=(0.0, 0.0), token_overhead_s: float = 0.0, name: str = "blis-style",
             source: str = "") -> "StepTimeModel":
        """A step of ``step_s + prefill_token_s * (prefill tokens computed) + decode_request_s * (decodes) +
        decode_context_token_s * (sum of the decodes' contexts)`` seconds, whatever the step mixes (BLIS's beta
        vector plus a decode-context term): ``prefill = (step_s, prefill_token_s, 0)``, ``decode = (step_s,
        decode_context_token_s, decode_request_s)``."""
        return cls(prefill=(step_s, prefill_token_s, 0.0), decode=(step_s, decode_context_token_s, decode_request_s),
                   arrival_overhead_s=arrival_overhead_s, token_overhead_s=token_overhead_s, name=name, source=source)

    def coefficients(self) -> np.ndarray:
        """The flat float64 vector the compiled engine reads (order :data:`COEF_NAMES`)."""
        large = self.decode_large if self.decode_large is not None else self.decode
        threshold = self.decode_large_threshold if self.decode_large is not None else 2**62
        return np.array([*self.prefill, *self.decode, *large, float(threshold),
                         *self.arrival_overhead_s, self.token_overhead_s], dtype=np.float64)

    def prefill_time_s(self, prompt_lengths, prefix_lengths=None) -> float:
        """Time of a prefill-only step computing ``prompt_lengths`` tokens (after ``prefix_lengths``)."""
        l = np.asarray(prompt_lengths, dtype=np.float64)
        p = np.zeros_like(l) if prefix_lengths is None else np.asarray(prefix_lengths, dtype=np.float64)
        a, b, c = self.prefill
        return float(a + b * l.sum() + c * (l * (p + l)).sum())

    def step_time_s(self, prompt_lengths=(), prefix_lengths=None, context_lengths=()) -> float:
        """Time of a step computing prompt pieces (``prompt_lengths`` tokens after ``prefix_lengths`` already in
        the cache) and decoding requests of ``context_lengths``: the fixed cost once (``max(a_p, a_d)`` when it
        has both), then both variable parts."""
        l = np.asarray(prompt_lengths, dtype=np.float64)
        ctx = np.asarray(context_lengths, dtype=np.float64)
        if l.size == 0 and ctx.size == 0:
            raise ValueError("step_time_s: a step computes prompt tokens, decodes, or both")
        if l.size == 0:
            return self.decode_time_s(ctx)
        p = np.zeros_like(l) if prefix_lengths is None else np.asarray(prefix_lengths, dtype=np.float64)
        a_p, b_p, c_p = self.prefill
        prefill_part = b_p * l.sum() + c_p * (l * (p + l)).sum()
        if ctx.size == 0:
            return float(a_p + prefill_part)
        a_d, b_d, c_d = self.decode_large if (self.decode_large is not None
                                              and ctx.size >= self.decode_large_threshold) else self.decode
        return float(max(a_p, a_d) + prefill_part + b_d * ctx.sum() + c_d * ctx.size)

    def decode_time_s(self, context_lengths) -> float:
        """Time of a decode-only step over requests with these context lengths."""
        ctx = np.asarray(context_lengths, dtype=np.float64)
        n = ctx.size
        a, b, c = self.decode_large if (self.decode_large is not None and n >= self.decode_large_threshold) \
            else self.decode
        return float(a + b * ctx.sum() + c * n)

    def describe(self) -> str:
        ms = lambda t: ", ".join(f"{v * 1e3:.4g}" for v in t)  # noqa: E731
        text = f"{self.name}: prefill ({ms(self.prefill)}) ms, decode ({ms(self.decode)}) ms"
        if self.decode_large is not None:
            text += f", decode at batch >= {self.decode_large_threshold} ({ms(self.decode_large)}) ms"
        if any(self.arrival_overhead_s) or self.token_overhead_s:
            text += (f", overheads: arrival ({ms(self.arrival_overhead_s)}) ms, "
                     f"per token {self.token_overhead_s * 1e3:.4g} ms")
        return text
