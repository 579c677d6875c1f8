"""What a study notebook found, written beside its tables so its results folder's page can show it.

The step notebooks answer through ``analysis.json``; the study notebooks (prefix caching, disaggregation, the
fidelity reports) each write ``<notebook>_findings.json``: the question in the notebook's title, its answer,
the sentences of its commentary (each computed from the tables beside it), the traces it replayed (label,
requests, rate, synthetic or real) and a caption per figure.  :func:`write_findings` writes it atomically;
:func:`read_findings` reads it back for :func:`workbench.study.answers.report.render_notebook_index`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from workbench import checks
from workbench.study.store.files import atomic_write_text

log = logging.getLogger(__name__)

SUFFIX = "_findings.json"


def findings_file(notebook: str) -> str:
    """The file name of ``notebook``'s findings: ``<notebook>_findings.json``."""
    return f"{notebook}{SUFFIX}"


def trace_record(trace, replayed: str = "") -> dict:
    """A trace as a findings file records it: its label, size, mean rate, whether it is synthetic, and how it was
    replayed (``replayed``: e.g. "at its recorded rate")."""
    return {"label": trace.label, "requests": int(len(trace)), "rate_rps": float(trace.mean_rate_rps),
            "synthetic": bool(trace.is_synthetic), "replayed": replayed}


def write_findings(results_dir, notebook: str, *, question: str, answer: str, findings=(), traces=(),
                   figures: dict | None = None) -> Path:
    """Write ``<notebook>_findings.json`` into ``results_dir`` (atomically) and return its path.

    ``question``: the notebook's title question; ``answer``: its answer in a few sentences; ``findings``: the
    commentary's sentences; ``traces``: :func:`trace_record` dicts; ``figures``: PNG file name -> caption."""
    checks.instance(question, "question", str, expected="the notebook's question, as text")
    checks.instance(answer, "answer", str, expected="the answer, as text")
    findings = [checks.instance(line, "findings", str, expected="sentences (text)") for line in findings]
    record = {"notebook": notebook, "question": question, "answer": answer, "findings": findings,
              "traces": list(traces), "figures": dict(figures or {})}
    path = Path(results_dir) / findings_file(notebook)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_findings(results_dir, notebook: str) -> dict | None:
    """``notebook``'s findings in ``results_dir``, or None (not written, or unreadable: said in the log)."""
    path = Path(results_dir) / findings_file(notebook)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s could not be read (%s); the page leaves its findings out", path.name, exc)
        return None
    return record if isinstance(record, dict) else None


__all__ = ["SUFFIX", "findings_file", "read_findings", "trace_record", "write_findings"]
