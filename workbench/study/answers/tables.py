"""The step notebooks' tables: a step's results at a glance, and its capacities (views of the result rows,
written as :func:`workbench.study.present.tables.display_table` writes every table)."""

from __future__ import annotations

import pandas as pd

from workbench.study.answers import analysis
from workbench.study.present.tables import display_table

BRIEF_COLUMNS = ("label", "num_requests", "replications", "throughput_rps", "goodput_rps", "sla_violation_rate",
                 "latency_p99_s", "ttft_p99_s", "tpot_p99_s", "capacity_rps", "wall_s", "reused_from")


def brief(rows: pd.DataFrame) -> pd.DataFrame:
    """A step's results at a glance: one line per test (seeds averaged), the columns that apply (the request
    count only where it varies; the end-to-end p99 only where there is no TTFT: the SLA is on TTFT then)."""
    if rows.empty:
        return rows
    rows = analysis.summarize(rows)
    columns = list(BRIEF_COLUMNS)
    if rows["num_requests"].nunique() == 1 if "num_requests" in rows else False:
        columns.remove("num_requests")
    if "ttft_p99_s" in rows and rows["ttft_p99_s"].notna().all():
        columns.remove("latency_p99_s")
    return display_table(rows, columns)


CAPACITY_COLUMNS = ("label", "num_requests", "offered_rps", "throughput_rps", "capacity_rps", "capacity_headroom",
                    "capacity_per_gpu", "capacity_efficiency", "capacity_attainment", "capacity_probes", "replications")


def capacity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The tests that searched their capacity: the replayed rate and throughput next to capacity, the headroom it
    leaves, capacity per GPU, and against proportional scaling from each scheduler's smallest pool with a capacity
    ("unreachable": why, in the text above it)."""
    table = analysis.capacity_table(rows)
    if table.empty:
        return table
    return display_table(table, CAPACITY_COLUMNS)


__all__ = ["BRIEF_COLUMNS", "CAPACITY_COLUMNS", "brief", "capacity_table"]
