"""Tabulated step times: the one representation kernel-profile and roofline step models compile to.

A :class:`StepTable` prices an engine step from what it holds, in seconds::

    step = max(fixed_prefill_s [if it computes prompt tokens], fixed_decode_s [if it decodes])
         + token_s(tokens)                  tokens = prefill tokens computed + decodes
         + seq_s(seqs)                      seqs   = prefill pieces + decodes
         + prefill_quad_s * sum(l * (p + l))      over the prefill pieces (l computed now after p cached)
         + attention_s(pc, kp, nd, kv_mean)       pc = sum(l), kp = sum(p), nd decodes of mean context kv_mean
         + alpha * (attention_s(pc, kp, nd, kv_max) - attention_s(pc, kp, nd, kv_mean))   (the skew correction,
           only when nd >= 2, kv_max > kv_mean, alpha != 0 and the difference is > 0)

``token_s`` and ``seq_s`` are 1-D tables (linear interpolation), ``attention_s`` a 4-D table (linear on every
axis, as LLMServingSim's ``serving/core/trace_generator.py::_lookup_attention`` blends it: the four axes
bracketed by their two neighbouring grid values, ``_axis_bracket``), ``alpha`` a bucket table
(``_skew_alpha``).  Below a grid's first value a lookup takes that value (LLMServingSim does the same); above
its last it extrapolates from the last two, which a run may do only when the table says so
(``extrapolate=True``): otherwise :func:`workbench.sim.simulate.simulate` refuses the run and says which axis
went how far past its grid.

The kernel-profile reader (:mod:`workbench.sim.kernel_profiles`) fills every part from measured kernels; a
roofline model fills them from the hardware's peaks; a plain linear
:class:`~workbench.sim.steptime.StepTimeModel` is the special case ``token_s = seq_s = 0``,
``attention_s = b_p * pc + b_d * nd * kv + c_d * nd`` (multilinear, so every grid reproduces it exactly),
``prefill_quad_s = c_p`` (see :meth:`StepTable.from_linear`).

Decode runs.  The continuous engine runs ``k`` decode-only steps in one event when nothing joins
(``k E + F k (k - 1) / 2``): a step of ``n`` decodes must then be linear in the context sum.  With every table
linear between grid points it is, piecewise: for fixed ``n``, ``attention_s(0, 0, n, kv)`` is linear in ``kv``
between consecutive *breakpoints* (the kv grid and the skew table's kv bucket edges), and every step of a run
adds one token to each context, so ``kv_mean`` and ``kv_max`` each grow by one.  :func:`table_decode_run`
returns the first step's time ``e``, the growth per step ``f`` and the number of steps ``k_max`` for which
``e + f i`` is exact (until ``kv_mean`` or ``kv_max`` passes a breakpoint or the skew difference changes
sign); the engine ends the run there.  The per-``n`` coefficients are precomputed by :func:`pack` for every
``n`` up to the run's ``max_num_seqs``, outside the compiled loop.

The compiled functions read the table from two flat arrays (:func:`pack`): ``tf`` (float64) and ``ti``
(int64), whose layout is the ``TI_*``/``TF_*`` constants below; ``tf[TF_SEEN_*]`` are scratch slots where the
engine records the largest value it asked of each axis (so a run outside the grid is caught after it).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from workbench import checks

# ---------------------------------------------------------------- the flat layout (pack / compiled functions)
# ti: offsets into tf and lengths
(TI_TOK, TI_TOK_N, TI_SEQ, TI_SEQ_N, TI_PC, TI_PC_N, TI_KP, TI_KP_N, TI_ND, TI_ND_N, TI_KV, TI_KV_N, TI_ATT,
 TI_SKEW, TI_SK_PC, TI_SK_PC_N, TI_SK_N, TI_SK_N_N, TI_SK_SR, TI_SK_SR_N, TI_SK_KVB, TI_SK_KVB_N, TI_SK_KP,
 TI_SK_KP_N, TI_SK_ALPHA, TI_BRK, TI_BRK_N, TI_DEC_C, TI_DEC_B, TI_DEC_NMAX, TI_DEC_NSEG,
 # dense lookups of whole numbers 0 .. count - 1 (offset, count): token_s and seq_s values; the pc and nd axes'
 # brackets as (lo, t) pairs
 TI_TOK_D, TI_TOK_DN, TI_SEQ_D, TI_SEQ_DN, TI_PC_D, TI_PC_DN, TI_ND_D, TI_ND_DN,
 # 1 when attention_s is A(pc, kp) + D(nd, kv): then the two 2-D tables' offsets
 TI_SEP, TI_ATT_A, TI_ATT_D) = range(42)
TI_N = 42
# tf: scalars, then the scratch slots the engine writes (largest value asked of each axis), then the arrays
TF_QUAD, TF_FIXED_P, TF_FIXED_D, TF_ALPHA_DEFAULT, TF_TOK_STEP, TF_SEQ_STEP = range(6)
TF_SEEN_TOKENS, TF_SEEN_SEQS, TF_SEEN_PC, TF_SEEN_KP, TF_SEEN_ND, TF_SEEN_KV = range(6, 12)
TF_HEAD = 12
SEEN_AXES = ("tokens", "seqs", "pc", "kp", "nd", "kv")   # TF_SEEN_* in order, named as StepTable.limits() names them
OCTAVES = 64   # octave table of a searched grid: 2**0 .. 2**63
DENSE_MAX = 1 << 18   # longest dense lookup table pack writes (whole numbers 0 .. DENSE_MAX - 1)


# ---------------------------------------------------------------- compiled evaluation
@njit(cache=True, inline="always")
def _last_le(tf, off, n, x, ioff):
    """Index of the last value <= ``x`` of the ascending grid ``tf[off:off+n]``, for ``grid[0] <= x <
    grid[n-1]``: bisection between the octave table's bounds (``tf[ioff + k]``: the last index whose value is
    <= 2**k, see :func:`_octaves`), so a geometric grid takes one or two steps."""
    if x >= 1.0:
        k = min(math.frexp(x)[1] - 1, OCTAVES - 2)   # 2**k <= x < 2**(k+1)
        lo = int(tf[ioff + k])
        hi = min(int(tf[ioff + k + 1]) + 1, n - 1)
    else:
        lo = 0
        hi = min(int(tf[ioff]) + 1, n - 1)
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if tf[off + mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _bracket(tf, off, n, x, ioff):
    """(lo, t): ``x`` lies at ``grid[lo] + t (grid[lo + 1] - grid[lo])`` on the ascending grid ``tf[off:off+n]``;
    t = 0 below the first value (the first value is taken), t > 1 past the last two (linear extrapolation)."""
    if n <= 1 or x <= tf[off]:
        return 0, 0.0
    if x >= tf[off + n - 1]:
        lo = n - 2
    else:
        lo = _last_le(tf, off, n, x, ioff)
    x0 = tf[off + lo]
    return lo, (x - x0) / (tf[off + lo + 1] - x0)


@njit(cache=True, inline="always")
def _interp(tf, off, n, x, step):
    """Linear interpolation of the 1-D table at ``tf[off:off+n]`` (grid) and ``tf[off+n:off+2n]`` (values);
    ``step > 0``: the grid is evenly spaced by it (the position is computed, not searched)."""
    if n == 0:
        return 0.0
    if step > 0.0 and n > 1:
        g0 = tf[off]
        if x <= g0:
            return tf[off + n]
        lo = min(int((x - g0) / step), n - 2)
        t = (x - tf[off + lo]) / step
    else:
        lo, t = _bracket(tf, off, n, x, off + 2 * n)
    v0 = tf[off + n + lo]
    if t == 0.0:
        return v0
    return v0 + t * (tf[off + n + lo + 1] - v0)


@njit(cache=True, inline="always")
def _axis(tf, ti, which, x):
    """:func:`_bracket` on an attention axis (``which``: TI_PC, TI_KP, TI_ND or TI_KV; its octave table follows
    its grid)."""
    off = ti[which]
    n = ti[which + 1]
    return _bracket(tf, off, n, x, off + n)


@njit(cache=True, inline="always")
def _interp_whole(tf, ti, dense, x, which, step):
    """:func:`_interp` of the 1-D table ``which`` (TI_TOK or TI_SEQ) at ``x``: one read of its dense table
    (``dense``: TI_TOK_D or TI_SEQ_D) when ``x`` is a whole number within it, else the interpolation."""
    xi = int(x)
    if xi == x and xi < ti[dense + 1]:
        return tf[ti[dense] + xi]
    return _interp(tf, ti[which], ti[which + 1], float(x), step)


@njit(cache=True, inline="always")
def _axis_whole(tf, ti, dense, which, x):
    """:func:`_axis` at ``x`` (the pc or nd axis): its bracket read from the dense table (``dense``: TI_PC_D or
    TI_ND_D) when ``x`` is a whole number within it, else searched."""
    xi = int(x)
    if xi == x and xi < ti[dense + 1]:
        at = ti[dense] + 2 * xi
        return int(tf[at]), tf[at + 1]
    return _axis(tf, ti, which, float(x))


@njit(cache=True, inline="always")
def _bilinear(tf, base, n_a, n_b, i0, ta, j0, tb):
    """Bilinear interpolation of the (n_a, n_b) table at ``tf[base:]`` between rows i0, i0 + 1 and columns j0,
    j0 + 1 (an axis of one value is read at stride 0)."""
    d_b = 1 if n_b > 1 else 0
    d_a = n_b if n_a > 1 else 0
    b = base + i0 * n_b + j0
    c0 = tf[b] + tb * (tf[b + d_b] - tf[b])
    c1 = tf[b + d_a] + tb * (tf[b + d_a + d_b] - tf[b + d_a])
    return c0 + ta * (c1 - c0)


@njit(cache=True, inline="always")
def _decode_attention(tf, ti, k0, tk, kv):
    """The decode part D(nd, kv) of a separable attention table (nd's bracket found)."""
    l0, tl = _axis(tf, ti, TI_KV, kv)
    return _bilinear(tf, ti[TI_ATT_D], ti[TI_ND_N], ti[TI_KV_N], k0, tk, l0, tl)


@njit(cache=True, inline="always")
def _attention(tf, ti, pc, kp, nd, kv):
    """The 4-D attention table at (pc, kp, nd, kv), multilinear (bilinear in (pc, nd) of bilinear (kp, kv)
    slices, as LLMServingSim's ``_lookup_attention`` / ``_attn_slice_lookup``)."""
    i0, ti_ = _axis(tf, ti, TI_PC, pc)
    j0, tj = _axis(tf, ti, TI_KP, kp)
    k0, tk = _axis(tf, ti, TI_ND, nd)
    return _attention_at(tf, ti, i0, ti_, j0, tj, k0, tk, kv)


@njit(cache=True, inline="always")
def _attention_at(tf, ti, i0, ti_, j0, tj, k0, tk, kv):
    """:func:`_attention` with the (pc, kp, nd) brackets already found (a step looks kv up twice): the 16
    corners written out (an axis of one value has weight 0 on its second corner, read at stride 0)."""
    n_pc, n_kp, n_nd, n_kv = ti[TI_PC_N], ti[TI_KP_N], ti[TI_ND_N], ti[TI_KV_N]
    l0, tl = _axis(tf, ti, TI_KV, kv)
    s_nd = n_kv
    s_kp = n_nd * s_nd
    s_pc = n_kp * s_kp
    d_kv = 1 if n_kv > 1 else 0
    d_nd = s_nd if n_nd > 1 else 0
    d_kp = s_kp if n_kp > 1 else 0
    d_pc = s_pc if n_pc > 1 else 0
    b = ti[TI_ATT] + i0 * s_pc + j0 * s_kp + k0 * s_nd + l0
    total = 0.0
    for a in range(2):
        ba = b + a * d_pc
        c00 = tf[ba] + tl * (tf[ba + d_kv] - tf[ba])
        c01 = tf[ba + d_nd] + tl * (tf[ba + d_nd + d_kv] - tf[ba + d_nd])
        c10 = tf[ba + d_kp] + tl * (tf[ba + d_kp + d_kv] - tf[ba + d_kp])
        c11 = tf[ba + d_kp + d_nd] + tl * (tf[ba + d_kp + d_nd + d_kv] - tf[ba + d_kp + d_nd])
        v = (1.0 - tj) * (c00 + tk * (c01 - c00)) + tj * (c10 + tk * (c11 - c10))
        total += ((1.0 - ti_) if a == 0 else ti_) * v
    return total


@njit(cache=True, inline="always")
def _bucket(tf, off, n_edges, x):
    """Bucket of ``x`` among right-inclusive bins ``(e[i], e[i+1]]`` of the edges ``tf[off:off+n_edges]``: the
    count of edges below ``x``, minus one, kept within the ``n_edges - 1`` buckets (LLMServingSim's
    ``_bucket_label``: the last bucket takes anything above)."""
    i = 0
    while i < n_edges - 1 and x > tf[off + i + 1]:
        i += 1
    return min(i, n_edges - 2)


@njit(cache=True, inline="always")
def _alpha(tf, ti, pc, n, kv_mean, kv_max, kv_min, kp):
    """The skew table's alpha for a step (``_skew_alpha``): exact prefill-chunk match, else the default."""
    if ti[TI_SKEW] == 0:
        return 0.0
    n_pc = ti[TI_SK_PC_N]
    p = -1
    for i in range(n_pc):
        if tf[ti[TI_SK_PC] + i] == pc:
            p = i
            break
    if p < 0:
        return tf[TF_ALPHA_DEFAULT]
    gap = kv_max - kv_min
    rate = (kv_mean - kv_min) / gap if gap > 0 else 0.5
    rate = min(max(rate, 0.0), 1.0)
    nb_n, nb_sr, nb_kvb, nb_kp = ti[TI_SK_N_N] - 1, ti[TI_SK_SR_N] - 1, ti[TI_SK_KVB_N] - 1, ti[TI_SK_KP_N] - 1
    a = _bucket(tf, ti[TI_SK_N], nb_n + 1, float(n))
    b = _bucket(tf, ti[TI_SK_SR], nb_sr + 1, rate)
    c = _bucket(tf, ti[TI_SK_KVB], nb_kvb + 1, kv_max)
    d = _bucket(tf, ti[TI_SK_KP], nb_kp + 1, kp)
    return tf[ti[TI_SK_ALPHA] + (((p * nb_n + a) * nb_sr + b) * nb_kvb + c) * nb_kp + d]


@njit(cache=True, inline="always")
def _seen(tf, slot, x):
    if x > tf[slot]:
        tf[slot] = x


@njit(cache=True, inline="always")
def table_step_s(tf, ti, pf_tokens, pf_reqs, pf_hist, pf_quad, nd, ctx_sum, kv_max, kv_min):
    """Seconds of one step: ``pf_reqs`` prefill pieces computing ``pf_tokens`` tokens in all after ``pf_hist``
    cached ones in all (``pf_quad = sum(l * (p + l))``), and ``nd`` decodes whose contexts sum to ``ctx_sum``,
    the longest ``kv_max`` and the shortest ``kv_min`` (see the module docstring; ``pf_tokens``, ``pf_reqs`` and
    ``nd`` whole numbers)."""
    tokens = float(pf_tokens + nd)
    seqs = float(pf_reqs + nd)
    kv = ctx_sum / nd if nd > 0 else 0.0
    _seen(tf, TF_SEEN_TOKENS, tokens)
    _seen(tf, TF_SEEN_SEQS, seqs)
    _seen(tf, TF_SEEN_PC, float(pf_tokens))
    _seen(tf, TF_SEEN_KP, float(pf_hist))
    _seen(tf, TF_SEEN_ND, float(nd))
    _seen(tf, TF_SEEN_KV, kv_max if nd > 0 else 0.0)
    fixed = 0.0
    if pf_reqs > 0:
        fixed = tf[TF_FIXED_P]
    if nd > 0 and tf[TF_FIXED_D] > fixed:
        fixed = tf[TF_FIXED_D]
    t = (fixed + _interp_whole(tf, ti, TI_TOK_D, pf_tokens + nd, TI_TOK, tf[TF_TOK_STEP])
         + _interp_whole(tf, ti, TI_SEQ_D, pf_reqs + nd, TI_SEQ, tf[TF_SEQ_STEP]) + tf[TF_QUAD] * pf_quad)
    i0, ti_ = _axis_whole(tf, ti, TI_PC_D, TI_PC, pf_tokens)
    j0, tj = _axis(tf, ti, TI_KP, float(pf_hist))
    k0, tk = _axis_whole(tf, ti, TI_ND_D, TI_ND, nd)
    if ti[TI_SEP]:   # A(pc, kp) + D(nd, kv): two bilinear lookups instead of one of 16 corners
        t += _bilinear(tf, ti[TI_ATT_A], ti[TI_PC_N], ti[TI_KP_N], i0, ti_, j0, tj)
        t_mean = _decode_attention(tf, ti, k0, tk, kv)
    else:
        t_mean = _attention_at(tf, ti, i0, ti_, j0, tj, k0, tk, kv)
    t += t_mean
    if nd >= 2 and kv_max > kv:
        alpha = _alpha(tf, ti, float(pf_tokens), nd, kv, kv_max, kv_min, float(pf_hist))
        if alpha != 0.0:
            if ti[TI_SEP]:
                t_max = _decode_attention(tf, ti, k0, tk, kv_max)
            else:
                t_max = _attention_at(tf, ti, i0, ti_, j0, tj, k0, tk, kv_max)
            if t_max > t_mean:
                t += alpha * (t_max - t_mean)
    return t


@njit(cache=True, inline="always")
def table_token_s(tf, ti, tokens):
    """``token_s`` at a whole number of tokens (recorded among the axes seen): what a step's token-dependent part
    (non-attention layers, MoE, their collectives) costs; the engine prices a data-parallel rank's padding with it."""
    _seen(tf, TF_SEEN_TOKENS, float(tokens))
    return _interp_whole(tf, ti, TI_TOK_D, tokens, TI_TOK, tf[TF_TOK_STEP])


@njit(cache=True, inline="always")
def table_seq_s(tf, ti, seqs):
    """``seq_s`` at a whole number of sequences (the per-sequence part: LM head, sampler)."""
    return _interp_whole(tf, ti, TI_SEQ_D, seqs, TI_SEQ, tf[TF_SEQ_STEP])


@njit(cache=True, inline="always")
def _segment(tf, ti, x):
    """Decode segment of a context ``x``: the count of breakpoints below it (segment j covers
    ``(brk[j-1], brk[j]]``; segment 0 everything up to the first, the last everything past the last)."""
    off = ti[TI_BRK]
    n = ti[TI_BRK_N]
    if x <= tf[off]:
        return 0
    if x > tf[off + n - 1]:
        return n
    if n <= 8:   # a few breakpoints (a roofline's): counted, not searched
        j = 1
        while tf[off + j] < x:
            j += 1
        return j
    lo = _last_le(tf, off, n, x, off + n) if x < tf[off + n - 1] else n - 1
    return lo if tf[off + lo] == x else lo + 1


@njit(cache=True, inline="always")
def table_decode_run(tf, ti, n, ctx_sum, kv_max, kv_min):
    """A decode-only step of ``n`` decodes (contexts summing to ``ctx_sum``, longest ``kv_max``, shortest
    ``kv_min``; integers): ``(e, f, k_max)`` such that the ``i``-th step from it (every context ``i`` tokens
    longer) takes ``e + f i`` seconds for ``0 <= i < k_max`` (``k_max >= 1``; 2**62: no limit)."""
    nseg = ti[TI_DEC_NSEG]
    row = min(n, ti[TI_DEC_NMAX]) * nseg
    kv = ctx_sum / n
    j = _segment(tf, ti, kv)
    c_mean = tf[ti[TI_DEC_C] + row + j]
    b_mean = tf[ti[TI_DEC_B] + row + j]
    e = c_mean + b_mean * kv
    f = b_mean
    brk = ti[TI_BRK]
    n_brk = ti[TI_BRK_N]
    k_max = 2 ** 62
    if j < n_brk:   # kv_mean may reach brk[j]: i <= (brk[j] n - ctx_sum) / n (exact in floats for whole tokens)
        k_max = int(math.floor((tf[brk + j] * n - ctx_sum) / n)) + 1
    _seen(tf, TF_SEEN_TOKENS, float(n))
    _seen(tf, TF_SEEN_SEQS, float(n))
    _seen(tf, TF_SEEN_ND, float(n))
    if n >= 2 and kv_max > kv:
        alpha = _alpha(tf, ti, 0.0, n, kv, float(kv_max), float(kv_min), 0.0)
        if alpha != 0.0:
            jm = _segment(tf, ti, float(kv_max))
            b_max = tf[ti[TI_DEC_B] + row + jm]
            diff0 = tf[ti[TI_DEC_C] + row + jm] + b_max * kv_max - (c_mean + b_mean * kv)
            slope = b_max - b_mean
            if jm < n_brk:
                k_max = min(k_max, int(math.floor(tf[brk + jm] - kv_max)) + 1)
            # the correction applies while the difference stays > 0: the run ends where that changes
            if diff0 > 0.0:
                e += alpha * diff0
                f += alpha * slope
                if slope < 0.0:
                    k_max = min(k_max, int(math.ceil(diff0 / -slope)))
            elif slope > 0.0:
                k_max = min(k_max, int(math.floor(-diff0 / slope)) + 1)
    return e, f, max(k_max, 1)


@njit(cache=True, inline="always")
def table_record_run(tf, kv_max, k):
    """Record a decode run's reach (``k`` steps from a longest context ``kv_max``) among the axes seen."""
    _seen(tf, TF_SEEN_KV, float(kv_max + k - 1))


@njit(cache=True)
def step_time_py(tf, ti, pf_tokens, pf_reqs, pf_hist, pf_quad, nd, ctx_sum, kv_max, kv_min):
    """:func:`table_step_s` callable from Python (tests, :meth:`StepTable.step_time_s`)."""
    return table_step_s(tf, ti, pf_tokens, pf_reqs, pf_hist, pf_quad, nd, ctx_sum, kv_max, kv_min)


@njit(cache=True)
def decode_run_py(tf, ti, n, ctx_sum, kv_max, kv_min):
    """:func:`table_decode_run` callable from Python."""
    return table_decode_run(tf, ti, n, ctx_sum, kv_max, kv_min)


# ---------------------------------------------------------------- Python side
def _grid(value, name: str, *, low=0.0) -> np.ndarray:
    g = checks.array(value, name, low=low, what="grid values")
    if g.size == 0:
        raise ValueError(f"{name}: a grid needs at least one value, got none")
    if g.size > 1 and np.any(np.diff(g) <= 0):
        i = int(np.flatnonzero(np.diff(g) <= 0)[0])
        raise ValueError(f"{name}: grid values must increase strictly; value {i + 1} ({g[i + 1]:g}) follows "
                         f"{g[i]:g}")
    return np.ascontiguousarray(g, dtype=np.float64)


def _values(value, name: str, shape: tuple) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.shape != shape:
        raise ValueError(f"{name}: expected an array of shape {shape} (one value per grid point), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: every value must be finite seconds, found {int(np.sum(~np.isfinite(v)))} that "
                         "are not")
    if np.any(v < 0):
        raise ValueError(f"{name}: step-time parts are seconds >= 0, found {float(v.min()):g}")
    return np.ascontiguousarray(v)


@dataclass(frozen=True, eq=False)
class SkewTable:
    """LLMServingSim's skew correction (``docs-skew-alpha-fit.md``): ``alpha`` per bucket of (prefill chunk
    total ``pc``, exact match with ``pc_values``; decodes ``n``; skew rate ``(mean - min) / (max - min)``;
    longest decode context ``kv_max``; prefill history ``kp``), buckets right-inclusive between consecutive
    edges, the last bucket taking anything above; ``alpha_default`` for a ``pc`` not in ``pc_values`` (the
    table's missing buckets are filled with it by the reader)."""

    pc_values: np.ndarray
    n_edges: np.ndarray
    rate_edges: np.ndarray
    kv_max_edges: np.ndarray
    kp_edges: np.ndarray
    alpha: np.ndarray      # (len(pc_values), n buckets, rate buckets, kv_max buckets, kp buckets)
    alpha_default: float

    def __post_init__(self):
        object.__setattr__(self, "pc_values", _grid(self.pc_values, "skew pc_values"))
        for name in ("n_edges", "rate_edges", "kv_max_edges", "kp_edges"):
            object.__setattr__(self, name, _grid(getattr(self, name), f"skew {name}", low=None))
            if getattr(self, name).size < 2:
                raise ValueError(f"skew {name}: bucket edges need at least two values")
        shape = (self.pc_values.size, self.n_edges.size - 1, self.rate_edges.size - 1, self.kv_max_edges.size - 1,
                 self.kp_edges.size - 1)
        a = np.asarray(self.alpha, dtype=np.float64)
        if a.shape != shape or not np.all(np.isfinite(a)):
            raise ValueError(f"skew alpha: expected finite values of shape {shape}, got shape {a.shape}")
        object.__setattr__(self, "alpha", np.ascontiguousarray(a))
        object.__setattr__(self, "alpha_default", checks.number(self.alpha_default, "skew alpha_default"))


@dataclass(frozen=True, eq=False)
class StepTable:
    """A step's time in seconds from tables of what it holds (see the module docstring for the formula).

    ``token_grid``/``token_s``: every part that depends only on the tokens computed in the step (the
    non-attention layers, MoE, tensor-parallel communication); ``seq_grid``/``seq_s``: parts per sequence of
    the step (LM head, sampler); ``pc_grid``, ``kp_grid``, ``nd_grid``, ``kv_grid`` and ``attention_s`` of
    shape (pc, kp, nd, kv): attention of all layers; ``prefill_quad_s``: seconds per ``sum(l * (p + l))``;
    ``fixed_prefill_s``/``fixed_decode_s``: a step's fixed cost; ``skew``: a :class:`SkewTable` or None;
    ``extrapolate``: whether a run may go past the grids (linear extrapolation) instead of being refused;
    ``kind`` (e.g. "kernel-profile", "roofline", "linear") and ``source``: where the numbers come from.
    """

    token_grid: np.ndarray
    token_s: np.ndarray
    seq_grid: np.ndarray
    seq_s: np.ndarray
    pc_grid: np.ndarray
    kp_grid: np.ndarray
    nd_grid: np.ndarray
    kv_grid: np.ndarray
    attention_s: np.ndarray
    prefill_quad_s: float = 0.0
    fixed_prefill_s: float = 0.0
    fixed_decode_s: float = 0.0
    skew: SkewTable | None = None
    extrapolate: bool = False
    kind: str = "table"
    source: str = field(default="")

    def __post_init__(self):
        for g, v in (("token_grid", "token_s"), ("seq_grid", "seq_s")):
            object.__setattr__(self, g, _grid(getattr(self, g), g))
            object.__setattr__(self, v, _values(getattr(self, v), v, getattr(self, g).shape))
        for g in ("pc_grid", "kp_grid", "nd_grid", "kv_grid"):
            object.__setattr__(self, g, _grid(getattr(self, g), g))
        shape = tuple(getattr(self, g).size for g in ("pc_grid", "kp_grid", "nd_grid", "kv_grid"))
        object.__setattr__(self, "attention_s", _values(self.attention_s, "attention_s", shape))
        for name in ("prefill_quad_s", "fixed_prefill_s", "fixed_decode_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, unit="s"))
        if self.skew is not None:
            checks.instance(self.skew, "skew", SkewTable, expected="a SkewTable or None")
        object.__setattr__(self, "extrapolate", checks.boolean(self.extrapolate, "extrapolate"))
        checks.instance(self.kind, "kind", str, expected="a text label")
        checks.instance(self.source, "source", str, expected="a text")
        object.__setattr__(self, "_packs", {})

    # ------------------------------------------------------------ construction
    @classmethod
    def from_linear(cls, prefill, decode, *, max_tokens: float = 2**20, max_seqs: float = 2**16,
                    max_context: float = 2**22) -> "StepTable":
        """The table of a plain linear model (``prefill = (a_p, b_p, c_p)``, ``decode = (a_d, b_d, c_d)``,
        seconds; :class:`~workbench.sim.steptime.StepTimeModel`'s form without ``decode_large``): it prices
        every step exactly as the linear model does (the engines' equivalence tests use it)."""
        a_p, b_p, c_p = (float(v) for v in prefill)
        a_d, b_d, c_d = (float(v) for v in decode)
        pc = np.array([0.0, float(max_tokens)])
        kp = np.array([0.0, float(max_context)])
        nd = np.array([0.0, float(max_seqs)])
        kv = np.array([0.0, float(max_context)])
        P, K, N, V = np.meshgrid(pc, kp, nd, kv, indexing="ij")
        attention = b_p * P + b_d * N * V + c_d * N
        return cls(token_grid=[0.0, float(max_tokens) + max_seqs], token_s=[0.0, 0.0], seq_grid=[0.0, max_seqs + 0.0],
                   seq_s=[0.0, 0.0], pc_grid=pc, kp_grid=kp,
                   nd_grid=nd, kv_grid=kv, attention_s=attention, prefill_quad_s=c_p, fixed_prefill_s=a_p,
                   fixed_decode_s=a_d, kind="linear", source="a linear step-time model written as a table")

    # ------------------------------------------------------------ facts
    def limits(self) -> dict:
        """The largest value of each axis the grids cover (``SEEN_AXES`` names; kv is the decode context)."""
        return {"tokens": float(self.token_grid[-1]), "seqs": float(self.seq_grid[-1]),
                "pc": float(self.pc_grid[-1]), "kp": float(self.kp_grid[-1]), "nd": float(self.nd_grid[-1]),
                "kv": float(self.kv_grid[-1])}

    def breakpoints(self) -> np.ndarray:
        """Decode-context values where a decode step's time may change slope: the kv grid and the skew
        table's kv bucket edges (finite, > 0)."""
        points = [self.kv_grid]
        if self.skew is not None:
            edges = self.skew.kv_max_edges
            points.append(edges[np.isfinite(edges) & (edges > 0) & (edges < 2**52)])
        return np.unique(np.concatenate(points))

    @property
    def fingerprint(self) -> str:
        """A hash of every number in the table (results are keyed by it)."""
        h = hashlib.sha256()
        for a in (self.token_grid, self.token_s, self.seq_grid, self.seq_s, self.pc_grid, self.kp_grid,
                  self.nd_grid, self.kv_grid, self.attention_s):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(np.array([self.prefill_quad_s, self.fixed_prefill_s, self.fixed_decode_s,
                           float(self.extrapolate)]).tobytes())
        if self.skew is not None:
            for a in (self.skew.pc_values, self.skew.n_edges, self.skew.rate_edges, self.skew.kv_max_edges,
                      self.skew.kp_edges, self.skew.alpha):
                h.update(np.ascontiguousarray(a).tobytes())
            h.update(np.array([self.skew.alpha_default]).tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------ the compiled form
    def pack(self, max_decodes: int, max_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The flat arrays ``(tf, ti)`` the compiled functions read, with the decode-run coefficients for 1 to
        ``max_decodes`` decodes; a fresh ``tf`` each call (its scratch slots are written by the engine).
        Steps of up to ``max_decodes`` sequences and ``max_tokens`` prefill tokens (an engine's budgets) read
        their token, sequence, prefill and decode-count lookups from dense tables, one read each; larger ones
        search the grids (the same values)."""
        max_decodes = checks.integer(max_decodes, "max_decodes", low=1, high=2**24)
        max_tokens = checks.integer(max_tokens, "max_tokens", low=0, high=2**24)
        cached = self._packs.get((max_decodes, max_tokens))
        if cached is None:
            cached = _pack(self, max_decodes, max_tokens)
            self._packs[(max_decodes, max_tokens)] = cached
        tf, ti = cached
        return tf.copy(), ti

    def step_time_s(self, prompt_lengths=(), prefix_lengths=None, context_lengths=()) -> float:
        """Seconds of a step computing prompt pieces (``prompt_lengths`` tokens after ``prefix_lengths`` already
        in the cache) and decoding requests of ``context_lengths``."""
        l = checks.array(prompt_lengths, "prompt_lengths", low=0, what="tokens")
        ctx = checks.array(context_lengths, "context_lengths", low=0, what="tokens")
        p = np.zeros_like(l) if prefix_lengths is None else checks.array(
            prefix_lengths, "prefix_lengths", low=0, length=l.size, what="tokens")
        if l.size == 0 and ctx.size == 0:
            raise ValueError("step_time_s: a step computes prompt tokens, decodes, or both; prompt_lengths and "
                             "context_lengths are both empty")
        tf, ti = self.pack(max(1, ctx.size))
        kv_max = float(ctx.max()) if ctx.size else 0.0
        kv_min = float(ctx.min()) if ctx.size else 0.0
        return float(step_time_py(tf, ti, float(l.sum()), int(l.size), float(p.sum()), float((l * (p + l)).sum()),
                                  int(ctx.size), float(ctx.sum()), kv_max, kv_min))

    def check_seen(self, tf: np.ndarray, what: str) -> None:
        """Refuse a run whose steps went past a grid (``tf``: the packed table after the run), unless the table
        extrapolates: then log how far."""
        import logging

        limits = self.limits()
        past = []
        for slot, axis in enumerate(SEEN_AXES):
            seen = float(tf[TF_SEEN_TOKENS + slot])
            if seen > limits[axis] * (1 + 1e-12):
                past.append(f"{_AXIS_TEXT[axis]} up to {seen:,.0f}, the grid ends at {limits[axis]:,.0f} "
                            f"({seen / limits[axis] - 1:+.0%})" if limits[axis] > 0 else
                            f"{_AXIS_TEXT[axis]} up to {seen:,.0f}, the grid has only 0")
        if not past:
            return
        text = f"{what} formed steps outside the {self.kind} table's grid: " + "; ".join(past)
        if self.extrapolate:
            logging.getLogger(__name__).warning("%s (extrapolated linearly from the last two grid points)", text)
            return
        raise ValueError(text + ". Lower the settings that bound them (max_num_batched_tokens, max_num_seqs; the "
                         "trace's longest prompt + output), profile a wider grid, or build the model with "
                         "allow_extrapolation=True to extrapolate linearly from the last two grid points")


_AXIS_TEXT = {"tokens": "tokens per step", "seqs": "sequences per step", "pc": "prefill tokens per step",
              "kp": "cached context of a step's prefill pieces", "nd": "decodes per step",
              "kv": "decode context (tokens)"}


def _pack(table: StepTable, max_decodes: int, max_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ti = np.zeros(TI_N, np.int64)
    parts = [np.zeros(TF_HEAD)]
    size = TF_HEAD

    def put(name_off, arr, name_n=None, n=None):
        nonlocal size
        arr = np.ascontiguousarray(arr, dtype=np.float64).ravel()
        ti[name_off] = size
        if name_n is not None:
            ti[name_n] = n if n is not None else arr.size
        parts.append(arr)
        size += arr.size

    put(TI_TOK, np.concatenate([table.token_grid, table.token_s, _octaves(table.token_grid)]), TI_TOK_N,
        table.token_grid.size)
    put(TI_SEQ, np.concatenate([table.seq_grid, table.seq_s, _octaves(table.seq_grid)]), TI_SEQ_N,
        table.seq_grid.size)
    for which, grid in ((TI_PC, table.pc_grid), (TI_KP, table.kp_grid), (TI_ND, table.nd_grid),
                        (TI_KV, table.kv_grid)):
        put(which, np.concatenate([grid, _octaves(grid)]), which + 1, grid.size)
    put(TI_ATT, table.attention_s)
    sk = table.skew
    if sk is not None:
        ti[TI_SKEW] = 1
        put(TI_SK_PC, sk.pc_values, TI_SK_PC_N)
        put(TI_SK_N, sk.n_edges, TI_SK_N_N)
        put(TI_SK_SR, sk.rate_edges, TI_SK_SR_N)
        put(TI_SK_KVB, sk.kv_max_edges, TI_SK_KVB_N)
        put(TI_SK_KP, sk.kp_edges, TI_SK_KP_N)
        put(TI_SK_ALPHA, sk.alpha)
    brk = table.breakpoints()
    put(TI_BRK, np.concatenate([brk, _octaves(brk)]), TI_BRK_N, brk.size)
    att = table.attention_s
    prefill_part = att[:, :, 0, 0]
    decode_part = att[0, 0, :, :] - att[0, 0, 0, 0]
    gap = np.abs(prefill_part[:, :, None, None] + decode_part[None, None, :, :] - att)
    if float(gap.max()) <= 1e-13 * max(float(np.abs(att).max()), 1e-300):   # separable (a roofline, a linear model)
        ti[TI_SEP] = 1
        put(TI_ATT_A, prefill_part)
        put(TI_ATT_D, decode_part)
    tf = np.concatenate(parts)
    tf[TF_QUAD] = table.prefill_quad_s
    tf[TF_FIXED_P] = table.fixed_prefill_s
    tf[TF_FIXED_D] = table.fixed_decode_s
    tf[TF_ALPHA_DEFAULT] = sk.alpha_default if sk is not None else 0.0
    tf[TF_TOK_STEP] = _even_step(table.token_grid)
    tf[TF_SEQ_STEP] = _even_step(table.seq_grid)
    # dense lookups for whole numbers (what the compiled functions would interpolate or search, read once)
    # (at most DENSE_MAX entries each: past them the grids are searched)
    dense = [(TI_TOK_D, _dense_values(tf, ti[TI_TOK], ti[TI_TOK_N], tf[TF_TOK_STEP],
                                      min(max_tokens + max_decodes + 1, DENSE_MAX))),
             (TI_SEQ_D, _dense_values(tf, ti[TI_SEQ], ti[TI_SEQ_N], tf[TF_SEQ_STEP], min(max_decodes + 1, DENSE_MAX))),
             (TI_PC_D, _dense_brackets(tf, ti, TI_PC, min(max_tokens + 1, DENSE_MAX))),
             (TI_ND_D, _dense_brackets(tf, ti, TI_ND, min(max_decodes + 1, DENSE_MAX)))]
    size = tf.size
    for which, values in dense:
        ti[which] = size
        ti[which + 1] = values.size // (1 if which in (TI_TOK_D, TI_SEQ_D) else 2)
        size += values.size
    tf = np.concatenate([tf] + [values for _, values in dense])
    # decode runs: for n = 0..max_decodes and segment j (see _segment), a decode-only step costs C + B * kv_mean;
    # evaluated from the same compiled function at the segment's two ends (exact: linear in between)
    nseg = brk.size + 1
    ends = np.empty((nseg, 2))
    ends[1:-1, 0], ends[1:-1, 1] = brk[:-1], brk[1:]
    ends[0] = (brk[0], brk[0] + 1.0)          # below the first breakpoint: the first value (slope 0, checked)
    ends[-1] = (brk[-2], brk[-1]) if brk.size > 1 else (brk[-1], brk[-1] + 1.0)   # past the last: extrapolated
    dec_c = np.zeros((max_decodes + 1, nseg))
    dec_b = np.zeros((max_decodes + 1, nseg))
    ti_probe = ti.copy()
    ti_probe[TI_SKEW] = 0   # the uniform part; the skew correction is added in table_decode_run
    for n in range(1, max_decodes + 1):
        t = np.array([[_decode_step_uniform(tf, ti_probe, n, x) for x in seg] for seg in ends])
        slope = (t[:, 1] - t[:, 0]) / (ends[:, 1] - ends[:, 0])
        dec_b[n] = slope
        dec_c[n] = t[:, 0] - slope * ends[:, 0]
    dec_b[0] = 0.0
    if brk[0] > 0 or table.kv_grid[0] > 0:
        dec_b[:, 0] = 0.0   # clamped below the grid: constant
        dec_c[:, 0] = np.array([_decode_step_uniform(tf, ti_probe, max(n, 1), brk[0]) for n in range(max_decodes + 1)])
    ti[TI_DEC_C] = tf.size
    ti[TI_DEC_B] = tf.size + dec_c.size
    ti[TI_DEC_NMAX] = max_decodes
    ti[TI_DEC_NSEG] = nseg
    tf = np.concatenate([tf, dec_c.ravel(), dec_b.ravel()])
    tf[TF_SEEN_TOKENS:TF_HEAD] = 0.0
    return tf, ti


@njit(cache=True)
def _dense_values(tf, off, n, step, count):
    """The 1-D table at ``tf[off:]`` interpolated at 0, 1, ..., count - 1."""
    out = np.empty(count)
    for x in range(count):
        out[x] = _interp(tf, off, n, float(x), step)
    return out


@njit(cache=True)
def _dense_brackets(tf, ti, which, count):
    """The brackets (lo, t) of 0, 1, ..., count - 1 on the attention axis ``which``, flat."""
    out = np.empty(2 * count)
    for x in range(count):
        lo, t = _axis(tf, ti, which, float(x))
        out[2 * x] = lo
        out[2 * x + 1] = t
    return out


def _octaves(grid: np.ndarray) -> np.ndarray:
    """For k = 0 .. OCTAVES - 1, the last index of ``grid`` whose value is <= 2**k (0 if none): where
    :func:`_last_le` starts."""
    counts = np.searchsorted(grid, 2.0 ** np.arange(OCTAVES), side="right")
    return np.maximum(counts - 1, 0).astype(np.float64)


def _even_step(grid: np.ndarray) -> float:
    """The spacing of an evenly spaced grid (exactly, so the computed position is the searched one), else 0."""
    if grid.size < 2:
        return 0.0
    step = float(grid[1] - grid[0])
    return step if np.array_equal(grid, grid[0] + step * np.arange(grid.size)) else 0.0


def _decode_step_uniform(tf, ti, n: int, kv: float) -> float:
    """A decode-only step of n decodes all at context kv (no skew)."""
    return float(step_time_py(tf, ti, 0, 0, 0, 0.0, n, float(n) * kv, kv, kv))


def linear_summary(table: StepTable) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """A linear model's ``(prefill, decode)`` coefficients fitted to the table (non-negative least squares,
    relative errors): prefill-only steps of one prompt of each ``pc`` grid length on ``a + b l + c l^2``,
    decode-only steps of each ``nd`` grid count at each ``kv`` grid context on ``a + b (n kv) + c n``, all
    within the grids.  The issue's "naive route": a linear model cannot follow the table (dense layers are
    flat below a few hundred tokens, mixed steps cost more than their parts), so it is kept only as a
    summary (descriptions, warnings), never to drive an engine in the table's place."""
    from scipy.optimize import nnls

    lim = table.limits()
    tf, ti = table.pack(max(1, int(min(lim["nd"], lim["seqs"], lim["tokens"]))))
    lengths = table.pc_grid[(table.pc_grid > 0) & (table.pc_grid <= lim["tokens"])]
    if lengths.size == 0:
        lengths = np.array([1.0])
    t_pf = np.array([step_time_py(tf, ti, int(l), 1, 0, float(l) * l, 0, 0.0, 0.0, 0.0) for l in lengths])
    a_pf = np.column_stack([np.ones_like(lengths), lengths, lengths ** 2]) / t_pf[:, None]
    prefill, _ = nnls(a_pf, np.ones_like(t_pf))
    counts = table.nd_grid[(table.nd_grid > 0) & (table.nd_grid <= min(lim["seqs"], lim["tokens"]))]
    contexts = table.kv_grid[table.kv_grid > 0]
    if counts.size == 0:
        counts = np.array([1.0])
    if contexts.size == 0:
        contexts = np.array([1.0])
    n, kv = (g.ravel() for g in np.meshgrid(counts, contexts, indexing="ij"))
    t_d = np.array([step_time_py(tf, ti, 0, 0, 0, 0.0, int(c), float(c) * x, x, x) for c, x in zip(n, kv)])
    a_d = np.column_stack([np.ones_like(n), n * kv, n]) / t_d[:, None]
    decode, _ = nnls(a_d, np.ones_like(t_d))
    if prefill[0] <= 0:   # a step must take time: the smallest prefill step's own time as the fixed cost
        prefill[0] = float(t_pf.min())
    if decode[0] <= 0:
        decode[0] = float(t_d.min())
    return tuple(map(float, prefill)), tuple(map(float, decode))
