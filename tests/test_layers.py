"""The package's layers flow one way: every module imports only what its layer may import.

The allowed graph is data here (and the same table, for readers, in ``workbench/study/__init__.py``'s
docstring, which a test keeps in step).  Every module's imports are parsed with ``ast``, those inside functions
too: a lazy import is a dependency all the same.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from workbench import paths

# Layer -> the modules in it: a module name, or a package with everything below it ("pkg.").  A module belongs
# to the layer of its longest match.
LAYERS = {
    "foundation": ("workbench.checks", "workbench.paths"),
    # what a run is and what its records mean: the frozen SimConfig, the registries by name, the memory presets,
    # the metrics over a run's records
    "scenario": ("workbench.sim.config", "workbench.sim.routers", "workbench.sim.schedulers",
                 "workbench.sim.schedulers.", "workbench.sim.autoscaling", "workbench.sim.autoscaling.",
                 "workbench.sim.predictors", "workbench.sim.memory",
                 "workbench.sim.metrics", "workbench.hardware.catalog"),
    # engines, step-time models, simulate(), the step-by-step replays; the traces
    "simulator": ("workbench.sim", "workbench.sim.", "workbench.traces", "workbench.traces.", "workbench.hardware",
                  "workbench.hardware."),
    "store": ("workbench.study.store", "workbench.study.store."),
    "present": ("workbench.study.present", "workbench.study.present."),
    "answers": ("workbench.study.answers", "workbench.study.answers."),
    "fidelity": ("workbench.study.fidelity", "workbench.study.fidelity."),
    "runs": ("workbench.study.runs", "workbench.study.runs."),
    "top": ("workbench", "workbench.__main__", "workbench.study", "workbench.study.explore",
            "workbench.study.orchestrate", "workbench.study.orchestrate."),
}
EVERYTHING = frozenset(LAYERS)
# Layer -> the other layers it may import.
ALLOWED = {
    "foundation": frozenset(),
    "scenario": frozenset({"foundation"}),
    "simulator": frozenset({"foundation", "scenario"}),
    "store": frozenset({"foundation"}),
    "present": frozenset({"foundation", "scenario", "store"}),
    "answers": frozenset({"foundation", "scenario", "store", "present"}),
    "fidelity": frozenset({"foundation", "scenario", "simulator", "store", "present"}),
    "runs": frozenset({"foundation", "scenario", "simulator", "store", "present", "answers", "fidelity"}),
    "top": EVERYTHING,
}
# (importing module or package, imported module) -> why this one edge crosses its layers' rule
EXCEPTIONS = {
    ("workbench.sim.schedulers.", "workbench.sim.continuous_engine"):
        "a continuous scheduler's module names the engine's policy code it runs as",
    ("workbench.study.answers.", "workbench.sim.profiles"):
        "a label names what a stored profile name's step times come from (measured or roofline: name_kind)",
}


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package_dir: Path) -> dict[str, Path]:
    return {_module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def _matches(module: str, entry: str) -> bool:
    return module.startswith(entry) if entry.endswith(".") else module == entry


def layer_of(module: str) -> str | None:
    """The layer of ``module``: that of its longest matching entry in :data:`LAYERS`, None if it has none."""
    best = max(((len(entry), layer) for layer, entries in LAYERS.items() for entry in entries
                if _matches(module, entry)), default=None)
    return best[1] if best else None


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported workbench module) of every import in the file, at any depth; ``from a import b`` is
    module ``a.b`` when that is a module of the package, else ``a``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from the importing module's package up
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((node.lineno, full if full in known else base))
    return [(line, name) for line, name in out if name == "workbench" or name.startswith("workbench.")]


def violations(package_dir: Path) -> list[str]:
    """Every import in ``package_dir`` (the ``workbench`` package) that its module's layer may not make."""
    modules = _modules(package_dir)
    found = []
    for module, path in modules.items():
        layer = layer_of(module)
        for line, target in dict.fromkeys(imports_of(path, module, set(modules))):
            other = layer_of(target)
            if other is None or other == layer or other in ALLOWED[layer]:
                continue
            if any(_matches(module, a) and target == b for a, b in EXCEPTIONS):
                continue
            found.append(f"{path.relative_to(package_dir.parent)}:{line}: {module} ({layer}) imports {target} "
                         f"({other}); {layer} may import {', '.join(sorted(ALLOWED[layer])) or 'nothing else'}")
    return found


def test_every_module_has_a_layer():
    unplaced = [m for m in _modules(paths.PACKAGE_DIR) if layer_of(m) is None]
    assert not unplaced, f"modules in no layer of tests/test_layers.py's LAYERS (say where they belong): {unplaced}"


def test_layers_flow_one_way():
    found = violations(paths.PACKAGE_DIR)
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_allowed_graph_has_no_cycle():
    """No two layers may import each other: the graph is a partial order."""
    both = [(a, b) for a in ALLOWED for b in ALLOWED[a] if a < b and a in ALLOWED[b]]
    assert not both


def test_the_docstring_states_the_same_graph():
    """``workbench/study/__init__.py`` tells a reader what each study folder may import: the table there is
    this one."""
    import workbench.study

    table = {}
    for line in workbench.study.__doc__.splitlines():
        match = re.fullmatch(r"\s+(\w+)\s{2,}(.+)", line)
        if match and match.group(1) in LAYERS:
            names = match.group(2).strip()
            table[match.group(1)] = EVERYTHING if names == "everything" else frozenset(names.split(", "))
    study = {layer for layer in LAYERS if layer not in ("foundation", "scenario", "simulator")}
    assert set(table) == study
    assert {layer: table[layer] for layer in study} == {layer: ALLOWED[layer] for layer in study}


@pytest.mark.parametrize("module, target, allowed", [
    ("workbench.study.answers.analysis", "workbench.study.runs.sweep", False),       # answers read, never run
    ("workbench.study.runs.sweep", "workbench.study.answers.analysis", True),
    ("workbench.study.fidelity.vllm_runs", "workbench.study.answers.plots", False),
    ("workbench.study.store.files", "workbench.study.present.tables", False),
    ("workbench.sim.config", "workbench.sim.disagg_steplog", False),                # registries from the scenario
    ("workbench.sim.config", "workbench.sim.routers", True),
    ("workbench.study.runs.experiments", "workbench.study.orchestrate.suite", False),
    ("workbench.study.orchestrate.suite", "workbench.study.runs.experiments", True),
])
def test_the_rule_on_single_edges(module, target, allowed):
    """The rule itself, on edges a reader can check against the table (so the main test can fail)."""
    assert (layer_of(target) == layer_of(module) or layer_of(target) in ALLOWED[layer_of(module)]) is allowed
