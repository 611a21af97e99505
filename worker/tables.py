"""Tables for `newswatch status` and friends: rich tables on a terminal, plain aligned text when
the output goes to a file or a pipe.

Cells are rich Text, never str: rich would read a str as markup, and a server's words in a cell
("not a feed: text/[/oops]", "[link=…]") would crash the table or become a link. On a terminal
only the columns named `fold` wrap, by character; every other cell (names, timestamps, counts)
stays whole however narrow the terminal: a wrapped "2026-11-29T16:20:01Z" cannot be read, nor
searched. Piped, nothing wraps or is cut: one line per row, for grep and for files.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_table(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Text]],
    fold: Collection[str] = (),
) -> None:
    """A table: rich on a terminal wide enough to show every cell of the columns that do not
    fold whole, else plain text (which the terminal may wrap, but never cuts)."""
    if console.is_terminal and _fits(columns, rows, fold, console.width):
        table = Table(title=title)
        for column in columns:
            wraps = column in fold
            table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    plain = plain_table(title, columns, [[cell.plain for cell in row] for row in rows])
    console.out(plain, highlight=False)


def _fits(columns: Sequence[str], rows: Sequence[Sequence[Text]], fold: Collection[str], width: int) -> bool:
    """Whether a rich table of these rows fits `width` with the other columns whole: rich
    shrinks a folding column to its longest word at most, then every column alike."""
    needed = 3 * len(columns) + 1  # borders and padding
    for i, column in enumerate(columns):
        cells = [column, *(row[i].plain for row in rows)]
        if column in fold:
            cells = [word for cell in cells for word in cell.split()] or [""]
        needed += max(cell_len(cell) for cell in cells)
    return needed <= width


def plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, two spaces apart, under the title; the last column is not padded."""
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([title, line(columns), *(line(row) for row in rows), ""])
