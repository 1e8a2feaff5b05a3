"""Inside a profile re-run: Scalene samples only the measured regions.

``profile.build_command`` starts the re-run as ``scalene run --off ... -m pytest --- <nodeid>
--perf-profile-region=<json>``: Scalene is loaded but does not sample, so the imports, the
collection and the fixtures are not in the profile. The plugin then turns sampling on around each
measured region (Scalene's programmatic control: ``scalene_profiler.start()`` / ``.stop()``) and,
once Scalene has written the JSON at exit, renders the self-contained HTML page in the same
process (its modules are loaded already; a separate ``scalene view`` costs a second start-up).

Nothing here imports pytest; Scalene is imported only inside a re-run that Scalene started.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RegionError", "ScaleneRegion"]

_PROFILER = "scalene.scalene_profiler"


class RegionError(Exception):
    """The region cannot be profiled; the message says why."""


class ScaleneRegion:
    """Turns Scalene's sampling on for the duration of ``with region():`` (nested uses count once)."""

    def __init__(self, json_path: Path) -> None:
        if _PROFILER not in sys.modules:
            raise RegionError("--perf-profile-region is for the plugin's own profile re-run, which runs under "
                              "`scalene run --off`; this process was not started by Scalene")
        self.profiler: Any = sys.modules[_PROFILER]
        self.json_path = Path(json_path)
        self.depth = 0
        self.entered = 0  # regions profiled in this process

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.depth += 1
        if self.depth == 1:
            self.profiler.start()
            self.entered += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.profiler.stop()

    def render_html_at_exit(self) -> None:
        """Write ``<json stem>.html`` once Scalene has written the JSON (it does so before exit
        handlers run). Best effort: the parent process renders it itself when the file is missing."""
        atexit.register(_render_html, self.json_path, self.json_path.with_suffix(".html"))


def _render_html(json_path: Path, html_path: Path) -> None:
    try:
        if not json_path.is_file():
            return
        utility = importlib.import_module("scalene.scalene_utility")  # loaded already: Scalene runs this process
        utility.generate_html(str(json_path), str(html_path), standalone=True)
    except Exception:  # an older or newer Scalene: the parent falls back to `scalene view`
        with contextlib.suppress(OSError):
            html_path.unlink(missing_ok=True)
