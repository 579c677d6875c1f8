"""The column dictionary: every column of the CSVs the suite writes and every key of ``analysis.json``.

``python -m workbench columns`` prints it as markdown; ``docs/columns.md`` is
that output (a test checks it is current and that every column and key the
suite writes is covered).  The simulation configuration's columns take their
meaning from :class:`~workbench.sim.config.SimConfig`'s own help, so a new
configuration field is documented where it is defined.  Patterns (``bin{j}_...``)
cover the columns numbered per bin.
"""

from __future__ import annotations

import dataclasses
import re

from workbench.sim.config import SimConfig

REQ_S = "requests/s"
CI95_SUFFIXES = ("_ci95_low", "_ci95_high")

# column -> (unit, meaning); the columns that are not SimConfig fields
RESULT_COLUMNS: dict[str, tuple[str, str]] = {
    # identity of the test
    "test_id": ("", "16 hex digits of sha256 over everything that determines the result (the checkpoint key)"),
    "step": ("", "which step ran the test: step1_request_scaling, step2_gpu_scaling or step3_kbins_sensitivity"),
    "label": ("", "the configuration in words, e.g. 'multi_bin_dynamic (4 GPUs, K=8)'"),
    "dataset": ("", "the BurstGPT CSV replayed; empty for the embedded synthetic trace"),
    "num_requests": ("requests", "requests in the replayed trace"),
    "rps_scaling": ("", "the trace's timestamps were divided by this (stress mode)"),
    "use_real_timestamps": ("bool", "true: the trace's own inter-arrival times were kept (rps_scaling ignored)"),
    "trace_seed": ("", "seed of the synthetic trace"),
    "trace_label": ("", "the trace in words; says 'synthetic' for the synthetic trace"),
    "trace_fingerprint": ("", "hash of the replayed arrivals and token counts"),
    "synthetic": ("bool", "true when the trace is the synthetic BurstGPT-like stand-in, not a real log"),
    "simulator_version": ("", "hash of the simulator's code; rows of other code are recomputed"),
    "wall_s": ("s", "wall-clock time of the test (replay and capacity search)"),
    "sim_wall_s": ("s", "wall-clock time of the replay's simulation alone"),
    "sim_requests_per_s": ("requests/s", "simulator speed: requests simulated per wall-clock second (not a load)"),
    "finished_at": ("UTC ISO 8601", "when the test finished"),
    "latency_profile": ("", "hardware model of the test: the step-time profile's name (every scheduler: static "
                            "ones in step mode), or 'seed-grid' (the seed study's formula grid)"),
    "latency_kind": ("", "what the test's step times come from: measured (a registered profile), roofline (estimated "
                         "from config.json facts and spec-sheet peaks), kernel-profile, linear (a model given by hand "
                         "or calibrated) or formula grid (the seed study's)"),
    "step_prefill_a": ("s", "step-time model: fixed time of a prefill step"),
    "step_prefill_b": ("s/token", "step-time model: prefill time per prompt token"),
    "step_prefill_c": ("s/token^2", "step-time model: prefill time per squared prompt token"),
    "step_decode_a": ("s", "step-time model: fixed time of a decode step"),
    "step_decode_b": ("s/token", "step-time model: decode time per token of context"),
    "step_decode_c": ("s/request", "step-time model: decode time per request in the batch"),
    "step_decode_large_a": ("s", "step-time model: decode_a from decode_large_threshold requests on"),
    "step_decode_large_b": ("s/token", "step-time model: decode_b from decode_large_threshold requests on"),
    "step_decode_large_c": ("s/request", "step-time model: decode_c from decode_large_threshold requests on"),
    "step_decode_large_threshold": ("requests", "step-time model: batch size from which the large-batch decode "
                                                "coefficients apply (NaN: one regime)"),
    "step_arrival_overhead_a": ("s", "step-time model: per-request overhead before it joins the queue"),
    "step_arrival_overhead_b": ("s/token", "step-time model: that overhead per prompt token"),
    "step_token_overhead": ("s", "step-time model: overhead added to every output token's reported time"),
    "replication": ("", "index of the row's seed among its test's replications (0: the plan's seed; the seed "
                        "is seed + replication, for the trace and the simulation)"),
    "base_test_id": ("", "test_id of replication 0: what the replications of one test share"),
    "replications": ("seeds", "<step>_summary.csv: rows (seeds) behind the summary row; its metrics are their "
                              "means"),
    "kv_capacity_tokens": ("tokens", "KV cache one GPU holds, in tokens, from the memory fields: the static engine's "
                                     "batch limit; the continuous engine's kv_blocks hold kv_blocks x block_size "
                                     "of them"),
    "latency_base_s": ("s", "latency model: fixed time of a batch"),
    "latency_per_token_s": ("s/token", "latency model: time per token of the batch's longest request"),
    "latency_batch_penalty": ("", "latency model: extra share of time a full batch takes over a batch of 1"),
    "capacity_search": ("bool", "whether the test searched its capacity"),
    "capacity_hint_from": ("", "test_id(s) of the tests whose capacity is where this test's search started "
                               "(space-separated: the first that found one; empty: from the replay)"),
    "capacity_hint_rps": (REQ_S, "where the capacity search started (NaN: from the replay at the trace's rate)"),
    "reused_from": ("", "the checkpoint that already held this test (same configuration, same simulator code: "
                        "another step's, another results folder's): its row was copied, not recomputed; NaN: "
                        "computed for this file"),
    # replay summary (workbench.sim.metrics.summarize)
    "offered": ("requests", "requests in the replay"),
    "offered_rps": (REQ_S, "the arrival rate actually replayed (issue 9 item 4; drawn as the offered rate in the "
                           "throughput panels)"),
    "completed": ("requests", "requests served"),
    "rejected": ("requests", "requests that can never fit in the KV cache (counted as SLA violations)"),
    "makespan_s": ("s", "from the first arrival to the last finish"),
    "throughput_rps": (REQ_S, "completed / makespan_s, late or not"),
    "throughput_tokens_per_s": ("tokens/s", "output tokens of completed requests / makespan_s"),
    "goodput_rps": (REQ_S, "requests that met the SLA / makespan_s (TTFT and TPOT limits on a step-time profile; "
                           "finished within d_sla_s on the seed grid)"),
    "sla_violation_rate": ("share", "(offered - requests that met the SLA) / offered"),
    "latency_mean_s": ("s", "mean end-to-end latency (arrival to finish) of completed requests"),
    "latency_p50_s": ("s", "median end-to-end latency"),
    "latency_p95_s": ("s", "95th percentile of end-to-end latency"),
    "latency_p99_s": ("s", "99th percentile of end-to-end latency"),
    "latency_max_s": ("s", "largest end-to-end latency"),
    "queue_delay_mean_s": ("s", "mean wait from arrival to the start of the request's batch"),
    "queue_delay_p99_s": ("s", "99th percentile of that wait"),
    "service_time_mean_s": ("s", "mean service time of a batch"),
    "gpu_utilization_mean": ("share", "busy time / makespan, mean over GPUs"),
    "gpu_utilization_min": ("share", "busy time / makespan of the least busy GPU"),
    "gpu_utilization_max": ("share", "busy time / makespan of the busiest GPU"),
    "num_batches": ("batches", "batches served"),
    "batch_size_mean": ("requests", "mean requests per batch"),
    "batch_size_max": ("requests", "largest batch served"),
    "k_bins_effective": ("bins", "bins actually used (equal-mass edges merge when lengths repeat)"),
    "bin{j}_requests": ("requests", "requests served from bin j (multi-bin schedulers, K > 1)"),
    "bin{j}_batch_size_mean": ("requests", "mean batch size in bin j"),
    "bin{j}_offered": ("requests", "requests assigned to bin j, rejected included"),
    "bin{j}_latency_mean_s": ("s", "mean end-to-end latency of bin j's completed requests"),
    "bin{j}_latency_p99_s": ("s", "99th percentile of that latency"),
    "bin{j}_sla_violation_rate": ("share", "bin j's late or rejected requests / its offered requests"),
    "bin{j}_gpu_time_share": ("share", "bin j's share of all GPU busy time"),
    # continuous engine's replay summary (continuous_* schedulers; empty for the static ones)
    "ttft_mean_s": ("s", "continuous: mean of the time to first token (arrival to the prefill step's end) of completed requests"),
    "ttft_p50_s": ("s", "continuous: median of the time to first token (arrival to the prefill step's end) of completed requests"),
    "ttft_p90_s": ("s", "continuous: 90th percentile of the time to first token (arrival to the prefill step's end) of completed requests"),
    "ttft_p95_s": ("s", "continuous: 95th percentile of the time to first token (arrival to the prefill step's end) of completed requests"),
    "ttft_p99_s": ("s", "continuous: 99th percentile of the time to first token (arrival to the prefill step's end) of completed requests"),
    "ttft_max_s": ("s", "continuous: largest of the time to first token (arrival to the prefill step's end) of completed requests"),
    "tpot_mean_s": ("s", "continuous: mean of the time per output token after the first, of completed requests"),
    "tpot_p50_s": ("s", "continuous: median of the time per output token after the first, of completed requests"),
    "tpot_p90_s": ("s", "continuous: 90th percentile of the time per output token after the first, of completed requests"),
    "tpot_p95_s": ("s", "continuous: 95th percentile of the time per output token after the first, of completed requests"),
    "tpot_p99_s": ("s", "continuous: 99th percentile of the time per output token after the first, of completed requests"),
    "tpot_max_s": ("s", "continuous: largest of the time per output token after the first, of completed requests"),
    "e2e_mean_s": ("s", "continuous: mean of the end-to-end latency (arrival to last token) of completed requests"),
    "e2e_p50_s": ("s", "continuous: median of the end-to-end latency (arrival to last token) of completed requests"),
    "e2e_p90_s": ("s", "continuous: 90th percentile of the end-to-end latency (arrival to last token) of completed requests"),
    "e2e_p95_s": ("s", "continuous: 95th percentile of the end-to-end latency (arrival to last token) of completed requests"),
    "e2e_p99_s": ("s", "continuous: 99th percentile of the end-to-end latency (arrival to last token) of completed requests"),
    "e2e_max_s": ("s", "continuous: largest of the end-to-end latency (arrival to last token) of completed requests"),
    "queue_mean_s": ("s", "continuous: mean of the time from arrival to first admission into the running batch"),
    "queue_p50_s": ("s", "continuous: median of the time from arrival to first admission into the running batch"),
    "queue_p90_s": ("s", "continuous: 90th percentile of the time from arrival to first admission into the running batch"),
    "queue_p95_s": ("s", "continuous: 95th percentile of the time from arrival to first admission into the running batch"),
    "queue_p99_s": ("s", "continuous: 99th percentile of the time from arrival to first admission into the running batch"),
    "queue_max_s": ("s", "continuous: largest of the time from arrival to first admission into the running batch"),
    "ttft_attainment": ("share", "continuous: share of offered requests with TTFT <= ttft_sla_s"),
    "tpot_attainment": ("share", "continuous: share of offered requests with TPOT <= tpot_sla_s (one-token outputs "
                                 "count as meeting it)"),
    "slo_attainment": ("share", "continuous: share of offered requests meeting both the TTFT and the TPOT limit "
                                "(DistServe's SLO attainment; goodput_rps counts these)"),
    "engine_steps": ("steps", "continuous: engine iterations run over all replicas"),
    "deadline_goodput_rps": (REQ_S, "static batches in step mode: requests finished within d_sla_s / makespan_s "
                                    "(the seed grid's criterion, kept beside the TTFT/TPOT goodput)"),
    "deadline_violation_rate": ("share", "static batches in step mode: share of offered requests not finished "
                                         "within d_sla_s"),
    "kv_utilization_mean": ("share", "continuous: mean share of the KV-cache blocks in use"),
    "preemptions_total": ("preemptions", "continuous: recompute preemptions (KV cache full)"),
    "requests_preempted": ("requests", "continuous: requests preempted at least once"),
    "prefill_tokens_computed": ("tokens", "continuous: prompt tokens the replicas computed in prefill steps, "
                                          "recomputation after preemption included (prefix_caching_at_capacity.csv)"),
    "prompt_tokens_total": ("tokens", "the replayed trace's prompt tokens, all requests"),
    "prefill_work_ratio": ("x prompt tokens", "prefill_tokens_computed / prompt_tokens_total: 1 - prefix_hit_rate "
                                              "without preemptions, more when preempted requests recompute"),
    "dropped": ("requests", "continuous, chunked_prefill=False: preempted requests vLLM v0.2 ignored on readmission "
                            "(prompt + generated tokens over max_num_batched_tokens or the KV cache less its watermark)"),
    "prefix_hit_rate": ("share", "continuous: prompt tokens served from the prefix cache at first admission over all "
                                 "prompt tokens of admitted requests (0 without prefix_caching)"),
    # any model on any GPU (notebooks/hardware.ipynb: hardware_fit.csv, hardware_capacity.csv, hardware_steps.csv,
    # hardware_errors.csv)
    "gpu": ("", "hardware: the GPU (a name of data/hardware/gpus.yaml)"),
    "tp": ("GPUs", "hardware: tensor-parallel degree of one replica"),
    "weights_gb_per_gpu": ("GB", "hardware: the model's weights on each GPU of the replica (split over its GPUs)"),
    "usable_gb_per_gpu": ("GB", "hardware: the GPU's memory times gpu_memory_utilization"),
    "fits": ("bool", "hardware: the weights, vLLM's activation peak and one request of max_num_batched_tokens "
                     "tokens of KV cache fit each GPU (vLLM's memory rule)"),
    "kv_tokens": ("tokens", "hardware: KV-cache tokens one replica holds (vLLM's num_gpu_blocks x block size)"),
    "why_not": ("", "hardware: why the model does not fit at that TP, with the numbers"),
    "kind": ("", "hardware: what the step times come from: roofline (estimated from config.json and the spec "
                 "sheet), kernel-profile (LLMServingSim's measured kernels) or measured (a step-time profile fitted "
                 "to measurements); in hardware_steps.csv: the step compared, prefill or decode"),
    "step_model": ("", "hardware: the step-time model's name (a roofline '<model>@<gpu>/tp<N>', a registered "
                       "profile, or a kernel-profile bundle)"),
    "price_per_gpu_hour": ("USD/h", "hardware: the GPU's hourly price (the catalogue's list price unless given)"),
    "validated_error": ("share", "hardware: the median |relative error of the mean E2E| of that kind of step times "
                                 "on the measured runs it was validated on (the band drawn); empty: not validated"),
    "capacity_per_gpu_rps": ("requests/s", "hardware: capacity_rps of one replica divided by its GPUs"),
    "requests_per_dollar": ("requests/USD", "hardware: requests served per dollar at capacity: capacity_rps x 3600 "
                                            "/ (tp x price_per_gpu_hour)"),
    "batch": ("requests", "hardware: requests in the compared step (prefill prompts or decodes)"),
    "tokens": ("tokens", "hardware: prompt length (prefill) or context (decode) of each request in the step"),
    "measured_s": ("s", "hardware: the step's time in the measured profile"),
    "roofline_s": ("s", "hardware: the step's time in the roofline of the same deployment"),
    "floor_s": ("s", "hardware: the least time the deployment's GPUs need for the step (the roofline at every "
                     "peak, Roofline.at_peak)"),
    "below_floor": ("", "hardware: True when the measured step time is more than the step target (20%) under "
                        "floor_s, so no physical model comes within the target there"),
    "error": ("share", "hardware: roofline / measured - 1 (hardware_steps.csv), or the simulated mean E2E / the "
                       "measured one - 1 (hardware_errors.csv)"),
    "profile": ("", "hardware: the registered measured step-time profile compared"),
    "engine": ("", "hardware: the serving engine whose efficiencies the roofline uses (vllm-v1, vllm-v0.2, "
                   "distserve)"),
    "run": ("", "hardware: the measured serving run (its file or folder name)"),
    # the cheapest fleet for a load (notebooks/fleet_planning.ipynb: fleet_plan.csv, one row per candidate;
    # fleet_trials.csv and fleet_frontier.csv, one row per fleet simulated; fleet_neighbours.csv); gpu, tp,
    # price_per_gpu_hour, step_model, capacity_rps and the attainments as above
    "rank": ("", "fleet: the candidate's place by cost per hour among those meeting the SLA (empty: it does not)"),
    "topology": ("", "fleet: colocated (replicas of tp GPUs, vLLM V1) or disaggregated (prefill and decode "
                     "instances apart, DistServe)"),
    "candidate": ("", "fleet: the GPU type, topology and TP degree(s) searched, e.g. 'l40s colocated tp1'"),
    "fleet": ("", "fleet: the fleet in words, e.g. '6 x l40s (tp1)' or '2xP(tp1) + 3xD(tp2) on h100-sxm' (empty "
                  "when no size of the candidate was simulated)"),
    "gpus": ("GPUs", "fleet: GPUs of the fleet (replicas x tp, or both pools' instances x their TP)"),
    "replicas": ("replicas", "fleet: colocated replicas (disaggregated: prefill plus decode instances); autoscaling "
                             "(autoscaling_plan.csv): the plan's count for the hour, the fewest whose capacity covers "
                             "peak_rps"),
    "dollars_per_hour": ("USD/h", "fleet: gpus x price_per_gpu_hour"),
    "dollars_per_million_output_tokens": ("USD", "fleet: dollars_per_hour over the output tokens an hour at "
                                                 "rate_rps brings (rate_rps x mean output tokens x 3600), per million"),
    "rate_rps": (REQ_S, "fleet: the load planned for (the trace's own rate, or the rate it was replayed at)"),
    "slo_attainment_at_peak": ("share", "autoscaling: the plan's fleet's SLO attainment on the hour's requests "
                                        "at peak_rps, as the planner simulated it (empty with planner=capacity)"),
    "headroom": ("share", "fleet: capacity_rps / rate_rps - 1: how much more load the fleet keeps the SLA at; "
                          "autoscaling: capacity_rps / peak_rps - 1 for the plan's replicas"),
    "step_source": ("", "fleet: where the step times come from: measured (a registered profile of that model, GPU "
                        "and TP) or roofline (estimated from config.json and the spec sheet, not measured)"),
    "bound_gpus": ("GPUs", "fleet: the fewest GPUs the bound allows (workbench.study.runs.fleet_bound: never more "
                           "than the simulator needs); a candidate is pruned when their cost exceeds a confirmed fleet's"),
    "bound_binding": ("", "fleet: what sets the bound per pool: GPU time or the KV cache, and in bursts of how long"),
    "status": ("", "fleet: meets SLA, does not fit in memory, misses TTFT, misses TPOT, above max_gpus or pruned"),
    "reason": ("", "fleet: the status in a sentence, with the numbers"),
    "decided_by": ("", "fleet: what sets the fleet's size: memory, or the phase (prefill, decode) taking most GPU "
                       "time and whether the roofline says it is bound by compute or by memory bandwidth"),
    "decided_by_text": ("", "fleet: decided_by in a sentence, with the roofline's shares and the limit one replica "
                            "fewer misses"),
    "simulations": ("simulations", "fleet: simulations of the candidate's search (capacity search excluded)"),
    "alone_share": ("share", "fleet: requests that meet both limits alone on an idle replica and fit its KV cache"),
    "prefill_goodput_rps": (REQ_S, "fleet, disaggregated: capacity of one prefill instance judged on TTFT alone "
                                   "(wb.best_placement's per-pool step), where the split search starts"),
    "decode_goodput_rps": (REQ_S, "fleet, disaggregated: capacity of one decode instance judged on TPOT alone"),
    "search_s": ("s", "fleet: wall-clock time of the candidate's search"),
    "meets_sla": ("bool", "fleet: slo_attainment >= the attainment target at rate_rps"),
    "neighbour": ("", "fleet: which neighbour of the cheapest fleet was simulated (one replica fewer, the next "
                      "cheaper GPU type)"),
    "holds": ("bool", "fleet: the neighbour misses the SLA or costs more, as it must if the answer is the cheapest"),
    "note": ("", "fleet: why a neighbour was not simulated, or what it is compared on"),
    # a day of changing load (notebooks/autoscaling.ipynb: autoscaling_plan.csv, autoscaling_hourly.csv,
    # autoscaling_timeline.csv, autoscaling_summary.csv)
    "hour": ("h", "autoscaling: the hour of the day, 0-23"),
    "requests": ("requests", "autoscaling: requests arriving in the hour"),
    "mean_rps": (REQ_S, "autoscaling: the hour's mean arrival rate"),
    "peak_rps": (REQ_S, "autoscaling: the highest arrival rate within the hour (of the day's rate profile)"),
    "strategy": ("", "autoscaling: how the day is served: peak fleet (the plan's largest count all day), plan "
                     "schedule (the plan's count per hour), reactive (the threshold autoscaler)"),
    "replicas_mean": ("replicas", "autoscaling: replicas provisioned on average (billed: starting, active or "
                                  "draining) over the hour or the day"),
    "gpu_hours": ("GPU-hours", "autoscaling: replica-seconds provisioned in the hour (or day) x GPUs per replica / "
                               "3600"),
    "cost_usd": ("USD", "autoscaling: gpu_hours x the GPU's price per hour"),
    "met_slo": ("requests", "autoscaling: requests arriving in the hour that met TTFT and TPOT limits"),
    "time_s": ("s", "autoscaling: time of day at the end of the timeline's 5-minute step"),
    "arrival_rps": (REQ_S, "autoscaling: the arrival rate over the 5-minute step"),
    **{f"{strategy}_{what}": ("replicas", f"autoscaling: replicas of the {strategy.replace('_', ' ')} strategy "
                                          f"{'provisioned (starting, active or draining)' if what == 'provisioned' else 'active (taking new requests)'} "
                                          "at time_s")
       for strategy in ("peak_fleet", "plan_schedule", "reactive") for what in ("provisioned", "active")},
    "hours_below_target": ("hours", "autoscaling: hours whose SLO attainment is below the attainment target"),
    "replicas_max": ("replicas", "autoscaling: most replicas active or starting at a control instant"),
    "replicas_min": ("replicas", "autoscaling: fewest replicas active or starting at a control instant"),
    "cold_starts": ("replicas", "autoscaling: replicas started during the run (each a cold start)"),
    "cold_starts_cancelled": ("replicas", "autoscaling: cold starts cancelled before the replica was ready"),
    "drains": ("replicas", "autoscaling: replicas told to drain (take no new request, finish, leave)"),
    "control_instants": ("instants", "autoscaling: times the policy was asked for a replica count"),
    "replica_hours": ("replica-hours", "autoscaling: replica-seconds provisioned / 3600 (cold starts included)"),
    "share_of_peak_cost": ("share", "autoscaling: the strategy's cost over the peak fleet's"),
    # disaggregated prefill and decode (workbench.sim.disagg), empty for other schedulers
    "prefill_utilization_mean": ("share", "disaggregated: mean share of the run the prefill instances compute"),
    "decode_utilization_mean": ("share", "disaggregated: mean share of the run the decode instances' stages compute"),
    "prefill_kv_utilization_mean": ("share", "disaggregated: mean share of the prefill instances' KV blocks in use"),
    "decode_kv_utilization_mean": ("share", "disaggregated: mean share of the decode instances' KV blocks in use"),
    "transfer_busy_share": ("share", "disaggregated: mean share of the run a decode instance spends moving KV caches"),
    "kv_transfer_mean_s": ("s", "disaggregated: mean KV transfer time of the requests that decoded"),
    "kv_transfer_p{j}_s": ("s", "disaggregated: the {j}th percentile of the KV transfer time"),
    "decode_queue_mean_s": ("s", "disaggregated: mean wait from the first token to the first decode step, "
                                 "transfer excluded"),
    "decode_queue_p{j}_s": ("s", "disaggregated: the {j}th percentile of that wait"),
    "prefill_steps": ("steps", "disaggregated: prefill steps run"),
    "decode_steps": ("steps", "disaggregated: decode micro-batch steps run"),
    # capacity (workbench.study.runs.capacity), on the tests that searched it
    "capacity_rps": (REQ_S, "largest arrival rate meeting the capacity target; empty when no load meets it"),
    "capacity_scaling": ("x trace rate", "capacity_rps relative to the trace's own rate"),
    "capacity_attainment": ("share", "attainment (or p99 latency, s) measured at the capacity"),
    "capacity_attainment_above": ("share", "the same at the lowest load tried above the capacity"),
    "capacity_scaling_above": ("x trace rate", "that load, relative to the trace's own rate"),
    "capacity_probes": ("simulations", "loads the search simulated"),
    "capacity_attainable": ("share", "requests that could meet the SLA even alone on an idle GPU: no load does better"),
    "capacity_criterion": ("", "slo (share meeting both TTFT <= ttft_sla_s and TPOT <= tpot_sla_s: every test on a "
                               "step-time profile), attainment (share within d_sla_s: the seed grid) or p99 "
                               "(latency of completed requests)"),
    "capacity_target": ("share or s", "the target the criterion must reach"),
    "capacity_bounded": ("bool", "false: the target still held at the highest load tried (capacity is a lower bound)"),
    "capacity_monotone": ("bool", "false: attainment rose again with load during the search"),
    "capacity_scaling_region_low": ("x trace rate", "where the passing region containing the capacity begins "
                                                    "among the probes (when attainment is not monotone in load)"),
    "capacity_resolution": ("share", "relative step of the capacity grid (the answer passes, one step above fails)"),
    "capacity_error": ("", "why no load meets the target (empty when one does)"),
    # step 3's provenance (workbench.study.runs.experiments.resolve_best_gpu_count)
    "gpu_count_source": ("", "step 3: where its GPU count came from: given, step2_gpus_needed, step2_largest (no "
                             "count step 2 tested covers the load) or default"),
    "step2_test_id": ("", "step 3: test_id of the step-2 row whose GPU count it used (empty otherwise)"),
}

