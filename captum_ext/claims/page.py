"""The HTML of the claims: one table row and one figure per claim, and the standalone page."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from captum_ext._io import atomic_write_text
from captum_ext.claims._base import VERDICTS, ClaimResult

__all__ = ["PAGE_FILE", "claims_html", "verdict_counts", "write_page"]

#: File name of the standalone page inside a claims folder.
PAGE_FILE = "index.html"
_COLOURS = {"holds": "#d9f2d9", "partly": "#fff4d6", "does not hold": "#f8d7d7"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1em 1.5em; max-width: 1400px;
       line-height: 1.45; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; font-size: 0.9em; vertical-align: top; }
th { background: #f4f4f4; }
.small { color: #555; font-size: 0.82em; }
figure { display: inline-block; margin: 0.5em; max-width: 46%; vertical-align: top; }
img { max-width: 100%; height: auto; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def verdict_counts(results: Sequence[ClaimResult]) -> dict[str, int]:
    """How many claims got each verdict (every verdict listed, zeros included)."""
    counts = Counter(r.outcome.verdict for r in results)
    return {v: counts.get(v, 0) for v in VERDICTS}


def claims_html(results: Sequence[ClaimResult], figure_prefix: str = "") -> str:
    """The claims table and figures as an HTML fragment.

    Args:
        results: The claim results, in the order to show.
        figure_prefix: Prepended to each figure's file name in ``src`` (e.g. an assets folder).
    """
    rows = []
    for r in results:
        o = r.outcome
        why = f"<br><b>Why:</b> {_esc(o.why)}" if o.why else ""
        rows.append(
            f"<tr><td><b>{_esc(r.name)}</b><br><span class='small'>{_esc(r.paper)}</span></td>"
            f"<td>{_esc(r.statement)}</td><td>{_esc(o.paper_value)}</td><td>{_esc(o.ours)}</td>"
            f"<td style='background:{_COLOURS[o.verdict]}'><b>{_esc(o.verdict)}</b></td>"
            f"<td class='small'>{_esc(o.rule)}{why}</td><td>{r.seconds:.1f}</td></tr>"
        )
    counts = ", ".join(f"{n} {v}" for v, n in verdict_counts(results).items())
    figures = "".join(
        f"<figure><img src='{_esc(figure_prefix + r.outcome.figure)}' alt='{_esc(r.name)}'>"
        f"<figcaption class='small'>{_esc(r.name)}: {_esc(r.outcome.ours)}</figcaption></figure>"
        for r in results
        if r.outcome.figure
    )
    return (
        f"<p>{len(results)} claims: {_esc(counts)}.</p><div class='scroll'><table>"
        "<tr><th>claim</th><th>the paper says</th><th>paper's figure</th><th>ours</th>"
        "<th>verdict</th><th>rule (and why, where it does not hold)</th><th>seconds</th></tr>"
        f"{''.join(rows)}</table></div>{figures}"
    )


def write_page(results: Sequence[ClaimResult], folder: Path, meta: dict | None = None) -> Path:
    """Write the standalone ``folder/index.html`` (figures next to it); returns its path."""
    meta_rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in (meta or {}).items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>captum-ext: do the papers' claims hold here?</title><style>{_STYLE}</style></head><body>
<h1>Do the papers' claims hold here?</h1>
<p>Each row runs one paper's central claim on the embedded benchmark with captum-ext's public
API and states the rule that gave the verdict. Where a claim does not hold, the row says why.</p>
{claims_html(results)}
<h2>Run</h2><table>{meta_rows}</table>
</body></html>
"""
    return atomic_write_text(page, folder / PAGE_FILE)
