"""``index.html``: one page that presents a results folder, so a run can be shared as one folder.

The page shows the parameters (``parameters.json``), the trace (and whether it
is synthetic), the headline answers of ``analysis.json`` with their validity
(an answer that misses the SLA target or sits at the edge of the range tested
says so, in red), the scheduler comparison's ranking and sentences when the folder
has one, and links to every rendered notebook, figure and CSV in the folder.
Links are relative, so the folder can be moved, zipped or served as it is.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
from pathlib import Path

import pandas as pd

from workbench.study.present.text import NOTEBOOK_TITLES
from workbench.study.store.files import atomic_write_text

log = logging.getLogger(__name__)

INDEX = "index.html"

# headline answers of analysis.json, in reading order: (key in analysis.json, question)
HEADLINES = (
    ("gpus_needed", "How many GPUs does {primary} need for this trace (step 2: the fewest whose capacity covers the "
                    "replayed load)?"),
    ("best_gpu_count_by_capacity_per_gpu", "On how many GPUs does {primary} have the most capacity per GPU (step 2)?"),
    ("best_k", "How many length bins are worth it for {primary} at that pool (step 3: the most capacity)?"),
    ("best_config_step1", "Which configuration of step 1 (1-4 GPUs) serves the whole trace?"),
)

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
td, th { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.valid { color: #176117; font-weight: 600; } .invalid { color: #a30000; font-weight: 600; }
.badge { display: inline-block; padding: .1em .5em; border-radius: .6em; font-size: .85em; }
.synthetic { background: #fff1c2; } .real { background: #d8f0d8; }
.thumbs img { max-width: 320px; border: 1px solid #ddd; margin: .3em; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("index.html: %s could not be read (%s); left out", path.name, exc)
        return None


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _link(name: str) -> str:
    return f'<a href="{html.escape(name)}">{html.escape(name)}</a>'


def _parameters(folder: Path) -> str:
    manifest = _read_json(folder / "parameters.json")
    if not manifest:
        return "<p>No <code>parameters.json</code> in this folder.</p>"
    params = manifest.get("parameters", manifest)
    rows = [(html.escape(str(k)), html.escape(json.dumps(v))) for k, v in params.items()]
    return _table(rows, ("parameter", "value"))


def _trace(analysis: dict | None) -> str:
    info = (analysis or {}).get("trace") or {}
    import re

    # one label per trace, without its size (step 1 replays several sizes of the same trace)
    labels = sorted({re.sub(r",?\s*[\d,]+ req\)$", ")", str(x)).replace(" ()", "") for x in info.get("labels") or []})
    if not labels:
        return "<p>Trace: not recorded.</p>"
    kind = ('<span class="badge synthetic">synthetic: not measured traffic</span>' if info.get("synthetic")
            else '<span class="badge real">real trace</span>')
    return f"<p>Trace: {', '.join(html.escape(str(x)) for x in labels)} {kind}</p>"


def _headlines(analysis: dict | None) -> str:
    if not analysis:
        return "<p>No <code>analysis.json</code> in this folder (no step ran here).</p>"
    validity = analysis.get("validity") or {}
    rows = []
    for key, question in HEADLINES:
        check = validity.get(key)
        if check is None:
            continue
        ok = bool(check.get("valid"))
        verdict = (f'<span class="{"valid" if ok else "invalid"}">'
                   f'{"valid" if ok else "not valid"}</span>')
        primary = ((analysis.get("step2_gpu_scaling") or analysis.get("step3_kbins_sensitivity") or {})
                   .get("primary_scheduler") or "the primary scheduler")
        value = check.get("value")
        if value is None and key == "gpus_needed":   # no pool tested covers the load: more than the largest
            value = f"more than {max((analysis.get('step2_gpu_scaling') or {}).get('gpu_counts') or [0])}"
        rows.append((html.escape(question.format(primary=primary)), html.escape(str(value)), verdict,
                     html.escape(str(check.get("sentence", "")))))
    parts = [_table(rows, ("question", "answer", "validity", "why")) if rows else "<p>No headline answers.</p>"]
    parts.append(_per_scheduler(analysis))
    capacities = []
    for step in ("step1_request_scaling", "step2_gpu_scaling", "step3_kbins_sensitivity"):
        for r in (analysis.get(step) or {}).get("capacity_table") or []:
            value, ci = r.get("capacity_rps"), r.get("capacity_rps_ci95") or [None, None]
            interval = (f"{ci[0]:.3g} to {ci[1]:.3g}" if all(v is not None for v in ci) else "")
            capacities.append((html.escape(STEP_NAMES.get(step, step)), html.escape(r["label"]),
                               "none: no load meets the target" if value is None else f"{float(value):.3g}",
                               interval, html.escape(_hardware(r.get("latency_profile", ""))),
                               html.escape(f"{r.get('sla', '')}, {float(r.get('target') or 0):.0%} of requests")))
    if capacities:
        header = ("step", "configuration", "capacity, req/s", "95% interval", "hardware model", "SLA")
        if not any(row[3] for row in capacities):   # one replication: no intervals, no empty column
            capacities = [row[:3] + row[4:] for row in capacities]
            header = header[:3] + header[4:]
        parts.append("<h3>Capacities</h3><p>The largest offered load (requests/s) at which the target share of "
                     "requests meets the SLA, per configuration, with the hardware model and SLA each was judged "
                     "on (and the 95% interval over the seeds when there are replications).</p>")
        parts.append(_table(capacities, header))
    return "".join(parts)


STEP_NAMES = {"step1_request_scaling": "1: request scaling", "step2_gpu_scaling": "2: GPU scaling",
              "step3_kbins_sensitivity": "3: K bins"}


def _hardware(profile: str) -> str:
    if profile in ("seed-grid", "grid", ""):
        return "seed formula grid (Qwen3-1.7B/RTX 4080, not measured)"
    from workbench.sim.profiles import name_kind

    return f"{profile} step-time profile ({name_kind(profile)})"


def _per_scheduler(analysis: dict) -> str:
    """Step 2's and step 3's answers for every scheduler, one row each."""
    s2 = analysis.get("step2_gpu_scaling") or {}
    s3 = analysis.get("step3_kbins_sensitivity") or {}
    needed = s2.get("gpus_needed_by_scheduler") or {}
    headroom = s2.get("headroom_by_scheduler") or {}
    by_per_gpu = s2.get("best_gpu_count_by_capacity_per_gpu_by_scheduler") or {}
    knee = s2.get("capacity_per_gpu_knee_by_scheduler") or {}
    by_k = s3.get("best_k_by_scheduler") or {}
    names = list(dict.fromkeys([*needed, *by_per_gpu, *by_k]))
    if not names:
        return ""
    gpus = max(s2.get("gpu_counts") or [0])

    def cell(value, edge=None):
        if value is None:
            return "none"
        return f"{value} (largest tested)" if edge is not None and value == edge else str(value)

    def need(name):
        n = needed.get(name)
        if n is None:
            return f"more than {gpus}" if name in needed else "none"
        h = headroom.get(name)
        return f"{n}" + (f" ({h:+.0%} headroom)" if h is not None else "")

    rows = [(html.escape(n), need(n), cell(by_per_gpu.get(n), gpus), cell(knee.get(n)),
             cell(by_k.get(n)) if n in by_k else "no bins") for n in names]
    return ("<h3>Per scheduler</h3>"
            + _table(rows, ("scheduler", "GPUs needed (capacity covers the replayed load)",
                            "most capacity per GPU at", "capacity per GPU within 5% of its most from",
                            "best K (most capacity)")))


def _comparison(folder: Path) -> str:
    ranking_csv = next(iter(sorted(folder.glob("**/compare_schedulers_ranking.csv"))), None)
    if ranking_csv is None:
        return ""
    ranking = pd.read_csv(ranking_csv)

    def interval(r) -> str:
        lo, hi = r.get("capacity_per_gpu_ci95_low"), r.get("capacity_per_gpu_ci95_high")
        return "" if lo is None or pd.isna(lo) else f"{lo:.3g} to {hi:.3g}"

    def needed(r) -> str:
        value = r.get("gpus_needed")
        return "none compared" if value is None or pd.isna(value) else str(int(value))

    rows = [(str(r["rank"]), html.escape(str(r["scheduler"])), needed(r),
             "none" if pd.isna(r["capacity_per_gpu"]) else f"{r['capacity_per_gpu']:.3g}", interval(r),
             "" if pd.isna(r["at_num_gpus"]) else str(int(r["at_num_gpus"])),
             html.escape("" if pd.isna(r.get("note")) else str(r.get("note"))))
            for _, r in ranking.iterrows()]
    rel = ranking_csv.relative_to(folder).as_posix()
    return ("<h2>Which scheduler keeps the SLA</h2><p>Every registered scheduler on the same trace, hardware "
            "model and SLA, ranked by the GPUs it needs for the replayed load (the fewest whose capacity covers "
            "it), then by its capacity per GPU on those GPUs; schedulers whose order is within the capacity "
            "search's resolution (and, with replications, the seeds' 95% intervals) share a rank.</p>"
            + _table(rows, ("rank", "scheduler", "GPUs needed", "capacity per GPU, req/s", "95% interval",
                            "at GPUs", "note"))
            + f"<p>From {_link(rel)}.</p>")


def _files(folder: Path, titles: dict[str, str] | None = None) -> str:
    groups = {"Rendered notebooks": "*.html", "Executed notebooks": "*.ipynb", "Figures": "*.png",
              "Tables (CSV)": "*.csv", "Analysis": "*.json"}
    titles = titles or {}
    parts = []
    for title, pattern in groups.items():
        found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob(pattern) if p.name != INDEX)
        if not found:
            continue
        if pattern == "*.html":
            items = "".join(f"<li>{_link(n)}" + (f": {html.escape(titles[Path(n).stem])}"
                                                   if Path(n).stem in titles else "") + "</li>" for n in found)
            parts.append(f"<h3>{title}</h3><ul>{items}</ul>")
        elif pattern == "*.png":
            items = "".join(f'<a href="{html.escape(n)}"><img src="{html.escape(n)}" alt="{html.escape(n)}" '
                            f'title="{html.escape(n)}"></a>' for n in found)
            parts.append(f"<h3>{title}</h3><div class='thumbs'>{items}</div>")
        else:
            parts.append(f"<h3>{title}</h3><ul>" + "".join(f"<li>{_link(n)}</li>" for n in found) + "</ul>")
    return "".join(parts) or "<p>No files yet.</p>"


def render_index(results_dir: str | Path, titles: dict[str, str] | None = None) -> str:
    """The HTML of ``index.html`` for ``results_dir`` (pure: reads the folder, writes nothing); ``titles``:
    notebook name -> title for the links to the rendered notebooks."""
    folder = Path(results_dir)
    analysis = _read_json(folder / "analysis.json")
    warnings = (analysis or {}).get("warnings") or []
    warning_html = ("<h2>Warnings</h2><ul>" + "".join(f"<li class='invalid'>{html.escape(w)}</li>"
                                                      for w in warnings) + "</ul>") if warnings else ""
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Results: {html.escape(folder.name)}</title>"
            f"<style>{CSS}</style></head><body>"
            f"<h1>LLM Serving Workbench: results <code>{html.escape(folder.name)}</code></h1>"
            f"<p>Page written {stamp}.</p>{_trace(analysis)}"
            f"<h2>Headline answers</h2>{_headlines(analysis)}{warning_html}{_comparison(folder)}"
            f"<h2>Parameters</h2>{_parameters(folder)}"
            f"<h2>Everything in this folder</h2>{_files(folder, titles)}</body></html>")


def write_index(results_dir: str | Path, titles: dict[str, str] | None = None) -> Path:
    """Write ``index.html`` into ``results_dir`` (atomically) and return its path."""
    if titles is None:
        titles = NOTEBOOK_TITLES
    path = Path(results_dir) / INDEX
    atomic_write_text(path, render_index(results_dir, titles))
    return path


# ---------------------------------------------------------------- one notebook's page
# ``python -m workbench notebook <name>`` runs a study notebook (prefix caching, disaggregation, a fidelity report)
# into a folder of its own: its page says what that notebook asked and found (its ``<name>_findings.json``), the
# traces it replayed, its parameters as a table, its figures with captions and its files; the steps' folders keep
# the page above (their answers are in analysis.json).

NOTEBOOK_CSS = """
.figure { margin: 1em 0; } .figure img { max-width: 100%; border: 1px solid #ddd; }
.figure figcaption { font-size: .92em; color: #444; margin-top: .3em; }
.answer { font-size: 1.05em; background: #f6f8fa; border-left: 4px solid #4a7; padding: .6em 1em; }
"""


def _value_text(value) -> str:
    """A parameter's value as a reader writes it: lists comma-separated, None as "none", true/false as yes/no."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value) if value else "none"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parameter_table(parameters: dict) -> str:
    rows = [(f"<code>{html.escape(str(name))}</code>", html.escape(_value_text(value)))
            for name, value in parameters.items()]
    return _table(rows, ("parameter", "value")) if rows else "<p>No parameters recorded.</p>"


def _traces_html(traces: list) -> str:
    if not traces:
        return "<p>Trace: not recorded by this notebook (see its rendered page).</p>"
    rows = []
    for t in traces:
        kind = ('<span class="badge synthetic">synthetic</span>' if t.get("synthetic")
                else '<span class="badge real">real</span>')
        rate = t.get("rate_rps")
        rows.append((html.escape(str(t.get("label", ""))) + " " + kind, f"{int(t.get('requests', 0)):,}",
                     "" if rate is None else f"{float(rate):.3g}", html.escape(str(t.get("replayed", "")))))
    return _table(rows, ("trace", "requests", "mean rate, req/s", "replayed"))


def _notebook_section(folder: Path, notebook: str, parameters: dict, titles: dict, heading: bool = True) -> str:
    from workbench.study.answers.findings import read_findings

    found = read_findings(folder, notebook)
    title = titles.get(notebook, notebook)
    parts = [f"<h2>{html.escape(title)}</h2>"] if heading else []
    rendered = folder / f"{notebook}.html"
    if rendered.is_file():
        parts.append(f"<p>The notebook, executed: {_link(rendered.name)}.</p>")
    if found:
        parts.append(f"<h3>{html.escape(found.get('question', ''))}</h3>"
                     f"<p class='answer'>{html.escape(found.get('answer', ''))}</p>")
        lines = found.get("findings") or []
        if lines:
            parts.append("<h3>Findings</h3><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
                         + "</ul>")
        parts.append("<h3>Traces</h3>" + _traces_html(found.get("traces") or []))
        for png, caption in (found.get("figures") or {}).items():
            if (folder / png).is_file():
                parts.append(f"<figure class='figure'><a href='{html.escape(png)}'><img src='{html.escape(png)}' "
                             f"alt='{html.escape(caption)}'></a><figcaption>{html.escape(caption)} "
                             f"({_link(png)})</figcaption></figure>")
    else:
        parts.append("<p>This notebook records no findings file; its answers are in its rendered page.</p>")
    parts.append("<h3>Parameters</h3>" + _parameter_table(parameters))
    return "".join(parts)


def render_notebook_index(results_dir: str | Path, titles: dict[str, str] | None = None) -> str:
    """The HTML of ``index.html`` for a folder of study notebooks (pure: reads the folder, writes nothing): for each
    notebook recorded in its ``parameters.json``, the question and answer, findings, traces, figures with captions
    and parameters (a table), then every file."""
    from workbench.study.store.folders import MANIFEST

    folder = Path(results_dir)
    titles = NOTEBOOK_TITLES if titles is None else titles
    manifest = _read_json(folder / MANIFEST) or {}
    notebooks = manifest.get("parts") or {}
    heading = (titles.get(next(iter(notebooks)), next(iter(notebooks))) if len(notebooks) == 1
               else f"results {folder.name}")
    sections = "".join(_notebook_section(folder, name, parameters or {}, titles, heading=len(notebooks) > 1)
                       for name, parameters in notebooks.items()) or "<p>No notebook recorded in this folder.</p>"
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
            f"<style>{CSS}{NOTEBOOK_CSS}</style></head><body>"
            f"<h1>LLM Serving Workbench: {html.escape(heading)}</h1>"
            f"<p>Folder <code>{html.escape(folder.name)}</code>; page written {stamp}.</p>{sections}"
            f"<h2>Everything in this folder</h2>{_files(folder, titles)}</body></html>")


def is_steps_folder(results_dir: str | Path) -> bool:
    """Whether ``results_dir`` holds the steps' results (their parameters, or analysis.json): its page is the
    suite's (:func:`render_index`), else the study notebooks' (:func:`render_notebook_index`)."""
    from workbench.study.store.folders import MANIFEST

    folder = Path(results_dir)
    manifest = _read_json(folder / MANIFEST) or {}
    return bool(manifest.get("parameters")) or (folder / "analysis.json").is_file()


def write_notebook_index(results_dir: str | Path, titles: dict[str, str] | None = None) -> Path:
    """Write the study notebooks' ``index.html`` into ``results_dir`` (atomically) and return its path."""
    path = Path(results_dir) / INDEX
    atomic_write_text(path, render_notebook_index(results_dir, titles))
    return path
