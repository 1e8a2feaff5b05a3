"""One table model, rendered for the terminal, markdown and HTML (no pytest import).

Tables are built once (``report.checks_table``, the CLI's) and rendered here; numbers are
formatted by ``units`` before they reach a cell.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["NOTE", "Table", "markdown_cell"]

NOTE = "why"  # the heading of the notes' column in markdown and HTML
NOTE_WIDTH = 120  # the terminal wraps a note at this width (or the table's, when wider)


@dataclass(frozen=True)
class Table:
    """Cells as text. ``marks``, per row: ``"fail"`` (a failure: class ``fail`` in HTML, bold verdict in
    markdown), ``"notable"`` (an improvement or a regression shown: bold verdict) or ``""``. The ``test``
    column holds node ids: code in markdown, the one column that wraps in HTML. ``notes``, per row: why
    its verdict (``""``: none), on a line of its own under the row in the terminal and in HTML (a column
    would push every row past the screen, or squeeze the node ids), and a last column ``why`` in
    markdown, where a table cannot span a row; no column when no row has one."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    marks: Sequence[str] = ()
    notes: Sequence[str] = ()

    def __bool__(self) -> bool:
        return bool(self.rows)

    def _mark(self, i: int) -> str:
        return self.marks[i] if i < len(self.marks) else ""

    def _note(self, i: int) -> str:
        return self.notes[i] if i < len(self.notes) else ""

    def text(self, first_width: int | None = None) -> list[str]:
        """Header, a rule, then the rows, in columns; a first column over ``first_width`` keeps its end.
        A row's note follows it, indented to the second column and wrapped."""
        table = [list(self.header), *map(list, self.rows)]
        widths = [max(len(r[c]) for r in table) for c in range(len(self.header))]
        if first_width is not None:
            widths[0] = min(widths[0], first_width)
        lines = []
        for r in table:
            first = r[0] if len(r[0]) <= widths[0] else "..." + r[0][-(widths[0] - 3):]
            cells = [first.ljust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
        rule = "-" * len(lines[0])
        indent = " " * (widths[0] + 2 if len(widths) > 1 else 2)
        out = [lines[0], rule]
        for i, line in enumerate(lines[1:]):
            out.append(line)
            note = self._note(i)
            if note:
                out += textwrap.wrap(f"{NOTE}: {note}", width=max(NOTE_WIDTH, len(rule)), initial_indent=indent,
                                     subsequent_indent=indent + "  ", break_on_hyphens=False)
        return out

    def _with_notes(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows, with the notes' column when any row has a note."""
        if not any(self._note(i) for i in range(len(self.rows))):
            return list(self.header), [list(r) for r in self.rows]
        return [*self.header, NOTE], [[*r, self._note(i)] for i, r in enumerate(self.rows)]

    def markdown(self) -> list[str]:
        """The last column of the table proper (the verdict) is bold on a marked row."""
        last = len(self.header) - 1
        header, rows = self._with_notes()
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for i, row in enumerate(rows):
            cells = [f"`{c}`" if h == "test" and c else f"**{c}**" if j == last and self._mark(i) and c else c
                     for j, (h, c) in enumerate(zip(header, row))]
            out.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
        return out

    def html(self) -> str:
        """A row's note is a row of its own under it, spanning every column but the first (as in the
        terminal: a column of long notes squeezes the node ids into a few letters a line)."""
        esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
        td = ["<td class=\"wrap\">" if h == "test" else "<td>" for h in self.header]
        head = "".join(f"<th>{esc(h)}</th>" for h in self.header)
        body = []
        for i, row in enumerate(self.rows):
            fail = "fail" if self._mark(i) == "fail" else ""
            body.append(f"<tr class=\"{fail}\">" + "".join(f"{td[j]}{esc(c)}</td>" for j, c in enumerate(row)) + "</tr>")
            note = self._note(i)
            if note:
                body.append(f"<tr class=\"note {fail}\"><td></td><td class=\"wrap\" colspan=\"{len(self.header) - 1}\">"
                            f"{NOTE}: {esc(note)}</td></tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
