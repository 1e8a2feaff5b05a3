"""The command line: ``python scripts/gate_quality {stored,ab} [options]``.

A command's module is imported only when it runs: ``stored`` needs ``pytest_perfguard.measure`` and
``decide``, not ``pytest_perfguard.ab``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name: what it measures (the module of that name has ``main(argv) -> int``)
    "stored": "the workload timed by the plugin's loop; stored-baseline and simulated A/B pairs",
    "ab": "the real `perfguard ab` on a throw-away repository, with and without a CPU hog",
}
USAGE = "usage: python scripts/gate_quality {" + ",".join(COMMANDS) + "} [options]  (COMMAND --help for its options)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        stream = sys.stdout if asked else sys.stderr
        print(USAGE, file=stream)
        for name, what in COMMANDS.items():
            print(f"  {name:7} {what}", file=stream)
        return 0 if asked else 2
    module = importlib.import_module(f"{__package__}.{argv[0]}")
    return int(module.main(argv[1:]))
