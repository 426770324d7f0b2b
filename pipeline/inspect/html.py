"""The build report as one self-contained HTML file: inline CSS, plots as base64 PNG data URIs, no script,
no external resource, so it opens offline and can be mailed or attached to a ticket as it is."""

from __future__ import annotations

import base64

import jinja2

from pipeline.inspect.report import Report
from pipeline.inspect.tables import format_value

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rnj build report: {{ report.uri }}</title>
<style>
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
         padding: 0 24px 48px; color: #1d2330; background: #fff; }
  h1 { font-size: 24px; margin: 24px 0 4px; }
  h2 { font-size: 19px; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid #d8dde6; }
  h3 { font-size: 14px; margin: 18px 0 6px; color: #3b4455; }
  .uri { color: #5a6478; font-family: ui-monospace, monospace; font-size: 12px; }
  nav a { margin-right: 14px; color: #2f5fb3; text-decoration: none; }
  table { border-collapse: collapse; margin: 4px 0 8px; font-size: 13px; }
  th, td { border: 1px solid #d8dde6; padding: 3px 8px; vertical-align: top; }
  th { background: #eef1f6; text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .note { color: #5a6478; font-size: 12.5px; margin: 2px 0; }
  figure { margin: 10px 0 16px; }
  figure img { max-width: 100%; border: 1px solid #e3e7ee; }
  figcaption { color: #5a6478; font-size: 12px; }
</style>
</head>
<body>
<h1>rnj build report</h1>
<div class="uri">{{ report.uri }}</div>
<nav>{% for s in report.sections %}<a href="#{{ s.key }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in report.sections %}
<section id="{{ s.key }}">
<h2>{{ s.title }}</h2>
{% for note in s.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% for t in s.tables %}
<h3>{{ t.title }}</h3>
<table>
<tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for v in row %}<td{% if v is number and v is not boolean %} class="num"{% endif %}>{{ fmt(v) }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for note in t.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% endfor %}
{% for image in s.images %}
<figure><img alt="{{ image.title }}" src="data:image/png;base64,{{ b64(image.png) }}"><figcaption>{{ image.title }}</figcaption></figure>
{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def render_html(report: Report) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE)
    return template.render(report=report, fmt=format_value,
                           b64=lambda data: base64.b64encode(data).decode("ascii"))
