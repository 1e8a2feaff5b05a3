"""Gate-quality tooling: how good the regression gate is, measured on real timings.

Run from the repository root::

    python scripts/gate_quality stored [--pairs N] [--out docs/gate_quality.md] ...
    python scripts/gate_quality ab [--runs N] [--rounds K] [--out docs/gate_quality.md] ...

``stored`` times a reference workload with the plugin's own loop (``pytest_perfguard.measure.
measure_calls``) and judges baseline/candidate pairs with ``pytest_perfguard.decide.compare_samples``;
``ab`` runs the real ``perfguard ab`` (``pytest_perfguard.ab.run_ab``) on a throw-away repository.
Both write their table between markers in a markdown file (``--out``); docs/gate_quality.md says
what the tables show.

Modules, each importing only modules listed before it (so there is no import cycle):

* ``tables``: the 95 % Wilson interval, a rate's table cell, the machine line, writing a table
  between two markers;
* ``workload``: the timed reference workload and its variants with 5 %, 10 % and 20 % more work;
* ``recording``: sessions of measurements of those workloads, timed by ``measure_calls``;
  saving and loading them (``.npz``);
* ``confirm``: the confirm-on-regression analysis of a recording;
* ``stored``: the ``stored`` command (pairs, scenarios, rules, its table);
* ``ab_runs``: the throw-away repository, the CPU hog, the recorded ``perfguard ab`` runs;
* ``ab``: the ``ab`` command (the analysis of those runs, its table);
* ``cli``: the command line (``__main__`` runs it).

Nothing is imported here, so importing one module loads only what it needs.
"""
