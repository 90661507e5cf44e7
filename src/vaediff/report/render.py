"""Writing a report: blocks of headings, paragraphs, lists, tables and figures as Markdown and as one
self-contained HTML file (figures embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from vaediff.runs import atomic_write_text


def _image_markdown(name: str, alt: str) -> str:
    return f"![{alt}]({name})"


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render(blocks: list[tuple[str, object]], out_dir: Path, title: str) -> None:
    """Write report.md and report.html (figures embedded as data URIs) from the same blocks."""
    md, body = [f"# {title}", ""], []
    for kind, content in blocks:
        if kind == "h2":
            md += [f"## {content}", ""]
            body.append(f"<h2>{html.escape(str(content))}</h2>")
        elif kind == "p":
            md += [str(content), ""]
            body.append(f"<p>{_html_inline(str(content))}</p>")
        elif kind == "list":
            md += [f"- {line}" for line in content] + [""]  # type: ignore[union-attr]
            body.append("<ul>" + "".join(f"<li>{_html_inline(line)}</li>" for line in content) + "</ul>")  # type: ignore[union-attr]
        elif kind == "table":
            header, rows = content  # type: ignore[misc]
            md += [_markdown_table(header, rows), ""]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>"
                                  for row in rows) + "</table>")
        elif kind == "image":
            name, alt = content  # type: ignore[misc]
            md += [_image_markdown(name, alt), ""]
            body.append(f'<img alt="{html.escape(alt)}" src="{_embed(out_dir / name)}">')
    atomic_write_text(out_dir / "report.md", "\n".join(md))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%;margin:0.5em 0}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
    atomic_write_text(out_dir / "report.html", page)