# validation.csv (python -m workbench suite --validate)
VALIDATION_COLUMNS: dict[str, tuple[str, str]] = {
    "case": ("", "which validation case (M/D/1, M/M/c, Little's law, Multi-Bin Batching, mechanics, trace)"),
    "quantity": ("", "what is compared"),
    "theory": ("as quantity", "the value theory (or the paper, or the published statistic) gives"),
    "simulated": ("as quantity", "the value the simulator gives"),
    "rel_error": ("share", "|simulated - theory| / |theory|"),
    "abs_error": ("as quantity", "|simulated - theory|"),
    "tolerance": ("as quantity", "the largest error the check allows"),
    "tolerance_kind": ("", "which term set the tolerance (floor, standard errors, exact)"),
    "passed": ("bool", "whether the error is within the tolerance"),
    "n_requests": ("requests", "requests per run"),
    "runs": ("runs", "independent runs (seeds)"),
    "stderr": ("as quantity", "standard error from batch means over the runs"),
    "note": ("", "how the tolerance was set"),
}

# compare_schedulers/compare_schedulers_{capacity,curves}.csv: the comparison's capacity and load-curve tables; their
# other columns are the step CSVs' (its per-test checkpoint, compare_schedulers.csv, has the step CSVs' columns)
COMPARE_FILES = ("compare_schedulers_capacity.csv", "compare_schedulers_curves.csv")
COMPARE_COLUMNS: dict[str, tuple[str, str]] = {
    "scaling": ("x replayed rate", "curves: the point's load relative to the replayed one (the trace's timestamps "
                                   "divided by rps_scaling x scaling)"),
    "attainment": ("share", "curves: share of the offered requests meeting both the TTFT and the TPOT limit at that "
                            "load (slo_attainment)"),
}

