"""One self-contained HTML page: sections of escaped text, tables and plotly figures.

plotly.js is inlined once per page (never a CDN), figures carry only their data. A Content-Security-Policy
allows no network fetch at all, so a page opened in a meeting room requests nothing. Every piece of text
from the data (titles, ids) goes through `esc` or pandas' escaping; figure labels through `plots.safe`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'")

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #1f2933; }
header { background: #1f3a5f; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 26px; }
header p { margin: 0; opacity: .85; }
nav { padding: 8px 32px; background: #eef2f7; position: sticky; top: 0; z-index: 10; font-size: 14px; }
nav a { margin-right: 16px; color: #1f3a5f; text-decoration: none; }
section { padding: 8px 32px 24px 32px; border-bottom: 1px solid #e4e7eb; }
h2 { font-size: 22px; margin: 18px 0 6px 0; }
h3 { font-size: 17px; margin: 14px 0 4px 0; }
p.lead { color: #52606d; max-width: 70em; margin: 4px 0 10px 0; }
table.data { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px 0; }
table.data th, table.data td { border: 1px solid #d9e2ec; padding: 3px 8px; text-align: right; }
table.data th { background: #f0f4f8; }
table.data td.text, table.data th.text { text-align: left; max-width: 36em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.card { flex: 1 1 520px; max-width: 100%; overflow-x: auto; }
.card table.data td.text { max-width: 22em; }
.kv td { text-align: left; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class Section:
    """One titled part of a page: `body` is trusted HTML built from escaped pieces."""

    title: str
    body: list[str] = field(default_factory=list)
    anchor: str = ""

    def text(self, paragraph: str) -> "Section":
        self.body.append(f'<p class="lead">{esc(paragraph)}</p>')
        return self

    def heading(self, title: str) -> "Section":
        self.body.append(f"<h3>{esc(title)}</h3>")
        return self

    def table(self, df: pd.DataFrame, float_format: str = "{:.4f}", index: bool = False) -> "Section":
        self.body.append(table_html(df, float_format, index))
        return self

    def figure(self, fig: go.Figure) -> "Section":
        self.body.append(_FIGURE)  # replaced by numbered divs at render time (deterministic ids)
        self._figures.append(fig)
        return self

    def grid(self, parts: list["Section"]) -> "Section":
        """Side by side: each part's body in one column."""
        self.body.append('<div class="grid">')
        for part in parts:
            self.body.append('<div class="card">')
            self.body.extend(part.body)
            self._figures.extend(part._figures)
            self.body.append("</div>")
        self.body.append("</div>")
        return self

    def __post_init__(self) -> None:
        self._figures: list[go.Figure] = []


_FIGURE = "\x00figure\x00"


def table_html(df: pd.DataFrame, float_format: str = "{:.4f}", index: bool = False) -> str:
    """An escaped HTML table; text columns left-aligned."""
    if index:
        df = df.reset_index()
    head = "".join(f'<th class="{"num" if pd.api.types.is_numeric_dtype(df[c]) else "text"}">{esc(c)}</th>'
                   for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, float):
                cells.append(f"<td>{esc(float_format.format(v))}</td>")
            elif isinstance(v, (int,)) and not isinstance(v, bool):
                cells.append(f"<td>{v:,}</td>")
            else:
                cells.append(f'<td class="text">{esc(v)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as one string."""
    parts, n = [], 0
    for i, s in enumerate(sections):
        anchor = s.anchor or f"s{i}"
        figures = iter(s._figures)
        body = []
        for piece in s.body:
            if piece == _FIGURE:
                fig = next(figures)
                body.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"fig{n}",
                                        config={"displaylogo": False, "responsive": True}))
                n += 1
            else:
                body.append(piece)
        parts.append(f'<section id="{esc(anchor)}"><h2>{esc(s.title)}</h2>{"".join(body)}</section>')
    nav = "".join(f'<a href="#{esc(s.anchor or f"s{i}")}">{esc(s.title)}</a>' for i, s in enumerate(sections))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{CSS}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
        + "".join(parts) + "</body></html>\n"
    )
