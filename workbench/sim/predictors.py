"""Output-length predictors used to place requests in bins.

Every predictor is deterministic for a seed; the scheduler bins on the
prediction while the simulator serves the true length.
"""

from __future__ import annotations

import numpy as np

PREDICTORS = ("oracle", "noisy", "prompt_power_law")
MAX_PREDICTED_TOKENS = 4096


def predict_output_tokens(name: str, prompt_tokens, output_tokens, *, sigma: float = 0.5,
                          seed: int = 0) -> np.ndarray:
    """Predicted output length per request (int32).

    - ``oracle``: the true output length.
    - ``noisy``: true length x LogNormal(0, sigma), rounded, at least 1.
    - ``prompt_power_law``: the seed project's predictor,
      round(1.5 * prompt^0.7 * LogNormal(0, 0.1)) clipped to [1, 4096].
    """
    from workbench import checks

    prompt = checks.array(prompt_tokens, "prompt_tokens", integral=True, low=0, high=np.iinfo(np.int32).max,
                          what="tokens")
    output = checks.array(output_tokens, "output_tokens", integral=True, low=0, high=np.iinfo(np.int32).max,
                          what="tokens").astype(np.int64)
    if prompt.size != output.size:
        raise ValueError(f"prompt_tokens/output_tokens: {prompt.size} and {output.size} values; one per request")
    sigma = checks.number(sigma, "predictor_sigma", low=0)
    seed = checks.integer(seed, "seed", low=0)
    if name == "oracle":
        return output.astype(np.int32, copy=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, PREDICTORS.index(name) if name in PREDICTORS else 99]))
    if name == "noisy":
        noise = rng.lognormal(0.0, sigma, size=output.shape)
        # clipped to int32 before the cast: a large sigma must not wrap predictions round to negative counts
        return np.clip(np.rint(output * noise), 1, np.iinfo(np.int32).max).astype(np.int32)
    if name == "prompt_power_law":
        noise = rng.lognormal(0.0, 0.1, size=prompt.shape)
        return np.clip(np.rint(1.5 * prompt ** 0.7 * noise), 1, MAX_PREDICTED_TOKENS).astype(np.int32)
    raise ValueError(f"unknown predictor {name!r}; choose one of {', '.join(PREDICTORS)}")
