"""What a notebook prints, and how: each thing once, plainly.

In a notebook, log records and Python warnings go to stderr by default,
which Jupyter and its HTML rendering show as pink blocks, warnings with the
source line and the machine's path of the code that raised them.
:func:`notebook_setup` sends workbench's log lines to the cell's plain text
output instead (``Warning:`` before a warning, nothing before information)
and shows each distinct warning once, as one line naming its kind, without
source lines.  :func:`tell_terminal` writes a line to the terminal that
started the kernel (``papermill ...`` on the command line), where a notebook's
outputs do not appear; inside the suite it stays silent, since the suite says
the same.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

SUITE_ENV = "WORKBENCH_SUITE"   # set by the suite in the kernels it starts


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"Error: {text}"
        if record.levelno >= logging.WARNING:
            return f"Warning: {text}"
        return text


class _StdoutHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is when the record comes (a notebook swaps it per cell)."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stdout)
        super().emit(record)


_HANDLER_NAME = "workbench-notebook"
# loggers whose information lines a notebook does not show (their warnings it does)
NOT_SAID_IN_NOTEBOOKS = ("workbench.traces", "workbench.sim", "workbench.hardware")


def notebook_setup() -> None:
    """Workbench's log lines (one per finished test) as plain cell output, each warning once, compact tables."""
    import pandas as pd

    logger = logging.getLogger("workbench")
    if not any(getattr(h, "name", "") == _HANDLER_NAME for h in logger.handlers):
        handler = _StdoutHandler()
        handler.name = _HANDLER_NAME
        handler.setFormatter(_PlainFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False        # not a second time through a root handler (papermill, basicConfig)
    # the study's lines (a test finished, a file written) are the notebook's; the layers below it say how they
    # work (a trace cache hit, a profile's fitting note), which is machine or model detail, not this run's results
    for below in NOT_SAID_IN_NOTEBOOKS:
        logging.getLogger(below).setLevel(logging.WARNING)
    _SHOWN.clear()                  # a kernel the suite reuses: each notebook says its warnings
    warnings.showwarning = _show_warning_once
    _show_saved_figures()
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", None)   # a note or a reason in a table is read whole, never "..."


def plain_warnings() -> None:
    """Python warnings as one plain log line each, once per distinct warning (the command line's terminal)."""
    warnings.showwarning = _show_warning_once


def _show_saved_figures() -> None:
    """A figure already saved as a PNG is shown from those bytes (not drawn a second time)."""
    try:
        from IPython import get_ipython
    except ImportError:   # pragma: no cover - notebooks always have IPython
        return
    shell = get_ipython()
    if shell is None:
        return
    from workbench.study.present.figures import StepFigure, figure_png

    shell.display_formatter.formatters["image/png"].for_type(StepFigure, figure_png)


_SHOWN: set[tuple[str, str]] = set()


def _show_warning_once(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for notebooks: one plain line per distinct warning, no source line or path."""
    key = (category.__name__, str(message))
    if key in _SHOWN:
        return
    _SHOWN.add(key)
    logging.getLogger("workbench").warning("%s (%s)", message, category.__name__)


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (whose outputs go to the notebook, not the terminal)."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def tell_terminal(text: str) -> None:
    """Write ``text`` to the terminal that started this kernel (``papermill`` on the command line), not into
    the notebook; nothing inside the suite (which prints it itself) or outside a kernel."""
    if os.environ.get(SUITE_ENV) or sys.__stderr__ is None or not _in_kernel():
        return
    try:
        sys.__stderr__.write(text.rstrip("\n") + "\n")
        sys.__stderr__.flush()
    except (OSError, ValueError):
        pass


__all__ = ["notebook_setup", "plain_warnings", "tell_terminal", "SUITE_ENV"]
