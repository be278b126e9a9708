"""The one layout of a results.md section, and the table and number formats the sections share.

Flow position: outside the service, after an experiment's runs: result dict -> **section text**
-> run_all stitches the sections into docs/results.md. With the layout here, each experiment's
``report_section`` reads as claim, settings, runs (tables), verdict, then the reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from experiments.common import fmt

__all__ = ["Block", "mean_pm", "section", "span", "table"]

Block = str | Sequence[str]
"""A paragraph, or lines printed one under the other (a table, a list)."""


def _lines(block: Block) -> str:
    return block if isinstance(block, str) else "\n".join(block)


def section(
    heading: str, claim: str, *body: Block, reading: Sequence[str], notes: Sequence[Block] = ()
) -> str:
    """``## heading``, the claim, the body blocks (settings, figure, tables, verdict), the reading.

    Args:
        heading: e.g. "2. Adam growth order".
        claim: what the paper (or the design) says, after **Claim**.
        body: blocks in order, one blank line between them.
        reading: the interpretation's bullet lines (no blank lines between them).
        notes: blocks after the reading.

    Returns:
        the section's markdown, ending in a newline.
    """
    blocks = [f"## {heading}", f"**Claim** {claim}", *body, "**Reading.**", reading, *notes]
    return "\n\n".join(_lines(b) for b in blocks) + "\n"


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: Sequence[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A markdown table: the header cells, the ``|---|`` rule, one line per row of cells.

    Cells are printed as given (``str()``), so a literal ``|`` must come escaped (``\\|``).
    """
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)]


def mean_pm(mean: Any, std: Any, spec: str = ".1f") -> str:
    """``mean ± std`` in one format; a missing or non-finite number prints as n/a."""
    return f"{fmt(mean, spec)} ± {fmt(std, spec)}"


def span(values: Sequence[float], spec: str = ".3f") -> str:
    """``lo to hi`` of the finite values (one number when they agree; n/a when there are none)."""
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "n/a"
    lo, hi = min(v), max(v)
    return fmt(lo, spec) if lo == hi else f"{fmt(lo, spec)} to {fmt(hi, spec)}"