# compare_schedulers_ranking.csv (workbench.study.answers.compare.capacity_ranking)
RANKING_COLUMNS: dict[str, tuple[str, str]] = {
    "rank": ("", "1 = needs the fewest GPUs (then: most capacity per GPU there); schedulers whose order against the "
                 "one above is within the capacity search's resolution (and the seeds' 95% intervals) share its rank"),
    "scheduler": ("", "the scheduler"),
    "gpus_needed": ("GPUs", "the fewest GPUs compared whose capacity_rps covers the replayed rate (empty: none)"),
    "at_num_gpus": ("GPUs", "where capacity_rps and capacity_per_gpu are read: gpus_needed, else the largest count "
                            "compared"),
    "capacity_rps": (REQ_S, "the capacity there"),
    "capacity_per_gpu": (REQ_S, "capacity_rps / at_num_gpus"),
    "capacity_per_gpu_ci95_low": (REQ_S, "95% interval over the seeds, low end (with replications > 1; one seed: the column is left out)"),
    "capacity_per_gpu_ci95_high": (REQ_S, "95% interval over the seeds, high end"),
    "headroom": ("share", "capacity_rps / replayed rate - 1"),
    "distinguishable_from_next": ("bool", "this scheduler's place above the next one's is beyond the search's "
                                          "resolution (and the seeds' 95% intervals); false: tied; empty for the last"),
    "most_capacity_per_gpu": (REQ_S, "the most capacity per GPU over every GPU count compared"),
    "most_capacity_per_gpu_at": ("GPUs", "the GPU count it is on"),
    "at_largest_gpus": ("bool", "that count is the largest compared: capacity per GPU may grow beyond"),
    "note": ("", "the GPUs needed and headroom, ties, and why no count covers the load, in words"),
}

