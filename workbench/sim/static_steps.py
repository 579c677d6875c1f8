"""A static batch timed by a step-time model, so static and continuous batching share one hardware model.

Static batching as serving systems did it before iteration-level scheduling
(FasterTransformer, Hugging Face ``generate``): the whole batch is prefilled in
one step, which also yields every request's first token, then decodes in
lock step until its longest output is done.  Requests that finished early stay
in the batch as padding, so every decode step has all ``b`` rows and row ``i``
attends over ``prompt_i + k`` tokens at step ``k``.  With ``P = sum(prompt)``,
``Q = sum(prompt^2)`` and ``M`` the longest output, a batch takes

    prefill:  a_p + b_p * P + c_p * Q
    decode:   sum over k = 1 .. M - 1 of  a_d + b_d * (P + b * k) + c_d * b
            = (M - 1) * (a_d + b_d * P + c_d * b) + b_d * b * (M - 1) * M / 2

with the decode coefficients of the large-batch regime when ``b`` reaches its
threshold (see :mod:`workbench.sim.steptime`).  The per-request overheads of a
step-time model are not part of a batch's GPU time.

With a step table (:mod:`workbench.sim.steptable`: kernel profiles, roofline) the same batch is priced by
the table: the prefill as one step of ``b`` pieces (``P`` tokens, ``sum(l * (p + l)) = Q``), the decode step
``k`` as ``b`` decodes whose contexts sum to ``P + b k``, longest ``max(prompt) + k`` and shortest
``min(prompt) + k`` (:func:`static_batch_table_s`), summed run by run where the table is linear.
"""

from __future__ import annotations

from numba import njit

from workbench.sim.steptable import table_decode_run, table_record_run, table_step_s

# indices into StepTimeModel.coefficients()
_PA, _PB, _PC, _DA, _DB, _DC, _LA, _LB, _LC, _LT = range(10)


@njit(cache=True)
def static_batch_time_s(coef, size, sum_prompt, sum_prompt_sq, max_output):
    """GPU time of a static batch of ``size`` requests (see the module docstring)."""
    prefill = coef[_PA] + coef[_PB] * sum_prompt + coef[_PC] * sum_prompt_sq
    steps = max_output - 1.0
    if steps <= 0.0:
        return prefill
    if size >= coef[_LT]:
        a, b, c = coef[_LA], coef[_LB], coef[_LC]
    else:
        a, b, c = coef[_DA], coef[_DB], coef[_DC]
    return prefill + steps * (a + b * sum_prompt + c * size) + b * size * steps * (steps + 1.0) / 2.0


@njit(cache=True)
def static_batch_table_s(tf, ti, size, sum_prompt, sum_prompt_sq, max_output, max_prompt, min_prompt):
    """GPU time of a static batch priced by a step table (see the module docstring): ``size`` requests whose
    prompts sum to ``sum_prompt`` (squares ``sum_prompt_sq``), longest ``max_prompt``, shortest ``min_prompt``,
    decoding until the longest output ``max_output``."""
    t = table_step_s(tf, ti, int(sum_prompt), size, 0, sum_prompt_sq, 0, 0.0, 0.0, 0.0)
    k = 1
    last = int(max_output) - 1
    while k <= last:
        e, f, k_lin = table_decode_run(tf, ti, size, int(sum_prompt) + size * k, int(max_prompt) + k,
                                       int(min_prompt) + k)
        m = min(k_lin, last - k + 1)
        t += m * e + f * (m * (m - 1) / 2.0)
        table_record_run(tf, int(max_prompt) + k, m)
        k += m
    return t
