"""One table model, rendered for the terminal, markdown and HTML (no pytest import).

Tables are built once (``report.checks_table``, the CLI's) and rendered here; numbers are
formatted by ``units`` before they reach a cell.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Table", "markdown_cell"]


@dataclass(frozen=True)
class Table:
    """Cells as text. ``marks``, per row: ``"fail"`` (a failure: class ``fail`` in HTML, bold verdict in
    markdown), ``"notable"`` (an improvement or a regression shown: bold verdict) or ``""``. The ``test``
    column holds node ids: code in markdown, the one column that wraps in HTML."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    marks: Sequence[str] = ()

    def __bool__(self) -> bool:
        return bool(self.rows)

    def _mark(self, i: int) -> str:
        return self.marks[i] if i < len(self.marks) else ""

    def text(self, first_width: int | None = None) -> list[str]:
        """Header, a rule, then the rows, in columns; a first column over ``first_width`` keeps its end."""
        table = [list(self.header), *map(list, self.rows)]
        widths = [max(len(r[c]) for r in table) for c in range(len(self.header))]
        if first_width is not None:
            widths[0] = min(widths[0], first_width)
        lines = []
        for r in table:
            first = r[0] if len(r[0]) <= widths[0] else "..." + r[0][-(widths[0] - 3):]
            cells = [first.ljust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        return lines

    def markdown(self) -> list[str]:
        last = len(self.header) - 1
        out = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        for i, row in enumerate(self.rows):
            cells = [f"`{c}`" if h == "test" and c else f"**{c}**" if j == last and self._mark(i) and c else c
                     for j, (h, c) in enumerate(zip(self.header, row))]
            out.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
        return out

    def html(self) -> str:
        esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
        td = ["<td class=\"wrap\">" if h == "test" else "<td>" for h in self.header]
        head = "".join(f"<th>{esc(h)}</th>" for h in self.header)
        body = "".join(
            f"<tr class=\"{'fail' if self._mark(i) == 'fail' else ''}\">"
            + "".join(f"{td[j]}{esc(c)}</td>" for j, c in enumerate(row)) + "</tr>"
            for i, row in enumerate(self.rows))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
