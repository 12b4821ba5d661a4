"""The generated ``docs/bad_inputs.md``: shared by the two tests that write its sections.

``tests/unit/test_bad_inputs.py`` owns the bad-input table at the top, and
``tests/integration/test_faults.py`` the "Faults during work" section below it. Both run a list
of cases, one fresh folder each, and put every error message in a Markdown table row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

CaseT = TypeVar("CaseT")

#: The generated document (both sections).
DOC = Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md"


def table_head(first_column: str) -> list[str]:
    """The two Markdown header rows of a ``| <first_column> | error | message |`` table."""
    return [f"| {first_column} | error | message |", "|---|---|---|"]


def case_dirs(tmp_path: Path, cases: Sequence[CaseT], prefix: str) -> Iterator[tuple[CaseT, Path]]:
    """Each case with its own new, empty folder ``tmp_path / f"{prefix}{i}"``."""
    for i, case in enumerate(cases):
        tmp = tmp_path / f"{prefix}{i}"
        tmp.mkdir()
        yield case, tmp


def doc_message(text: str, tmp: Path, substitutions: Sequence[tuple[str, str]] = ()) -> str:
    """An error message as one table cell, the same on every machine.

    The case folder ``tmp`` is cut from paths, then each ``(pattern, replacement)`` regex of
    ``substitutions`` is applied (run-dependent numbers), whitespace is collapsed to one space and
    ``|`` is escaped (it would end the cell).
    """
    text = text.replace(str(tmp) + "/", "").replace(str(tmp), "")
    for pattern, replacement in substitutions:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"\s+", " ", text)
    return text.replace("|", "\\|")
