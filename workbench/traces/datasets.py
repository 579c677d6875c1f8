"""Named datasets: short names for the traces the workbench knows, e.g. ``wb.load_trace("azure_conv")``.

A name selects a file under ``data/`` (or, for ``"synthetic"``, the generator)
and carries the trace's *origin*, which its label shows in every result row
and plot title, as "synthetic" is shown for the generated trace. Adding a
dataset is one entry in :data:`DATASETS` and a ``data/README.md`` entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workbench import paths

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class Dataset:
    """A trace the workbench knows by name."""

    name: str
    file: Path | None  # None: the synthetic BurstGPT-like generator
    origin: str  # what the trace is, shown in its label
    shipped: bool  # in the repository (otherwise placed by hand under data/)

    @property
    def available(self) -> bool:
        return self.file is None or self.file.is_file()

    def describe(self) -> str:
        where = "generated" if self.file is None else (
            "shipped" if self.shipped else f"place {self.file.name} in data/ by hand")
        return f"{self.name}: {self.origin} ({where})"


_TRACES_DIR = paths.DATA_DIR / "traces"
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(SYNTHETIC, None, "synthetic BurstGPT-like, generated from the published statistics", True),
    Dataset("azure_conv", _TRACES_DIR / "azure_llm_2023_conv.csv",
            "real production trace: Azure LLM inference 2023, conversation", True),
    Dataset("azure_code", _TRACES_DIR / "azure_llm_2023_code.csv",
            "real production trace: Azure LLM inference 2023, code", True),
    Dataset("mooncake_conv", _TRACES_DIR / "mooncake" / "conversation_trace.jsonl",
            "real production trace: Mooncake (Kimi) 2024, conversation, with prompt prefix hashes", True),
    Dataset("mooncake_synthetic", _TRACES_DIR / "mooncake" / "synthetic_trace.jsonl",
            "Mooncake 2024 synthetic multi-turn trace from public datasets, with prompt prefix hashes", True),
    Dataset("burstgpt", paths.DATA_DIR / "BurstGPT_1.csv",
            "real production trace: BurstGPT_1, Azure OpenAI GPT service 2023", False),
)}


def names() -> tuple[str, ...]:
    return tuple(DATASETS)


def is_name(value) -> bool:
    """Whether ``value`` is a dataset name (a registered name wins over a file of the same name)."""
    return isinstance(value, str) and value in DATASETS


def check_name_or_file(value, name: str = "dataset") -> None:
    """Refuse ``value`` unless it is a dataset name or an existing trace file (the error names ``name``)."""
    from workbench import checks

    checks.instance(value, name, str, expected="a dataset name or a trace file")
    if not is_name(value):
        checks.existing_file(value, name, what="trace file")


def closest(value) -> str | None:
    """The dataset name ``value`` was probably meant to be (``"azure-conv"``, ``" Azure_Conv"``), or None."""
    import difflib

    if not isinstance(value, str):
        return None
    key = value.strip().lower().replace("-", "_")
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, list(DATASETS), n=1, cutoff=0.75)
    return close[0] if close else None


def get(name: str) -> Dataset:
    """The dataset called ``name``; ``FileNotFoundError`` saying how to get it when its file is absent."""
    if not is_name(name):
        raise ValueError(f"unknown dataset {name!r}; known names: {', '.join(DATASETS)} (or a path to a CSV)")
    dataset = DATASETS[name]
    if not dataset.available:
        raise FileNotFoundError(
            f"dataset {name!r}: {dataset.file} is not there. The BurstGPT CSVs cannot be downloaded by the "
            f"workbench; place it by hand (see data/README.md), or use one of the shipped datasets: "
            f"{', '.join(n for n, d in DATASETS.items() if d.shipped)}")
    return dataset


def for_file(file: str | os.PathLike) -> Dataset | None:
    """The registered dataset whose file is ``file`` (so a path gets the same label as the name)."""
    resolved = Path(file).resolve()
    for dataset in DATASETS.values():
        if dataset.file is not None and dataset.file.resolve() == resolved:
            return dataset
    return None


def help_text() -> str:
    """One line per dataset, for ``--help`` and error messages."""
    return "; ".join(d.describe() for d in DATASETS.values())
