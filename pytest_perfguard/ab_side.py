"""One side of ``perfguard ab``: record which files the side's project code was imported from.

``perfguard ab`` loads this module into each side's pytest (``-p pytest_perfguard.ab_side``) and
names a JSON file in ``IMPORTS_ENV``. When the session ends, the file lists, by module name, the
file of every imported module that is not part of the Python installation (the standard library
and site-packages) and not part of this plugin, plus the modules whose top-level name is a package
or module of this side's checkout wherever they came from. ``ab_process.check_imports`` then proves that
each side measured its own checkout's code: an editable install (``pip install -e .``) or a
``PYTHONPATH`` that points at the head's checkout makes the base import the head's files, and
then both sides measure the same code.

In lockstep (``perfguard ab``'s default; ``TURNS_ENV`` set) the side also takes its turns in each
test's call (``ab_turns``): before it, between two rounds (through the ``perf`` fixture), and after it.

Nothing here runs unless ``IMPORTS_ENV`` or ``TURNS_ENV`` is set.
"""

from __future__ import annotations

import json
import os
import site
import sys
import sysconfig
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .ab_process import IMPORTS_ENV, SIDE_ENV, ab_pythonpath
from .ab_turns import TURNS_ENV, TurnClient

PLUGIN_PACKAGE = __name__.split(".")[0]
turns_key = pytest.StashKey[TurnClient]()


def environment_paths() -> list[str]:
    """The folders of the Python installation: the standard library and every site-packages."""
    paths = {sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenv's site module
        pass
    user = getattr(site, "getusersitepackages", lambda: None)()
    paths.add(user)
    return sorted({os.path.realpath(p) for p in paths if p})


def own_names(folders: list[Path]) -> list[str]:
    """Top-level packages (folders with ``__init__.py``) and modules in the checkout's code folders."""
    names: set[str] = set()
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
                names.add(entry.name)
            elif entry.suffix == ".py" and entry.stem.isidentifier() and entry.stem != "conftest":
                names.add(entry.stem)
    names.discard(PLUGIN_PACKAGE)
    return sorted(names)


def _under(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def imported_files(names: list[str], env: list[str]) -> dict[str, str]:
    """``{module name: real path of its file}`` of the modules that can be the project's code."""
    own = set(names)
    files: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        if top == PLUGIN_PACKAGE:  # the measuring instrument: the installed plugin on both sides
            continue
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not os.path.isabs(file):
            continue
        real = os.path.realpath(file)
        if top in own or not _under(real, env):
            files[name] = real
    return files


def record(config: pytest.Config, path: Path) -> dict[str, Any]:
    rootdir = Path(config.rootpath)
    try:
        configured = config.getini("perfguard_ab_pythonpath")
    except ValueError:  # the ini is not registered (the main plugin is not loaded)
        configured = []
    folders = [rootdir, *ab_pythonpath(rootdir, configured)]
    names = own_names(folders)
    doc = {"side": os.environ.get(SIDE_ENV), "rootdir": os.path.realpath(rootdir), "own_names": names,
           "modules": imported_files(names, environment_paths())}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return doc


def pytest_configure(config: pytest.Config) -> None:
    address = os.environ.get(TURNS_ENV)
    if not address:
        return
    try:
        config.stash[turns_key] = TurnClient(address, os.environ.get(SIDE_ENV, ""))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"perfguard ab --lockstep: cannot reach the turns at {address}: {exc}") from None


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    out = os.environ.get(IMPORTS_ENV)
    if out:
        record(config, Path(out))
    client = config.stash.get(turns_key, None)
    if client is not None:
        client.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    client = session.config.stash.get(turns_key, None)
    if client is not None:
        client.tests([item.nodeid for item in session.items])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Outermost around the call: the call starts in this side's turn, and once it is done this side
    waits until the other side's call of the test is done too."""
    client = item.config.stash.get(turns_key, None)
    if client is None:
        return (yield)
    client.call(item.nodeid)
    try:
        return (yield)
    finally:
        client.done()
