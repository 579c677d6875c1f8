"""Step 2's cost view (workbench.study.answers.cost): capacity per dollar and the GPU count in dollars per hour on
the GPU type of the step's profile."""

import math

import pandas as pd
import pytest

from workbench.hardware.catalog import get_gpu
from workbench.sim import profiles
from workbench.study.answers import cost, tables


def test_every_registered_profile_names_its_gpu():
    assert set(cost.PROFILE_GPUS) == set(profiles.PROFILES)
    for name, (gpu, tp) in cost.PROFILE_GPUS.items():
        description = profiles.PROFILES[name][2].lower()
        assert get_gpu(gpu).key.split("-")[0] in description, name   # "a100" / "h100" named in its description


@pytest.mark.parametrize("profile, gpu, tp", [
    ("opt-13b-a100", "a100-80gb", 1), ("opt-13b-a100 tp2", "a100-80gb", 2), ("llama-3.3-70b-h100-tp4", "h100-sxm", 4),
    ("llama-3.1-8b@h100-sxm/tp2", "h100-sxm", 2), ("qwen3-32b@l40s", "l40s", 1)])
def test_the_gpu_of_a_profile(profile, gpu, tp):
    found = cost.profile_gpu(profile)
    assert found[0].key == gpu and found[1] == tp


@pytest.mark.parametrize("profile", ["grid", "seed-grid", "custom", "", None, "llama-3.1-8b@nonsuch"])
def test_a_profile_on_no_catalogued_gpu_has_no_cost(profile):
    assert cost.profile_gpu(profile) is None


def test_requests_per_dollar_beside_capacity_per_gpu():
    price = get_gpu("a100-80gb").price_per_hour
    table = pd.DataFrame({"label": ["a", "b"], "num_gpus": [1, 4], "capacity_rps": [2.0, 7.0],
                          "capacity_per_gpu": [2.0, 1.75], "capacity_attainment": [0.9, 0.9]})
    rows = pd.DataFrame({"latency_profile": ["opt-13b-a100"] * 2})
    out = cost.add_requests_per_dollar(table, rows)
    assert list(out.columns).index("requests_per_dollar") == list(out.columns).index("capacity_per_gpu") + 1
    assert out.requests_per_dollar.tolist() == pytest.approx([2.0 * 3600 / price, 7.0 * 3600 / (4 * price)])
    # a TP-2 roofline replica is two GPUs
    two = cost.add_requests_per_dollar(table, pd.DataFrame({"latency_profile": ["llama-3.1-8b@l40s/tp2"]}))
    assert two.requests_per_dollar.iloc[0] == pytest.approx(2.0 * 3600 / (2 * get_gpu("l40s").price_per_hour))
    assert cost.add_requests_per_dollar(table, pd.DataFrame({"latency_profile": ["grid"]})).requests_per_dollar.isna().all()


def test_the_gpu_count_in_dollars_per_hour():
    price = get_gpu("a100-80gb").price_per_hour
    found = {"step2_gpu_scaling": {"gpus_needed": 16, "best_gpu_count_by_capacity_per_gpu": 8,
                                   "capacity_per_gpu": {"1": 0.5, "8": 0.6, "16": 0.55}}}
    text = cost.gpu_count_cost(found, pd.DataFrame({"latency_profile": ["opt-13b-a100"]}))
    assert f"the GPUs needed, 16, cost ${16 * price:,.2f}/h" in text
    assert f"the count with the most capacity per GPU, 8, costs ${8 * price:,.2f}/h" in text
    assert f"highest at 8 GPUs: {0.6 * 3600 / price:,.0f} requests per dollar" in text
    assert "not priced" in cost.gpu_count_cost(found, pd.DataFrame({"latency_profile": ["grid"]}))


def test_the_capacity_table_shows_requests_per_dollar():
    assert "requests_per_dollar" in tables.CAPACITY_COLUMNS
    assert math.isfinite(get_gpu("a100-80gb").price_per_hour)
