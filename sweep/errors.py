"""Errors a user can act on: each names the file and the line, row or key at fault."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input data or configuration.

    Attributes:
        source: file path (or other origin) of the bad input, if known.
        line: 1-based line number in a text file, if known.
        row: 0-based row number in a table, if known.
        key: configuration key, if the error is about a key.
    """

    def __init__(self, message: str, *, source: str = "", line: int | None = None, row: int | None = None,
                 key: str | None = None) -> None:
        self.source = str(source) if source else ""
        self.line = line
        self.row = row
        self.key = key
        where = []
        if self.source:
            where.append(self.source)
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if key is not None:
            where.append(f"key '{key}'")
        prefix = ":".join(where[:1]) + (" (" + ", ".join(where[1:]) + ")" if len(where) > 1 else "")
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.message = message