_STEP = "<step>"
# analysis.json: dotted key path -> (unit, meaning).  "<step>" is any of the three steps; "*" marks keys
# that are data (a label, a GPU count, a K), whose value the entry describes.
ANALYSIS_KEYS: dict[str, tuple[str, str]] = {
    "generated_at": ("UTC ISO 8601", "when analysis.json was written"),
    "rules": ("", "the rule behind every answer, in words (one key per rule)"),
    "rules.*": ("", "one rule"),
    "trace": ("", "the traces of every step's rows"),
    "trace.labels": ("", "trace_label of the rows"),
    "trace.synthetic": ("bool", "whether any row replays the synthetic trace"),
    "sla": ("", "the SLA every answer is judged on, in words (TTFT/TPOT limits, or E2E on the seed grid)"),
    "sla_target": ("share", "the share of requests that must meet the SLA (the capacity search's target)"),
    "gpus_needed": ("GPUs", "step 2's answer: the fewest GPUs whose capacity covers the replayed load (copy of "
                            "step2_gpu_scaling.gpus_needed)"),
    "best_k": ("bins", "step 3's best K (copy of step3_kbins_sensitivity.best_k)"),
    "best_gpu_count_by_capacity_per_gpu": ("GPUs", "step 2's second answer: the GPU count with the most capacity "
                                                   "per GPU"),
    "validity": ("", "for every answer, whether it can be trusted"),
    "validity.*": ("", "one answer: best_config_step1, gpus_needed, best_gpu_count_by_capacity_per_gpu or best_k"),
    "validity.*.value": ("", "the answer"),
    "validity.*.meets_sla": ("bool", "the answer meets the SLA target at the replayed load, counted (a GPU count: "
                                     "its capacity covers the replayed rate); null: unknown"),
    "validity.*.at_edge": ("bool", "the answer is the largest value tested: the optimum may lie beyond"),
    "validity.*.valid": ("bool", "meets the SLA target and is not at the edge"),
    "validity.*.sentence": ("", "why (not), in words"),
    "warnings": ("", "sentences for every answer that is not valid (the suite prints them last)"),
    f"{_STEP}": ("", "the step's analysis; null when the step has no results"),
    f"{_STEP}.tests": ("tests", "rows of the step"),
    f"{_STEP}.best_config": ("", "the row of the step's best answer (its columns: see the CSV columns)"),
    f"{_STEP}.best_config.*": ("", "a column of that row"),
    f"{_STEP}.capacity_rps": (REQ_S, "label -> capacity_rps (null: no load meets the target)"),
    f"{_STEP}.capacity_rps.*": (REQ_S, "capacity of one configuration"),
    f"{_STEP}.capacity_search": ("", "how the capacities were searched; null without capacity search"),
    f"{_STEP}.capacity_search.tests": ("tests", "tests that searched their capacity"),
    f"{_STEP}.capacity_search.criterion": ("", "attainment or p99"),
    f"{_STEP}.capacity_search.target": ("share or s", "the target"),
    f"{_STEP}.capacity_search.resolution": ("share", "relative width of the final bracket"),
    f"{_STEP}.capacity_search.attainable_share": ("share", "smallest capacity_attainable of the step"),
    f"{_STEP}.capacity_search.unreachable": ("", "label -> why no load meets the target"),
    f"{_STEP}.capacity_search.unreachable.*": ("", "the reason"),
    f"{_STEP}.capacity_search.unbounded": ("", "labels whose target held at the highest load tried"),
    f"{_STEP}.capacity_search.not_monotone_in_load": ("", "labels whose attainment rose again with load"),
    f"{_STEP}.trace": ("", "the step's traces"),
    f"{_STEP}.trace.labels": ("", "trace_label of the step's rows"),
    f"{_STEP}.trace.synthetic": ("bool", "whether the step replays the synthetic trace"),
    f"{_STEP}.sla_target": ("share", "the share of requests that must meet the SLA"),
    "step1_request_scaling.request_volumes": ("requests", "the volumes tested"),
    "step1_request_scaling.gpu_counts": ("GPUs", "the GPU counts of step 1's configurations"),
    "step1_request_scaling.offered_rps": (REQ_S, "the rate the largest volume is replayed at"),
    "step1_request_scaling.best_config_meets_target": ("bool", "the best configuration meets the SLA target at the "
                                                               "replayed load (false: it is only the closest)"),
    "step1_request_scaling.best_config_tied": ("", "labels tied with the best within the capacity search's "
                                                   "resolution"),
    "step1_request_scaling.breaking_points": ("", "label -> the first volume at which it misses the SLA target"),
    "step1_request_scaling.breaking_points.*": ("", "one configuration"),
    "step1_request_scaling.breaking_points.*.num_requests": ("requests", "the breaking volume (null: never)"),
    "step1_request_scaling.breaking_points.*.sla_violation_rate": ("share", "the violation rate there"),
    "step1_request_scaling.breaking_points.*.largest_volume_tested": ("requests", "the largest volume tested"),
    "step2_gpu_scaling.gpu_counts": ("GPUs", "the GPU counts tested"),
    "step2_gpu_scaling.offered_rps": (REQ_S, "the replayed rate a pool must sustain"),
    "step2_gpu_scaling.gpus_needed": ("GPUs", "the fewest GPUs whose capacity_rps covers offered_rps (null: none "
                                              "tested does)"),
    "step2_gpu_scaling.gpus_needed_detail": ("", "what that answer rests on"),
    "step2_gpu_scaling.gpus_needed_detail.num_gpus": ("GPUs", "the answer"),
    "step2_gpu_scaling.gpus_needed_detail.offered_rps": (REQ_S, "the replayed rate"),
    "step2_gpu_scaling.gpus_needed_detail.capacity_rps": (REQ_S, "the capacity there"),
    "step2_gpu_scaling.gpus_needed_detail.headroom": ("share", "capacity_rps / offered_rps - 1"),
    "step2_gpu_scaling.gpus_needed_detail.largest_tested": ("GPUs", "the largest GPU count tested"),
    "step2_gpu_scaling.gpus_needed_detail.short": ("", "the largest count tested below the answer, which falls short "
                                                       "(null: none)"),
    "step2_gpu_scaling.gpus_needed_detail.short.num_gpus": ("GPUs", "its GPU count"),
    "step2_gpu_scaling.gpus_needed_detail.short.capacity_rps": (REQ_S, "its capacity (null: no load meets the "
                                                                        "target)"),
    "step2_gpu_scaling.gpus_needed_detail.short.shortfall": ("share", "1 - capacity_rps / offered_rps"),
    "step2_gpu_scaling.gpus_needed_detail.basis": ("", "capacity, or replay (no capacity search: the fewest GPUs "
                                                       "whose replay meets the target)"),
    "step2_gpu_scaling.gpus_needed_by_scheduler": ("GPUs", "scheduler -> the GPUs it needs"),
    "step2_gpu_scaling.gpus_needed_by_scheduler.*": ("GPUs", "of one scheduler"),
    "step2_gpu_scaling.headroom_by_scheduler": ("share", "scheduler -> the headroom at the GPUs it needs"),
    "step2_gpu_scaling.headroom_by_scheduler.*": ("share", "of one scheduler"),
    "step2_gpu_scaling.capacity_scaling_base_gpus": ("GPUs", "the smallest GPU count with a capacity, which "
                                                             "capacity_scaling_efficiency scales from"),
    "step2_gpu_scaling.best_gpu_count_by_capacity_per_gpu_tied": ("GPUs", "the counts tied with the most capacity "
                                                                          "per GPU within resolution"),
    "step2_gpu_scaling.capacity_per_gpu": (REQ_S, "GPU count -> capacity_rps / num_gpus"),
    "step2_gpu_scaling.capacity_per_gpu.*": (REQ_S, "at one GPU count"),
    "step2_gpu_scaling.capacity_scaling_efficiency": ("", "GPU count -> capacity / proportional scaling from the "
                                                          "smallest pool with a capacity (above 1: capacity per GPU "
                                                          "grew)"),
    "step2_gpu_scaling.capacity_scaling_efficiency.*": ("", "at one GPU count"),
    "step2_gpu_scaling.best_gpu_count_by_capacity_per_gpu": ("GPUs", "the most capacity per GPU (counts tied "
                                                                     "within resolution: the fewest)"),
    "step2_gpu_scaling.best_config_by_capacity_per_gpu": ("", "its row"),
    "step2_gpu_scaling.best_config_by_capacity_per_gpu.*": ("", "a column of that row"),
    "step2_gpu_scaling.capacity_monotone_in_gpus": ("bool", "capacity never fell as GPUs were added"),
    "step2_gpu_scaling.capacity_per_gpu_knee": ("GPUs", "fewest GPUs whose capacity per GPU is within 5% of the "
                                                        "highest"),
    "step2_gpu_scaling.capacity_per_gpu_grows": ("bool", "capacity per GPU never falls (beyond the search's "
                                                         "resolution) with more GPUs"),
    "step2_gpu_scaling.best_gpu_count_by_capacity_per_gpu_by_scheduler": ("GPUs", "scheduler -> its GPU count "
                                                                                  "with the most capacity per GPU"),
    "step2_gpu_scaling.best_gpu_count_by_capacity_per_gpu_by_scheduler.*": ("GPUs", "of one scheduler"),
    "step2_gpu_scaling.capacity_per_gpu_knee_by_scheduler": ("GPUs", "scheduler -> its capacity_per_gpu_knee"),
    "step2_gpu_scaling.capacity_per_gpu_knee_by_scheduler.*": ("GPUs", "of one scheduler"),
    "step3_kbins_sensitivity.best_k_by_scheduler": ("bins", "binning scheduler -> its best K"),
    "step3_kbins_sensitivity.best_k_by_scheduler.*": ("bins", "of one scheduler"),
    f"{_STEP}.capacity_table": ("", "one record per configuration that searched its capacity: label, scheduler, "
                                    "num_gpus, k_bins, capacity_rps, capacity_rps_ci95, latency_profile (the "
                                    "hardware model), sla (in words), target (index.html's capacity table)"),
    "step2_gpu_scaling.capacity_monotone_exceptions": ("", "every fall: from/to GPU counts, labels and capacities"),
    "step2_gpu_scaling.capacity_monotone_exceptions.*": ("", "one fall (label_from, label_to, num_gpus_from, "
                                                             "num_gpus_to, capacity_rps_from, capacity_rps_to, "
                                                             "relative_drop, within_resolution)"),
    f"{_STEP}.schedulers": ("", "the schedulers of the step's rows"),
    f"{_STEP}.primary_scheduler": ("", "the scheduler steps 2 and 3 answer for: multi_bin_dynamic if it ran, else "
                                       "the first"),
    f"{_STEP}.replications": ("seeds", "replications per test (1: no intervals)"),
    f"{_STEP}.capacity_rps_ci95": (REQ_S, "label -> [low, high]: 95% interval of capacity_rps over the "
                                          "replications (Student t cut to >= 0; nulls with one)"),
    f"{_STEP}.capacity_rps_ci95.*": (REQ_S, "of one configuration"),
    "step3_kbins_sensitivity.num_gpus": ("GPUs", "the GPU count(s) of step 3's rows"),
    "step3_kbins_sensitivity.k_values": ("bins", "the K values tested"),
    "step3_kbins_sensitivity.best_k": ("bins", "the highest capacity_rps (K values tied within resolution: the "
                                               "smallest; without a capacity search, the K values that meet the "
                                               "target)"),
    "step3_kbins_sensitivity.best_k_tied": ("bins", "the K values tied with it"),
    "step3_kbins_sensitivity.best_k_basis": ("", "capacity, or replay (no capacity search)"),
    "step3_kbins_sensitivity.k_bins_effective": ("bins", "K -> bins actually used"),
    "step3_kbins_sensitivity.k_bins_effective.*": ("bins", "at one K"),
    "step3_kbins_sensitivity.gpu_count": ("", "where step 3's GPU count came from"),
    "step3_kbins_sensitivity.gpu_count.num_gpus": ("GPUs", "step 3's GPU count"),
    "step3_kbins_sensitivity.gpu_count.source": ("", "given, step2_gpus_needed, step2_largest or default"),
    "step3_kbins_sensitivity.gpu_count.step2_test_id": ("", "the step-2 row whose GPU count step 3 used"),
    "step3_kbins_sensitivity.gpu_count.step2_gpus_needed": ("GPUs", "the GPUs step 2 finds the trace needs in these "
                                                                    "results (null: none tested covers the load)"),
    "step3_kbins_sensitivity.gpu_count.step2_test_id_now": ("", "the step-2 row of that count (or of its largest)"),
    "step3_kbins_sensitivity.gpu_count.matches_step2": ("bool", "step 3 ran at that count (null: no step 2 "
                                                                "results)"),
    "step3_kbins_sensitivity.gpu_count.sentence": ("", "the same in words"),
}

