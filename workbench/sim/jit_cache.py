"""Where numba keeps the compiled engines: one cache per machine, shared by every checkout with the same engine code.

numba's own cache (``@njit(cache=True)``) lives in ``__pycache__`` beside each source file, so every clone
compiles the engines again (about a minute of the first run on 2 cores). Its index is keyed by the function's
own file (numba 0.68: a sha256 of its content; older numba: its mtime and size) and bytecode, not by the
files of the functions it calls or the constants it reads from them: an edit to ``controllers.py`` leaves
``static_engine.run_engine``'s cached code in place. Pointing ``NUMBA_CACHE_DIR`` at one folder would not
share it either (numba names the sub-folder after the source folder's absolute path), and if it did, two
checkouts whose callees differ would load each other's stale code.

So :func:`install` (run by ``workbench/sim/__init__.py``, before any engine module is imported) puts a cache
locator first in numba's list, for this package's files only:

* the folder is ``<root>/<key>/<path inside the package>``, ``key`` a sha256 of the content of every module the
  compiled code can reach (:func:`compiled_modules`: each package module that imports numba, and the package
  modules they import, transitively) and of the Python, numba, llvmlite and numpy versions. Checkouts anywhere
  on the machine with the same engine code share one compile; any difference in any of those files gives
  another folder, so no checkout ever loads code compiled from other source;
* ``root`` is ``$WORKBENCH_NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/llm-serving-workbench/numba`` (default
  ``~/.cache/llm-serving-workbench/numba``); key folders unused for :data:`PRUNE_AFTER_DAYS` days are removed;
* where the root cannot be written, numba's own locators take over (``__pycache__``, per checkout).

A compile that does happen (a cold cache) is logged at INFO when it starts and ends (numba's documented
``numba:compile`` event, which fires on a compile, never on a cache load), so the first run says what it is
doing while it waits: ``compiling the continuous engine (once per machine ...)``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PACKAGE = PACKAGE_DIR.name
ENV_VAR = "WORKBENCH_NUMBA_CACHE_DIR"
PRUNE_AFTER_DAYS = 30
# what a first compile costs, measured on the 2-core machine (benchmarks/bench_suite.py; see the README)
ENGINES = {"continuous_engine": ("the continuous engine", "about 35 s"),
           "disagg_engine": ("the disaggregated engine", "about 15 s"),
           "static_engine": ("the static engine", "about 5 s")}


def cache_root() -> Path:
    """``$WORKBENCH_NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/llm-serving-workbench/numba``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm-serving-workbench" / "numba"


# a line that imports numba (`import numba`, `import numba.core`, `from numba import njit`, `from numba.x import y`)
_IMPORTS_NUMBA = re.compile(rb"^[ \t]*(?:import|from)[ \t]+numba\b", re.M)


