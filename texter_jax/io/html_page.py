"""One self-contained ``index.html`` per run: a grid of cards with sort and filter.

Cards are rendered here, on the server side, with every text that comes from data
(concepts, file names, class names) escaped; the page's few lines of JavaScript only
reorder and hide existing cards by their ``data-`` attributes, so a hostile concept
string cannot inject markup or script. Images are referenced by relative paths: the page
works from a copied folder and from ``file://``, with no network access. The URL hash
sets the initial view (``#sort=prob-desc&filter=misclassified``), which is how the
headless-browser tests drive it.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

from texter_jax.io.atomic import write_text_atomic

SORTS = {"prob-desc": "probability, high first", "prob-asc": "probability, low first",
         "name": "file name", "class": "predicted class"}


@dataclasses.dataclass(frozen=True)
class Card:
    """One explained image (one method on it).

    Attributes:
      name: image file name. image / concept: paths relative to the page (concept: an
        RGBA PNG whose alpha is MACO's transparency), or None.
      pred, prob: predicted class name and its probability.
      concepts: ranked (text, score), best first (the first ``top`` are shown).
      correct: True / False when the truth is known, else None.
      method: the method's label (eval and demo pages show several per image).
      hit: hit@k of the concepts when the truth is known, else None.
    """

    name: str
    image: str | None
    pred: str
    prob: float
    concepts: Sequence[tuple[str, float]]
    concept: str | None = None
    correct: bool | None = None
    method: str = "texter"
    hit: bool | None = None


_STYLE = """
body{font-family:sans-serif;margin:1em;background:#fafafa;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
#controls{position:sticky;top:0;background:#fafafa;padding:.4em 0;z-index:1}
#grid{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:6px;width:300px}
.card.miss{border-color:#c33}.card.hit{border-color:#3a3}
.imgs{display:flex;gap:4px}.imgs img{width:144px;height:144px;object-fit:cover}
.checker{background:repeating-conic-gradient(#ddd 0% 25%,#fff 0% 50%) 50%/16px 16px}
.meta{font-size:13px;margin:4px 0}.concepts{font-size:12px;margin:0;padding-left:1.2em}
.hidden{display:none}
"""

# Reorders and hides cards by their data- attributes; reads and writes the URL hash.
_SCRIPT = """
(function(){
  var grid=document.getElementById('grid'), cards=[].slice.call(grid.children);
  var sortSel=document.getElementById('sort'), filterSel=document.getElementById('filter');
  var methodSel=document.getElementById('method'), count=document.getElementById('count');
  var keys={'prob-desc':function(c){return -parseFloat(c.dataset.prob);},
            'prob-asc':function(c){return parseFloat(c.dataset.prob);},
            'name':function(c){return c.dataset.name;},
            'class':function(c){return c.dataset.pred;}};
  function apply(){
    var key=keys[sortSel.value]||keys['name'];
    cards.sort(function(a,b){var x=key(a),y=key(b);return x<y?-1:x>y?1:0;});
    var shown=0, f=filterSel.value, m=methodSel.value;
    cards.forEach(function(c){
      var ok=(f==='all'||(f==='correct'&&c.dataset.correct==='1')||
              (f==='misclassified'&&c.dataset.correct==='0')||
              (f==='hit'&&c.dataset.hit==='1')||(f==='miss'&&c.dataset.hit==='0')||
              (f.indexOf('class:')===0&&c.dataset.pred===f.slice(6)))&&
             (m==='all'||c.dataset.method===m);
      c.classList.toggle('hidden',!ok); if(ok){shown++;} grid.appendChild(c);
    });
    count.textContent=shown+' of '+cards.length+' cards';
    history.replaceState(null,'','#sort='+encodeURIComponent(sortSel.value)+
      '&filter='+encodeURIComponent(f)+'&method='+encodeURIComponent(m));
  }
  var h={}; location.hash.slice(1).split('&').forEach(function(kv){
    var p=kv.split('='); if(p.length===2){h[p[0]]=decodeURIComponent(p[1]);}});
  [['sort',sortSel],['filter',filterSel],['method',methodSel]].forEach(function(p){
    if(h[p[0]]!==undefined){p[1].value=h[p[0]];}
    p[1].addEventListener('change',apply);});
  apply();
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _card(c: Card, top: int) -> str:
    cls = "card" + ("" if c.hit is None else " hit" if c.hit else " miss")
    data = {"name": c.name, "pred": c.pred, "prob": f"{c.prob:.6f}", "method": c.method,
            "correct": "" if c.correct is None else str(int(c.correct)),
            "hit": "" if c.hit is None else str(int(c.hit))}
    attrs = " ".join(f'data-{k}="{_e(v)}"' for k, v in data.items())
    imgs = "".join(
        f'<img src="{_e(src)}" alt="{_e(alt)}"{extra} loading="lazy">'
        for src, alt, extra in ((c.image, "input", ""), (c.concept, "concept image",
                                                        ' class="checker"')) if src)
    truth = "" if c.correct is None else (" &#10003;" if c.correct else " &#10007; misclassified")
    hit = "" if c.hit is None else (" &middot; hit" if c.hit else " &middot; miss")
    items = "".join(f"<li>{_e(t)} <small>{s:.3f}</small></li>" for t, s in c.concepts[:top])
    return (f'<div class="{cls}" {attrs}><div class="imgs">{imgs}</div>'
            f'<div class="meta"><b>{_e(c.name)}</b> &middot; {_e(c.method)}<br>'
            f'{_e(c.pred)} ({c.prob:.3f}){truth}{hit}</div><ol class="concepts">{items}</ol>'
            "</div>")


def _settings_table(settings: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(json.dumps(v) if not isinstance(v, str) else v)}"
                   "</td></tr>" for k, v in settings.items())
    return f"<table>{rows}</table>"


def _options(values: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<option value="{_e(v)}">{_e(label)}</option>' for v, label in values)


def render_page(*, title: str, cards: Sequence[Card], settings: dict,
                summary_html: str = "", top: int = 5) -> str:
    """The page as a string. ``summary_html`` is trusted markup made by the caller from
    its own tables (numbers, escaped names); everything in ``cards`` and ``settings`` is
    escaped here."""
    classes = sorted({c.pred for c in cards})
    methods = sorted({c.method for c in cards})
    filters = [("all", "all"), ("correct", "correct"), ("misclassified", "misclassified"),
               ("hit", "hit"), ("miss", "miss")] + [(f"class:{k}", f"class: {k}")
                                                    for k in classes]
    controls = (f'<div id="controls">sort <select id="sort">{_options(list(SORTS.items()))}'
                f'</select> show <select id="filter">{_options(filters)}</select> method '
                f'<select id="method">{_options([("all", "all")] + [(m, m) for m in methods])}'
                '</select> <span id="count"></span></div>')
    body = "".join(_card(c, top) for c in cards)
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1>{summary_html}<details><summary>settings</summary>"
            f"{_settings_table(settings)}</details>{controls}<div id=\"grid\">{body}</div>"
            f"<script>{_SCRIPT}</script></body></html>\n")


def write_page(folder: str | os.PathLike, **kwargs) -> Path:
    """Writes ``<folder>/index.html`` atomically (see :func:`render_page`)."""
    path = Path(folder) / "index.html"
    write_text_atomic(path, render_page(**kwargs))
    return path


def markdown_to_html(text: str) -> str:
    """The headings, pipe tables and paragraphs of a report written by this project, as
    escaped HTML (images ``![alt](file)`` become relative ``<img>``; code blocks are
    kept as preformatted text; ``**bold**`` marks are dropped)."""
    out, table, code = [], [], None
    text = text.replace("**", "")
    for line in text.splitlines() + [""]:
        if code is not None:
            if line.startswith("```"):
                out.append(f"<pre>{_e(chr(10).join(code))}</pre>")
                code = None
            else:
                code.append(line)
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>"
                                 for r in rows) + "</table>")
            table = []
        if line.startswith("```"):
            code = []
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{_e(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            alt, src = line[2:].split("](", 1)
            out.append(f'<img src="{_e(src.rstrip(")"))}" alt="{_e(alt)}" '
                       'style="max-width:100%">')
        elif line.strip():
            out.append(f"<p>{_e(line)}</p>")
    return "\n".join(out)