STEP_NAMES = ("step1_request_scaling", "step2_gpu_scaling", "step3_kbins_sensitivity")


# units of SimConfig fields whose name does not carry one
CONFIG_UNITS = {"num_gpus": "GPUs", "k_bins": "bins", "batch_size": "requests", "b_min": "requests",
                "b_max": "requests", "edge_sample": "requests", "ctrl_alpha": "requests", "ctrl_delta": "requests",
                "ctrl_window": "batches", "kv_gb_per_token": "GB/token", "mem_theta": "std-devs",
                "sla_budget_fraction": "share", "ctrl_eps_fraction": "share", "spread_idle": "bool",
                "ctrl_retry_batches": "batches", "gpu_memory_utilization": "share",
                "prefill_replicas": "instances", "decode_replicas": "instances", "prefill_tp": "GPUs",
                "decode_tp": "GPUs", "decode_pp": "stages", "prefill_max_batch_size": "requests",
                "decode_max_batch_size": "requests", "prefill_kv_blocks": "blocks", "decode_kv_blocks": "blocks",
                "decode_waiting_block_fraction": "share", "kv_link_gbps": "Gbit/s",
                "min_replicas": "replicas", "max_replicas": "replicas", "autoscale_target": "per replica",
                "autoscale_tolerance": "share", "replica_schedule": "replicas"}


