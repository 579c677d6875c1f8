"""Published step-time profiles: parsed values checked against numbers read by hand from the shipped files."""

from __future__ import annotations

import json

import pytest

import workbench as wb
from workbench.sim import profiles
from workbench.sim.profiles import BLIS_DEFAULTS, DISTSERVE_PROFILE

# profiler-a100-80g.vllm.json, "facebook/opt-13b" -> "1" (milliseconds), read by hand
OPT13B_TP1_MS = {
    "prefill": (22.052204789310185, 0.14050923870128956, 8.076584822611088e-06),
    "small": (23.475041008414784, 0.000592934466077393, 0.060726861260369455),
    "large": (20.206356173691958, 0.0004907727036234946, 0.1200031385587413),
}


def test_distserve_profile_ms_to_seconds_and_two_decode_regimes():
    step = wb.StepTimeModel.from_profile(DISTSERVE_PROFILE, model="facebook/opt-13b", tp=1)
    assert step.prefill == pytest.approx(tuple(v / 1e3 for v in OPT13B_TP1_MS["prefill"]), rel=1e-12)
    assert step.decode == pytest.approx(tuple(v / 1e3 for v in OPT13B_TP1_MS["small"]), rel=1e-12)
    assert step.decode_large == pytest.approx(tuple(v / 1e3 for v in OPT13B_TP1_MS["large"]), rel=1e-12)
    assert step.decode_large_threshold == 95
    # by hand: a 1000-token prompt = 22.0522 + 140.509 + 8.0766 ms = 170.638 ms
    assert step.prefill_time_s([1000]) == pytest.approx(0.170638, abs=1e-6)
    # 94 requests of context 1000 use the small-batch regime, 95 the large one
    a, b, c = OPT13B_TP1_MS["small"]
    assert step.decode_time_s([1000] * 94) == pytest.approx((a + b * 94_000 + c * 94) / 1e3, rel=1e-12)
    a, b, c = OPT13B_TP1_MS["large"]
    assert step.decode_time_s([1000] * 95) == pytest.approx((a + b * 95_000 + c * 95) / 1e3, rel=1e-12)


def test_distserve_other_tp_and_model():
    step = wb.StepTimeModel.from_profile(DISTSERVE_PROFILE, model="facebook/opt-66b", tp=4)
    assert step.prefill[0] == pytest.approx(42.965489361973944e-3, rel=1e-12)
    assert step.decode_large[2] == pytest.approx(0.19508372547790553e-3, rel=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "facebook/opt-13b", "tp": 3}, "tp in {1, 2, 4}"),
    ({"model": "opt-13b", "tp": 1}, "facebook/opt-13b, facebook/opt-66b"),
])
def test_distserve_missing_entries_list_what_exists(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        wb.StepTimeModel.from_profile(DISTSERVE_PROFILE, **kwargs)


def test_distserve_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such DistServe profile"):
        wb.StepTimeModel.from_profile(tmp_path / "nope.json", model="m")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        wb.StepTimeModel.from_profile(bad, model="m")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"m": {"1": {"prefill": [1, 2, 3]}}}))
    with pytest.raises(ValueError, match="missing 'decoding_smallbs'"):
        wb.StepTimeModel.from_profile(partial, model="m")


def test_blis_beta_and_alpha_in_seconds():
    # blis_defaults_e1a880a4.yaml lines 310-322: llama-3.1-8b-instruct, H100, tp 2, v0.8.4 (microseconds)
    step = wb.StepTimeModel.from_blis(model="meta-llama/llama-3.1-8b-instruct", gpu="H100", tp=2)
    b0, b1, b2 = 6910.420479880494e-6, 17.67057489844186e-6, 2.8377471109943855e-6
    assert step.prefill == pytest.approx((b0, b1, 0.0), rel=1e-12)
    assert step.decode == pytest.approx((b0, 0.0, b2), rel=1e-12)
    assert step.decode_large is None
    assert step.arrival_overhead_s == pytest.approx((1601.350510688092e-6, 3.512476196805965e-6), rel=1e-12)
    assert step.token_overhead_s == pytest.approx(1805.5430360826988e-6, rel=1e-12)
    # a step of 100 prefill tokens: b0 + 100 b1; a decode step of 10 requests: b0 + 10 b2 (context plays no part)
    assert step.prefill_time_s([60, 40]) == pytest.approx(b0 + 100 * b1, rel=1e-12)
    assert step.decode_time_s([5000] * 10) == pytest.approx(b0 + 10 * b2, rel=1e-12)


def test_blis_lowest_best_loss_refit_wins():
    # redhatai/phi-4-fp8-dynamic H100 tp 1 appears twice: best_loss 198.58 (beta0 4766.019) and 501.28 (beta0 4322.37)
    step = wb.StepTimeModel.from_blis(model="RedHatAI/phi-4-FP8-dynamic", gpu="h100", tp=1, vllm_version="v0.8.4")
    assert step.prefill[0] == pytest.approx(4766.019115846135e-6, rel=1e-12)
    assert "198.58" in step.source


def test_blis_gpu_alias_and_version_filter():
    step = wb.StepTimeModel.from_blis(model="meta-llama/llama-3.1-8b-instruct", gpu="A100", tp=1)
    assert "A100-80" in step.name
    with pytest.raises(ValueError, match="gpu=H100 tp=1 vllm=v0.11.0"):
        wb.StepTimeModel.from_blis(model="meta-llama/llama-3.1-8b-instruct", gpu="H100", tp=1, vllm_version="0.8.4")


def test_blis_unknown_model_lists_models(tmp_path):
    with pytest.raises(ValueError, match="no model 'nobody/none'.*meta-llama/llama-3.1-8b-instruct"):
        wb.StepTimeModel.from_blis(model="nobody/none", gpu="H100")
    with pytest.raises(FileNotFoundError):
        wb.StepTimeModel.from_blis(model="m", gpu="H100", path=tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {}\n")
    with pytest.raises(ValueError, match="no 'models:' list"):
        wb.StepTimeModel.from_blis(model="m", gpu="H100", path=bad)


def test_registry():
    names = profiles.profile_names()
    assert names[0] == "opt-13b-a100" and len(names) >= 4
    for name in names:
        model = profiles.get_profile(name)
        assert model.name == name and model.prefill_time_s([100]) > 0 and model.decode_time_s([100]) > 0
    assert profiles.default_step_model() == profiles.get_profile("opt-13b-a100")
    assert profiles.default_step_model().prefill[1] == pytest.approx(0.14050923870128956e-3, rel=1e-12)
    assert profiles.get_profile("llama-3.1-8b-h100").decode[2] == pytest.approx(304.4021040302657e-6, rel=1e-12)
    with pytest.raises(ValueError, match="unknown step-time profile 'nope'; registered: opt-13b-a100"):
        profiles.get_profile("nope")
