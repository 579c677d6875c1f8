"""The library's defaults are the suite's (issue 20): what ``make run`` simulates is what ``wb.load_trace()``,
``wb.SimConfig()``, ``wb.simulate()`` and ``wb.capacity()`` do with no arguments, and the suite takes those
defaults from the library (one source of truth); the seed study stays one argument away."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import numpy as np
import papermill as pm
import pytest

import workbench as wb
from workbench.paths import NOTEBOOKS_DIR
from workbench.sim import profiles
from workbench.sim.latency import LatencyModel
from workbench.sim.memory import GRID_MEMORY
from workbench.sim.steptime import StepTimeModel
from workbench.study.orchestrate.suite import SuiteOptions, compare_parameters
from workbench.study.runs import capacity as capacity_module
from workbench.study.runs.compare import CompareParams
from workbench.study.runs.experiments import StepParams
from workbench.study.runs.sweep import CapacitySpec, TraceOptions
from workbench.traces import trace as trace_module


def _default(function, name):
    return inspect.signature(function).parameters[name].default


def test_the_suite_takes_its_defaults_from_the_library():
    config = {f.name: f.default for f in dataclasses.fields(wb.SimConfig)}
    options = SuiteOptions()
    # the same objects, not equal copies: the suite's dataclass fields are the library's constants
    assert options.latency is profiles.DEFAULT_PROFILE == "opt-13b-a100"
    assert options.rps_scaling == trace_module.DEFAULT_RPS_SCALING == 10.0
    assert _default(wb.load_trace, "rps_scaling") is trace_module.DEFAULT_RPS_SCALING
    assert TraceOptions().rps_scaling == trace_module.DEFAULT_RPS_SCALING
    assert options.capacity_attainment is capacity_module.DEFAULT_ATTAINMENT == 0.9
    assert _default(wb.capacity, "attainment") is capacity_module.DEFAULT_ATTAINMENT
    assert CapacitySpec().attainment is capacity_module.DEFAULT_ATTAINMENT
    for suite_name, config_name in (("ttft_sla", "ttft_sla_s"), ("tpot_sla", "tpot_sla_s"), ("d_sla", "d_sla_s"),
                                    ("k_bins", "k_bins")):
        assert getattr(options, suite_name) is config[config_name], suite_name
    assert (config["ttft_sla_s"], config["tpot_sla_s"]) == (1.0, 0.05)
    # the memory: the default profile's hardware (OPT-13B on one A100-80GB, vLLM's 4046 blocks of 16 tokens)
    memory = profiles.PROFILE_MEMORY[profiles.DEFAULT_PROFILE]
    assert all(config[name] is value for name, value in memory.items())
    assert wb.SimConfig().kv_capacity_tokens == 64_742 and wb.SimConfig().kv_blocks_effective == 4046
    # every test the suite builds is the library's default config but for the scheduler, GPUs and the suite's seed
    for scheduler in ("static_fifo", "multi_bin_dynamic", "continuous_fcfs"):
        assert options.base_config(scheduler=scheduler, num_gpus=8) == wb.SimConfig(scheduler=scheduler, num_gpus=8,
                                                                                     seed=options.seed)
    assert options.latency_model() == profiles.get_profile(profiles.DEFAULT_PROFILE)


def test_the_comparison_and_the_notebooks_take_the_same_defaults():
    options, compare = SuiteOptions(), CompareParams()
    assert compare.latency is profiles.DEFAULT_PROFILE
    assert compare.rps_scaling == options.rps_scaling
    assert (compare.ttft_sla_s, compare.tpot_sla_s, compare.d_sla_s, compare.k_bins, compare.attainment) == (
        options.ttft_sla, options.tpot_sla, options.d_sla, options.k_bins, options.capacity_attainment)
    passed = compare_parameters(options)
    for name in ("latency", "ttft_sla_s", "tpot_sla_s", "d_sla_s", "attainment", "k_bins", "rps_scaling", "seed"):
        assert passed[name] == getattr(compare, name), name
    # the comparison notebook's parameters cell declares the same values (a literal cell: papermill reads it)
    declared = pm.inspect_notebook(str(NOTEBOOKS_DIR / "compare_schedulers.ipynb"))
    for name in ("latency", "ttft_sla_s", "tpot_sla_s", "d_sla_s", "attainment", "k_bins", "rps_scaling", "seed",
                 "needed_only"):
        assert ast.literal_eval(declared[name]["default"]) == getattr(compare, name), name


@pytest.fixture(scope="module")
def tiny_trace():
    return wb.load_trace(num_requests=300)


def test_load_trace_replays_the_suites_load(tiny_trace):
    raw = wb.load_trace(num_requests=300, use_real_timestamps=True)
    # by hand: the suite's load is the trace's timestamps / 10, the seed study's / 200
    np.testing.assert_allclose(tiny_trace.arrival_s, raw.arrival_s / 10, rtol=1e-12)
    np.testing.assert_allclose(wb.load_trace(num_requests=300, rps_scaling=200).arrival_s, raw.arrival_s / 200,
                               rtol=1e-12)
    np.testing.assert_array_equal(wb.synthetic_trace(300).arrival_s, tiny_trace.arrival_s)
    suite = SuiteOptions().trace_options(300, seed=0).load()
    np.testing.assert_array_equal(suite.arrival_s, tiny_trace.arrival_s)


def test_simulate_and_capacity_default_to_the_step_profile_and_the_ttft_tpot_sla(tiny_trace):
    cfg = wb.SimConfig(scheduler="static_fifo", num_gpus=2)
    res = wb.simulate(tiny_trace, cfg)
    assert isinstance(res.latency, StepTimeModel) and res.latency == profiles.get_profile(profiles.DEFAULT_PROFILE)
    explicit = wb.simulate(tiny_trace, cfg, latency=profiles.DEFAULT_PROFILE)
    assert res.summary["slo_attainment"] == explicit.summary["slo_attainment"]
    assert res.summary["sla_violation_rate"] == pytest.approx(1 - res.summary["slo_attainment"], rel=1e-12)
    cap = wb.capacity(tiny_trace, cfg)
    same = wb.capacity(tiny_trace, cfg, criterion="slo", attainment=0.9, latency=profiles.DEFAULT_PROFILE)
    assert cap.capacity_rps == same.capacity_rps


def test_the_seed_study_is_one_argument_away(tiny_trace):
    cfg = wb.SimConfig(scheduler="static_fifo", num_gpus=2, **profiles.profile_config_fields("seed-grid"))
    assert {name: getattr(cfg, name) for name in GRID_MEMORY} == GRID_MEMORY
    res = wb.simulate(tiny_trace, cfg, latency="seed-grid")
    assert isinstance(res.latency, LatencyModel) and "slo_attainment" not in res.summary
    grid = StepParams(latency="seed-grid")
    assert grid.rps_scaling == trace_module.SEED_RPS_SCALING == 200.0
    assert grid.base_config(scheduler="static_fifo", num_gpus=2) == cfg.replace(seed=grid.seed)
    # capacity judges the grid end to end within d_sla_s unless told otherwise
    seed = wb.load_trace(num_requests=300, rps_scaling=200)
    assert wb.capacity(seed, cfg, latency="seed-grid").criterion == "attainment"