def _unit_from_name(name: str) -> str:
    if name in CONFIG_UNITS:
        return CONFIG_UNITS[name]
    for suffix, unit in (("_s", "s"), ("_gb", "GB"), ("_tokens", "tokens"), ("_rps", REQ_S)):
        if name.endswith(suffix):
            return unit
    return ""


# SimConfig fields whose None means "derived": a result row holds the value the test's engine used
# (workbench.study.runs.sweep.memory_columns)
RESOLVED_CONFIG = ("model_mem_gb", "kv_gb_per_token", "kv_blocks", "kv_watermark", "prefill_kv_blocks",
                   "decode_kv_blocks")


def config_columns() -> dict[str, tuple[str, str]]:
    """SimConfig's fields as columns: meaning from their help, unit from their name."""
    out = {}
    for f in dataclasses.fields(SimConfig):
        meaning = f"configuration: {f.metadata['help']}"
        if f.name in RESOLVED_CONFIG:
            meaning += "; in a result row: the value the test's engine used (empty where its engine has none)"
        out[f.name] = (_unit_from_name(f.name), meaning)
    return out


def csv_columns() -> dict[str, tuple[str, str]]:
    """Every documented column of the step CSVs and all_results.csv."""
    return {**config_columns(), **RESULT_COLUMNS}


