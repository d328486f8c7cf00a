"""The HTML of the report page: style, metrics table, image rows and metadata block."""

from __future__ import annotations

import html
import json

from captum_ext.metrics.summary import HIGHER_IS_BETTER, METRIC_NAMES
from captum_ext.report.runner import ReportData
from captum_ext.report.verdict import METRIC_HELP, best_methods, column_means

#: Readable at 800 px and 1400 px: tables scroll inside their box, image tiles wrap.
STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1em 1.5em; max-width: 1400px;
       line-height: 1.45; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; font-size: 0.9em; vertical-align: top; }
th { background: #f4f4f4; }
td.best { background: #d9f2d9; font-weight: bold; }
td.ref, .small { color: #555; font-size: 0.82em; }
.warn { background: #fff4d6; border: 1px solid #e8c65c; padding: 0.5em 0.8em; }
.tiles { display: flex; flex-wrap: wrap; gap: 6px; }
.tiles img { width: auto; max-width: 100%; height: auto; }
img { max-width: 100%; height: auto; }
pre, code { white-space: pre-wrap; word-break: break-word; font-size: 0.85em; }
ul.verdict li { margin: 0.25em 0; }
"""


def esc(value: object) -> str:
    """HTML-escape ``str(value)`` (quotes too)."""
    return html.escape(str(value), quote=True)


def fmt(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, or a dash."""
    return "&ndash;" if x is None else f"{x:.{digits}g}"


def methods_table(data: ReportData) -> str:
    """One row per method; the best value of each column is highlighted."""
    n = len(data.images)
    cols = column_means(data.results, n)
    best = best_methods(cols)
    present = [k for k in METRIC_NAMES if k in cols]
    head = "".join(
        f"<th>{esc(k)} {'&uarr;' if HIGHER_IS_BETTER[k] else '&darr;'}</th>" for k in present
    )
    rows = []
    for r in data.results:
        cells = [r.name, fmt(r.seconds), fmt(cols["seconds_per_image"].get(r.name))]
        classes = ["", "", "best" if r.name in best.get("seconds_per_image", ()) else ""]
        for k in present:
            cells.append(fmt(cols[k].get(r.name)))
            classes.append("best" if r.name in best.get(k, ()) else "")
        cells[0] = esc(cells[0])  # the name; the numbers come from fmt
        tds = "".join(
            f"<td class='{c}'>{v}</td>" if c else f"<td>{v}</td>" for v, c in zip(cells, classes)
        )
        status = "ok" if r.error is None else "<b>failed</b>"
        rows.append(f"<tr>{tds}<td>{status}</td></tr>")
    failures = "".join(
        f"<li><b>{esc(r.name)}</b>: {esc(r.error)}</li>" for r in data.results if r.error
    )
    return (
        "<div class='scroll'><table><tr><th>method</th><th>seconds (batch)</th>"
        f"<th>seconds / image &darr;</th>{head}<th>status</th></tr>"
        f"{''.join(rows)}</table></div>"
        + (f"<p>Failures:</p><ul>{failures}</ul>" if failures else "")
    )


def metric_help(data: ReportData) -> str:
    """A definition list: what each metric in the table measures and which way is better."""
    present = {k for r in data.results for k in r.metrics}
    items = "".join(
        f"<li><b>{esc(k)}</b> ({'higher' if HIGHER_IS_BETTER[k] else 'lower'} is better): "
        f"{esc(METRIC_HELP[k])}.</li>"
        for k in METRIC_NAMES
        if k in present
    )
    return f"<ul class='small'>{items}</ul>"


def image_rows(data: ReportData, tiles: list[list[str]]) -> str:
    """One block per image: the image tile, then one tile per method (wrapping)."""
    blocks = []
    for i, row in enumerate(tiles):
        imgs = "".join(f"<img src='{esc(t)}' alt='{esc(t)}'>" for t in row)
        blocks.append(f"<h3>{esc(data.inputs.names[i])}</h3><div class='tiles'>{imgs}</div>")
    return "".join(blocks)


def metadata_block(meta: dict, data: ReportData) -> str:
    """The run's facts (versions, command, model, seeds, device, time) and method settings."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta.items())
    settings = "".join(
        f"<tr><td>{esc(r.name)}</td><td class='ref'>{esc(r.reference)}</td><td>{esc(r.note)}</td>"
        f"<td><code>{esc(json.dumps(r.settings, default=str, sort_keys=True))}</code></td></tr>"
        for r in data.results
    )
    return (
        f"<div class='scroll'><table>{rows}</table></div>"
        f"<p>Settings of each method under the <b>{esc(data.preset)}</b> preset"
        f"{' with --quick' if data.quick else ''}:</p>"
        "<div class='scroll'><table><tr><th>method</th><th>paper</th><th>what the preset does</th>"
        f"<th>attribute() arguments</th></tr>{settings}</table></div>"
    )
