"""``python scripts/gate_quality COMMAND ...`` (or ``python -m gate_quality`` with scripts/ on the path)."""

import sys
from pathlib import Path

if not __package__:  # run as a folder: that folder is on sys.path, its parent (the package's home) is not
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # no sibling as a top-level module
    sys.path.insert(0, str(HERE.parent))  # scripts/: ``import gate_quality``
    sys.path.insert(1, str(HERE.parent.parent))  # the checkout: its pytest_perfguard

from gate_quality.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
