"""How the plugin reaches a user: the wheel holds the plugin only, and a project that needs the
plugin says so with ``required_plugins``."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# what a wheel build copies from the checkout: everything but version control, caches and outputs
_NOT_SOURCE = shutil.ignore_patterns(".git", ".tox", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".perfguard", ".benchmarks", "perf")

BUDGETED = '''
import sys

import pytest


@pytest.mark.perf_budget(latency="1s")
def test_within_budget(perf):
    perf(sum, range(100))


@pytest.mark.perf_budget(latency="1us")
def test_over_budget(perf):
    perf(sum, range(100_000))


def test_runs_the_installed_wheel():
    import pytest_perfguard.plugin

    assert pytest_perfguard.plugin.__file__.startswith(sys.prefix), pytest_perfguard.plugin.__file__
'''


def _missing_build_requirements() -> list[str]:
    """The checkout's build requirements this environment lacks (the wheel is built offline, without
    build isolation, so they must be installed here)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    missing = []
    for text in requires:
        req = Requirement(text)
        try:
            found = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{text} (not installed)")
            continue
        if not req.specifier.contains(found, prereleases=True):
            missing.append(f"{text} (found {found})")
    return missing


def _site_dirs() -> list[str]:
    """Where this environment's packages are installed (a venv's own, the base's where it sees them)."""
    dirs = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_the_wheel_holds_only_the_plugin_and_gates_a_budget_from_a_fresh_venv(tmp_path: Path) -> None:
    """Build the wheel from a copy of the checkout, list it, install it alone into a new virtual
    environment and run budgeted tests with it.

    The plugin's dependencies (numpy, scipy, psutil, pytest) come from the environment running this
    test, offline: a ``.pth`` file puts its site-packages after the venv's own, without running that
    environment's ``.pth`` files (an editable install's import hook stays out). Not
    ``--system-site-packages``: that shows the base interpreter's packages, not this virtual
    environment's. The inner test asserts that the plugin it runs under is the venv's copy."""
    missing = _missing_build_requirements()
    if missing:
        pytest.skip(f"building the wheel offline needs {', '.join(missing)} in this environment")
    source = tmp_path / "checkout"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp_path / "dist", source], cwd=tmp_path, env=env)

    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = re.compile(r"pytest_perfguard-[^/]+\.dist-info/")
    assert [n for n in names if not (n.startswith("pytest_perfguard/") or dist_info.match(n))] == []
    assert "pytest_perfguard/plugin.py" in names and "pytest_perfguard/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    wheel_meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(wheel_meta).decode().splitlines()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    venv_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path, env=env).stdout.strip())
    (venv_site / "outer_environment.pth").write_text("\n".join(_site_dirs()) + "\n")
    # this environment's pip, run by the venv's interpreter, installs into the venv; --ignore-installed:
    # the plugin installed out there (an editable install) must not count as installed
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel],
         cwd=tmp_path, env=env)
    assert (venv_site / "pytest_perfguard" / "plugin.py").is_file()
    assert not (venv_site / "perfcases").exists()
    _run([python, "-m", "pytest_perfguard.cli", "--help"], cwd=tmp_path, env=env)

    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nrequired_plugins = pytest-perfguard\n")
    (project / "test_budgets.py").write_text(BUDGETED)
    proc = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "--perf", "--perf-min-rounds=3",
                           "--perf-max-time=0.05", "--perf-profile=never", "-rA"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert re.search(r"PASSED test_budgets\.py::test_within_budget\b", out), out
    assert re.search(r"PASSED test_budgets\.py::test_runs_the_installed_wheel\b", out), out
    assert re.search(r"FAILED test_budgets\.py::test_over_budget\b", out), out
    assert re.search(r"latency p50 \S+ \S+/call > budget 1\.00 us/call", out), out
    assert "1 failed, 2 passed" in out, out


PROJECT_TEST = '''
import pytest


@pytest.mark.perf_budget(latency="1s")
def test_x(perf):
    perf(sum, range(10))
'''


def _project(pytester: pytest.Pytester, required: bool) -> None:
    ini = "[pytest]\nperfguard_tolerance = 10%\n" + ("required_plugins = pytest-perfguard\n" if required else "")
    pytester.makeini(ini)
    pytester.makepyfile(test_project=PROJECT_TEST)


def test_a_project_that_requires_the_plugin_stops_with_one_line_naming_it(pytester: pytest.Pytester) -> None:
    """The README's recipe for a project that uses perfguard: a contributor without the plugin gets
    pytest's one-line error naming it, not marker, fixture and ini errors."""
    _project(pytester, required=True)
    result = pytester.runpytest("-p", "no:perfguard", "--strict-markers", "--strict-config")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: Missing required plugins: pytest-perfguard"])
    out = "\n".join(result.outlines + result.errlines)
    assert "perf_budget" not in out and "perfguard_tolerance" not in out and "fixture" not in out


def test_a_project_that_requires_the_plugin_runs_where_it_is_installed(pytester: pytest.Pytester) -> None:
    """The name in ``required_plugins`` is the installed distribution's: with the plugin present the
    same project passes, strict."""
    _project(pytester, required=True)
    result = pytester.runpytest("--strict-markers", "--strict-config")
    result.assert_outcomes(passed=1)


def test_without_the_recipe_a_missing_plugin_shows_as_marker_errors(pytester: pytest.Pytester) -> None:
    """What the recipe replaces: a strict run without the plugin fails on the unknown marker (in a
    subprocess: in this process ``pytest.mark`` remembers the marker the plugin registered)."""
    _project(pytester, required=False)
    result = pytester.runpytest_subprocess("-p", "no:perfguard", "--strict-markers")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*'perf_budget' not found in `markers` configuration option*"])


def test_without_autoload_the_entry_point_name_loads_the_required_plugin(pytester: pytest.Pytester,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ``-p perfguard`` for runs that load no plugin by themselves."""
    _project(pytester, required=True)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest("--strict-markers", "--strict-config")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # autoload off: the requirement is unmet
    result.stderr.fnmatch_lines(["ERROR: Missing required plugins: pytest-perfguard"])
    result = pytester.runpytest("-p", "perfguard", "--strict-markers", "--strict-config")
    result.assert_outcomes(passed=1)
