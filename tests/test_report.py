"""index.html: one page per results folder with the answers, their validity and links to everything."""

import json
import re

from workbench.study.answers.report import render_index, write_index


def make_folder(tmp_path):
    (tmp_path / "parameters.json").write_text(json.dumps({"parameters": {"max_gpus": 8, "d_sla": 1.0}}))
    analysis = {
        "trace": {"labels": ["synthetic BurstGPT-like (seed 42, 1,000 req)",
                             "synthetic BurstGPT-like (seed 42, 2,000 req)"], "synthetic": True},
        "step2_gpu_scaling": {
            "capacity_rps": {"multi_bin_dynamic (8 GPUs)": 12.5, "multi_bin_dynamic (1 GPU)": None},
            "capacity_table": [
                {"label": "multi_bin_dynamic (8 GPUs)", "capacity_rps": 12.5, "latency_profile": "opt-13b-a100",
                 "sla": "TTFT <= 1 s, TPOT <= 50 ms", "target": 0.9, "capacity_rps_ci95": [11.0, 14.0]},
                {"label": "multi_bin_dynamic (1 GPU)", "capacity_rps": None, "latency_profile": "seed-grid",
                 "sla": "E2E <= 1 s", "target": 0.9}],
            "primary_scheduler": "multi_bin_dynamic", "gpu_counts": [1, 8],
            "gpus_needed_by_scheduler": {"multi_bin_dynamic": 8, "static_fifo": None},
            "headroom_by_scheduler": {"multi_bin_dynamic": 0.21, "static_fifo": None},
            "best_gpu_count_by_capacity_per_gpu_by_scheduler": {"multi_bin_dynamic": 8},
            "capacity_per_gpu_knee_by_scheduler": {"multi_bin_dynamic": 8}},
        "validity": {
            "gpus_needed": {"value": 8, "valid": True,
                            "sentence": "multi_bin_dynamic needs 8 GPUs: a headroom of 21%."},
            "best_k": {"value": 32, "valid": False, "sentence": "It is the largest K tested: the optimum may lie beyond."},
        },
        "warnings": ["It is the largest K tested: the optimum may lie beyond."],
    }
    (tmp_path / "analysis.json").write_text(json.dumps(analysis))
    (tmp_path / "step2_gpu_scaling.csv").write_text("a,b\n1,2\n")
    (tmp_path / "step2_gpu_scaling.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "step2_gpu_scaling.html").write_text("<html></html>")
    sub = tmp_path / "compare_schedulers"
    sub.mkdir()
    (sub / "compare_schedulers_ranking.csv").write_text(
        "rank,scheduler,gpus_needed,capacity_per_gpu,capacity_per_gpu_ci95_low,capacity_per_gpu_ci95_high,at_num_gpus,"
        "capacity_rps,at_largest_gpus,note,distinguishable_from_next\n"
        "1,continuous_fcfs,4,2.5,2.3,2.7,4,10.0,False,,True\n2,static_fifo,,,,,,,False,no load met the target,\n")
    return tmp_path


def test_index_shows_answers_validity_and_links(tmp_path):
    folder = make_folder(tmp_path)
    path = write_index(folder)
    page = path.read_text()
    assert path.name == "index.html"
    assert ">not valid<" in page and ">valid<" in page               # one invalid, one valid answer
    assert "is the largest K tested" in page                          # the reason is shown
    assert "synthetic: not measured traffic" in page                  # labelled synthetic
    assert page.count("synthetic BurstGPT-like (seed 42)") == 1        # one trace, sizes dropped
    assert "none: no load meets the target" in page and "12.5" in page and "11 to 14" in page
    # every capacity says which hardware model and SLA it was judged on (issue 16 item 10)
    assert "opt-13b-a100 step-time profile (measured)" in page and "TTFT &lt;= 1 s, TPOT &lt;= 50 ms" in page
    assert "seed formula grid" in page and "E2E &lt;= 1 s" in page
    # the headline questions name the scheduler they are about; every scheduler's answers in one table
    assert "How many GPUs does multi_bin_dynamic need" in page and "8 (largest tested)" in page
    assert "8 (+21% headroom)" in page and "more than 8" in page     # GPUs needed per scheduler, with headroom
    assert "GPUs needed" in page and "none compared" in page          # the ranking says what it ranks by
    for name in ("step2_gpu_scaling.csv", "step2_gpu_scaling.png", "step2_gpu_scaling.html",
                 "compare_schedulers/compare_schedulers_ranking.csv"):
        assert f'href="{name}"' in page, name
    assert "continuous_fcfs" in page and "2.3 to 2.7" in page
    assert str(tmp_path) not in page                                  # relative links only: shareable
    assert not re.search(r'href="/', page)


def test_index_of_an_empty_folder_says_so(tmp_path):
    page = render_index(tmp_path)
    assert "No <code>analysis.json</code>" in page and "No <code>parameters.json</code>" in page