def documented_for(csv_name: str) -> dict[str, tuple[str, str]]:
    """The dictionary that documents the columns of the CSV named ``csv_name`` (a file the run writes)."""
    if csv_name == "validation.csv":
        return VALIDATION_COLUMNS
    if csv_name in COMPARE_FILES:
        return {**csv_columns(), **COMPARE_COLUMNS}
    if csv_name == "compare_schedulers_ranking.csv":
        return RANKING_COLUMNS
    return csv_columns()


def _pattern(name: str) -> re.Pattern:
    return re.compile("^" + re.escape(name).replace(re.escape("{j}"), r"\d+") + "$")


def undocumented_columns(columns, documented: dict | None = None) -> list[str]:
    """The names in ``columns`` the dictionary does not explain."""
    documented = csv_columns() if documented is None else documented
    patterns = [_pattern(n) for n in documented]

    def explained(column: str) -> bool:
        for suffix in CI95_SUFFIXES:  # <metric>_ci95_low/_high of <step>_summary.csv: documented with the metric
            if column.endswith(suffix):
                column = column[:-len(suffix)]
        return any(p.match(column) for p in patterns)

    return [c for c in columns if not explained(c)]


def _generic(path: str) -> str:
    head, _, rest = path.partition(".")
    if head not in STEP_NAMES:
        return path
    return f"{_STEP}.{rest}" if rest else _STEP