def _module_file(package_dir: Path, dotted: str) -> Path | None:
    """``workbench.sim.controllers`` -> its file under ``package_dir`` (a module or a package's __init__)."""
    parts = dotted.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_imports(package_dir: Path, path: Path, tree: ast.AST) -> set[Path]:
    """The files of ``package_dir`` that ``path`` imports (absolute or relative, anywhere in the file)."""
    # what `from . import` means here: the folder of the file (a/b/c.py and a/b/__init__.py: a.b)
    package = (package_dir.name, *path.relative_to(package_dir).parent.parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = list(package[:len(package) - (node.level - 1)])
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from a.b import c`: the submodule a/b/c.py if there is one, else a.b itself (c is defined there)
            names = [f"{module}.{a.name}" if _module_file(package_dir, f"{module}.{a.name}") else module
                     for a in node.names]
        else:
            continue
        found.update(f for f in (_module_file(package_dir, n) for n in names) if f is not None)
    return found


def compiled_modules(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every module of the package that imports numba, and every package module those import, transitively:
    all the source that compiled code can be built from (functions it calls, constants it reads)."""
    trees = {}

    def tree(path: Path) -> ast.AST:
        if path not in trees:
            trees[path] = ast.parse(path.read_bytes(), filename=str(path))
        return trees[path]

    this = Path(__file__).resolve().relative_to(PACKAGE_DIR)   # where compiled code is kept, not what it is built from
    todo = [p for p in sorted(package_dir.rglob("*.py"))
            if p.relative_to(package_dir) != this and _IMPORTS_NUMBA.search(p.read_bytes())]
    seen = set(todo)
    while todo:
        path = todo.pop()
        for imported in _package_imports(package_dir, path, tree(path)) - seen:
            seen.add(imported)
            todo.append(imported)
    return sorted(seen)


def source_key(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 (16 hex digits) of :func:`compiled_modules`' paths and contents and the versions that shape
    compiled code (Python, numba, llvmlite, numpy)."""
    import llvmlite
    import numba
    import numpy

    h = hashlib.sha256()
    versions = (sys.implementation.name, sys.version, numba.__version__, llvmlite.__version__, numpy.__version__)
    h.update(repr(versions).encode())
    for path in compiled_modules(package_dir):
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def cache_folder() -> Path:
    """This checkout's folder of compiled code: ``cache_root() / source_key()``."""
    return cache_root() / source_key()


def _prune(root: Path, keep: Path) -> None:
    """Remove key folders under ``root`` unused (not modified) for :data:`PRUNE_AFTER_DAYS` days."""
    cutoff = time.time() - PRUNE_AFTER_DAYS * 86400
    for folder in root.iterdir() if root.is_dir() else ():
        if folder != keep and folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            log.debug("removed compiled code unused for %d days: %s", PRUNE_AFTER_DAYS, folder)


_fallback_said: list = []
_compiled_s = [0.0]


def compile_seconds() -> float:
    """Wall time this process has spent compiling this package's code (0 when everything came from the cache)."""
    return _compiled_s[0]


def cache_is_cold() -> bool:
    """No compiled code in :func:`cache_folder` yet: the next engine call compiles."""
    return not any(cache_folder().rglob("*.nbi"))


def _locator_class():
    from numba.core import caching

    class WorkbenchCacheLocator(caching._CacheLocator):
        """numba cache locator for this package's functions: :func:`cache_folder`, keyed by content."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            inside = Path(py_file).resolve().relative_to(PACKAGE_DIR).parent
            self._cache_path = str(cache_folder().joinpath(*inside.parts))

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):
            return cache_folder().name      # the folder is keyed by the content already

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not py_file or PACKAGE_DIR not in Path(py_file).resolve().parents:
                return None                 # not this package's: numba's own locators
            locator = cls(py_func, py_file)
            try:
                locator.ensure_cache_path()
            except OSError as exc:
                if not _fallback_said:
                    _fallback_said.append(exc)
                    log.info("cannot write compiled code to %s (%s); numba caches it beside the source instead",
                             cache_folder(), exc)
                return None
            return locator

    return WorkbenchCacheLocator, getattr(caching, "CacheImpl", None) or caching._CacheImpl


def _compile_listener():
    from numba.core import event

    class CompileAnnouncer(event.Listener):
        """Logs when numba starts and ends compiling this package's code (never on a cache load)."""

        def __init__(self):
            self.depth = 0
            self.started = None
            self.announced = set()

        def on_start(self, ev):
            func = ev.data["dispatcher"].py_func
            if self.depth == 0 and func.__module__.startswith(PACKAGE + "."):
                module = func.__module__.rsplit(".", 1)[-1]
                name, cost = ENGINES.get(module, (f"{func.__module__}.{func.__qualname__}", "a few seconds"))
                if module not in self.announced:      # once per engine and process: its helpers compile one by one
                    self.announced.add(module)
                    log.info("compiling %s (once per machine and engine version: %s; then loaded from %s)", name,
                             cost, cache_folder())
                self.started = (name, time.perf_counter())
            self.depth += 1

        def on_end(self, ev):
            self.depth -= 1
            if self.depth == 0 and self.started is not None:
                name, t0 = self.started
                elapsed = time.perf_counter() - t0
                _compiled_s[0] += elapsed
                if elapsed >= 1.0:
                    log.info("compiled %s in %.0f s", name, elapsed)
                self.started = None

    event.register("numba:compile", CompileAnnouncer())


_installed = False


def install() -> None:
    """Put :func:`cache_folder` first among numba's cache locators and announce compiles. Idempotent; a numba
    whose cache internals differ keeps its own locators (and says so once)."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        locator, impl = _locator_class()
        _compile_listener()
    except (ImportError, AttributeError) as exc:
        log.warning("numba's cache internals are not the ones expected (%s): compiled engines are cached per "
                    "checkout, in __pycache__", exc)
        return
    impl._locator_classes.insert(0, locator)
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)                     # in use: keeps it from being pruned
        _prune(folder.parent, keep=folder)
    except OSError:
        pass                                 # the locator falls back to numba's own
