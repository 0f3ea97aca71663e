"""The stylesheet and the script every report page inlines (no file or network fetch at view time)."""

CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; color: #fff; padding: 12px 20px; }
header h1 { margin: 0; font-size: 20px; }
header .sub { color: #b0bec5; font-size: 12px; }
nav a { color: #80cbc4; margin-right: 14px; font-size: 13px; }
main { padding: 8px 20px 40px; }
section { margin-top: 18px; }
h2 { font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 12px 0 4px; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
svg.chart { background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; }
svg .title { font-size: 12px; font-weight: 600; fill: #333; }
svg .tick, svg .legend, svg .axis { font-size: 10px; fill: #555; }
svg .empty { font-size: 12px; fill: #999; }
svg .frame { fill: none; stroke: #ccc; }
svg .grid { stroke: #eee; }
table.metrics { border-collapse: collapse; background: #fff; font-size: 13px; }
table.metrics th, table.metrics td { border: 1px solid #e0e0e0; padding: 3px 8px; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead th { background: #eceff1; }
td.up { color: #1b5e20; } td.down { color: #b71c1c; }
.filters { position: sticky; top: 0; background: #fafafa; padding: 6px 0; z-index: 2; border-bottom: 1px solid #ddd; }
.filters label { margin-right: 12px; }
#f-count { color: #555; font-size: 13px; }
.sample { background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; margin: 8px 0; padding: 8px; }
.sample .head { font-size: 12px; color: #555; }
.sample .head b { color: #222; }
.sample img.frames { display: block; margin: 6px 0 2px; image-rendering: pixelated; max-width: 100%; }
.sample .caption { font-size: 11px; color: #777; }
.sample .noframes { font-size: 12px; color: #b71c1c; }
.sample pre { white-space: pre-wrap; margin: 4px 0; font-size: 12px; background: #f5f5f5; padding: 4px 6px; }
table.completions { border-collapse: collapse; width: 100%; font-size: 12px; }
table.completions td, table.completions th { border-top: 1px solid #eee; padding: 2px 6px; vertical-align: top; }
table.completions td.text { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-word; width: 75%; }
table.completions td.num { text-align: right; white-space: nowrap; }
tr.completion[data-correct="1"] td.mark { color: #1b5e20; }
tr.completion[data-correct="0"] td.mark { color: #b71c1c; }
[hidden] { display: none !important; }
details > summary { cursor: pointer; color: #455a64; }
"""

JS = """
(function () {
  function val(id) { var el = document.getElementById(id); return el ? el.value : 'all'; }
  function apply() {
    var src = val('f-source'), task = val('f-task'), corr = val('f-correct');
    var cards = 0, rows = 0;
    document.querySelectorAll('.sample').forEach(function (card) {
      var cardOk = (src === 'all' || card.dataset.source === src) && (task === 'all' || card.dataset.task === task);
      var visible = 0;
      card.querySelectorAll('tr.completion').forEach(function (tr) {
        var ok = cardOk && (corr === 'all' || tr.dataset.correct === corr);
        tr.hidden = !ok;
        if (ok) { visible += 1; }
      });
      card.hidden = !(cardOk && visible > 0);
      if (!card.hidden) { cards += 1; rows += visible; }
    });
    var count = document.getElementById('f-count');
    if (count) { count.textContent = cards + ' prompts, ' + rows + ' completions shown'; }
  }
  document.addEventListener('DOMContentLoaded', function () {
    ['f-source', 'f-task', 'f-correct'].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.addEventListener('change', apply); }
    });
    apply();
  });
})();
"""