def _documented(path: str) -> bool:
    return path in ANALYSIS_KEYS or _generic(path) in ANALYSIS_KEYS


def analysis_key_paths(obj, prefix: str = "") -> list[str]:
    """Every key path of an analysis.json object; data keys (labels, GPU counts, K) written as ``*``."""
    found: list[str] = []
    if not isinstance(obj, dict):
        return found  # lists (of values or of records) are documented as a whole
    for key, value in obj.items():
        path = f"{prefix}.*" if prefix and _documented(f"{prefix}.*") else (f"{prefix}.{key}" if prefix else str(key))
        found.append(path)
        found.extend(analysis_key_paths(value, path))
    return found


def undocumented_analysis_keys(analysis: dict) -> list[str]:
    """Key paths of ``analysis`` that :data:`ANALYSIS_KEYS` does not explain."""
    return sorted({p for p in analysis_key_paths(analysis) if not _documented(p)})


def _table(entries: dict[str, tuple[str, str]], what: str) -> list[str]:
    lines = [f"| {what} | unit | meaning |", "|---|---|---|"]
    for name, (unit, meaning) in entries.items():
        lines.append(f"| `{name}` | {unit} | {meaning.replace('|', '/')} |")
    return lines


def markdown() -> str:
    """The column dictionary as markdown (the contents of docs/columns.md)."""
    lines = ["# Column dictionary", "",
             "Generated by `python -m workbench columns > docs/columns.md` from `workbench/study/answers/columns.py` and "
             "`SimConfig`'s help; a test checks that it is current and covers every column the suite writes.", "",
             "## Step CSVs and `all_results.csv`", "",
             "`step1_request_scaling.csv`, `step2_gpu_scaling.csv`, `step3_kbins_sensitivity.csv` (one row per "
             "finished test) and `all_results.csv` (the latest run of each step). `{j}` is a bin number (0 = "
             "shortest predicted outputs). With `replications` > 1 these hold one row per (test, seed).", "",
             "`<step>_summary.csv`: one row per test, its replications averaged: every metric column holds the "
             "mean over the seeds and `<metric>_ci95_low` / `<metric>_ci95_high` (same unit) its 95% interval: "
             "Student t, cut to the range the quantity can take (shares to [0, 1], throughput and goodput to the "
             "offered rate, everything else to >= 0; NaN with one replication); `replications` counts the seeds, "
             "`test_id` is replication 0's.",
             ""]
    lines += _table(csv_columns(), "column")
    lines += ["", "## The comparison's tables", "",
              "`compare_schedulers/compare_schedulers_capacity.csv` (scheduler, num_gpus, capacity_rps, offered_rps: "
              "one row per pair, replications averaged) and `compare_schedulers_curves.csv` (one row per scheduler "
              "and load): their columns are those of the step CSVs above, `<metric>_ci95_low` / `_ci95_high` with "
              "replications, and these. `compare_schedulers.csv`, the comparison's per-test checkpoint, has the step "
              "CSVs' columns.", ""]
    lines += _table(COMPARE_COLUMNS, "column")
    lines += ["", "## `compare_schedulers_ranking.csv`", "",
              "One row per scheduler (`workbench.study.answers.compare.capacity_ranking`).", ""]
    lines += _table(RANKING_COLUMNS, "column")
    lines += ["", "## `validation.csv` (`--validate`)", ""]
    lines += _table(VALIDATION_COLUMNS, "column")
    lines += ["", "## `analysis.json`", "",
              "Dotted key paths. `<step>` is any of `step1_request_scaling`, `step2_gpu_scaling`, "
              "`step3_kbins_sensitivity`; `*` stands for a data key (a configuration label, a GPU count, a K, an "
              "answer's name).", ""]
    lines += _table(ANALYSIS_KEYS, "key")
    return "\n".join(lines) + "\n"


__all__ = ["RESULT_COLUMNS", "RANKING_COLUMNS", "VALIDATION_COLUMNS", "COMPARE_COLUMNS", "ANALYSIS_KEYS", "csv_columns",
           "documented_for", "markdown",
           "undocumented_columns", "undocumented_analysis_keys"]
