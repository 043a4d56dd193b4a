"""The static HTML report of `kinema eval`: one self-contained file (inline SVG plots, GIFs as
data URIs), readable offline, written next to report.json. With a second report, every plot and
table shows the two models side by side."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .quality import METRICS
from .suite import ATTRIBUTES

COLOURS = ["#3b6fd4", "#e0892b", "#3aa05a", "#9b59b6"]
REPORT_JSON, REPORT_HTML = "report.json", "report.html"


def load_report(path: str | Path) -> dict:
    """A report.json, or a report folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    if not p.is_file():
        raise FileNotFoundError(f"no kinema eval report at '{path}' (expected a folder with {REPORT_JSON}, "
                                "or the file)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"'{p}' is not a kinema eval report: {e}") from e


def bar_chart(title: str, categories: list[str], series: dict[str, list[float | None]], fig_id: str,
              caption: str = "", ymax: float = 1.0, percent: bool = True) -> str:
    """A grouped bar chart as inline SVG inside a <figure>; None values are drawn as 'n/a'."""
    W, H, left, bottom, top = 720, 280, 44, 40, 28
    plot_w, plot_h = W - left - 10, H - bottom - top
    n, k = len(categories), max(1, len(series))
    group = plot_w / max(1, n)
    bar = group * 0.8 / k
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    for i in range(5):  # grid and y labels
        v = ymax * i / 4
        y = top + plot_h * (1 - i / 4)
        label = f"{100 * v:.0f}%" if percent else f"{v:.3g}"
        out.append(f'<line x1="{left}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{label}</text>')
    for s, (name, values) in enumerate(series.items()):
        for c, v in enumerate(values):
            x = left + c * group + group * 0.1 + s * bar
            if v is None:
                out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - 4}" text-anchor="middle" '
                           f'font-size="9">n/a</text>')
                continue
            h = plot_h * min(1.0, max(0.0, v / ymax))
            text = f"{100 * v:.0f}%" if percent else f"{v:.3g}"
            out.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                       f'fill="{COLOURS[s % len(COLOURS)]}"><title>{html.escape(name)}: {text}</title></rect>'
                       f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{text}</text>')
    for c, cat in enumerate(categories):
        out.append(f'<text x="{left + (c + 0.5) * group:.1f}" y="{H - bottom + 14}" text-anchor="middle" '
                   f'font-size="11">{html.escape(cat)}</text>')
    for s, name in enumerate(series):  # legend
        x = left + s * 220
        out.append(f'<rect x="{x}" y="{H - 14}" width="10" height="10" fill="{COLOURS[s % len(COLOURS)]}"/>'
                   f'<text x="{x + 14}" y="{H - 5}" font-size="11">{html.escape(name)}</text>')
    out.append("</svg>")
    return (f'<figure id="{fig_id}" class="plot">{"".join(out)}<figcaption>{html.escape(caption or title)}'
            f'</figcaption></figure>')


def data_uri(path: Path) -> str:
    return "data:image/gif;base64," + base64.b64encode(path.read_bytes()).decode()


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _table(header: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _label(report: dict) -> str:
    return report.get("label") or Path(str(report.get("model", "model"))).name or "model"


def _adherence_section(reports: list[dict]) -> str:
    series = {_label(r): [r["adherence"]["by_attribute"].get(a, {}).get("rate") for a in ATTRIBUTES]
              + [r["adherence"]["rate"]] for r in reports}
    parts = [bar_chart("Judge pass rate per attribute", [*ATTRIBUTES, "overall"], series, "fig-attributes",
                       "Videos passing every check of an attribute, over videos whose prompt names it; "
                       "overall: videos passing every check")]
    split = {}
    for r in reports:
        a = r["adherence"]
        split[_label(r)] = [a["by_objects"]["1"].get("rate"), a["by_objects"]["2"].get("rate"),
                            a["by_kind"]["detailed"].get("rate"), a["by_kind"]["short"].get("rate")]
    parts.append(bar_chart("Overall pass rate by prompt kind", ["1 object", "2 objects", "detailed caption",
                                                                 "short caption"], split, "fig-splits",
                           "The same overall rate, split by the number of objects and by caption kind"))
    rows = []
    for r in reports:
        a = r["adherence"]
        groups = [("all", a), ("1 object", a["by_objects"]["1"]), ("2 objects", a["by_objects"]["2"])]
        untrained = a.get("by_wording", {}).get("untrained", {})  # reports before session 16 lack it
        if untrained.get("videos"):
            groups.append(("read with an untrained word", untrained))
        for group, sub in groups:
            cells = [f"{sub['by_attribute'][x]['passed']}/{sub['by_attribute'][x]['videos']}"
                     if x in sub.get("by_attribute", {}) else "n/a" for x in ATTRIBUTES]
            rows.append([html.escape(_label(r)), group, *cells, f"{sub.get('passed', 0)}/{sub.get('videos', 0)}"])
    parts.append(_table(["model", "prompts", *ATTRIBUTES, "overall"], rows, "table-adherence"))
    return "<h2>Prompt adherence (the shapes-world judge)</h2>" + "".join(parts)


def _quality_section(reports: list[dict]) -> str:
    keys = list(METRICS) + ["temporal_flickering_all"]
    labels = {**{k: v[0] for k, v in METRICS.items()}, "temporal_flickering_all": "Temporal flickering, all videos"}
    header = ["metric"]
    cols = []
    for r in reports:
        header += [f"{_label(r)}", "real clips"] if len(reports) > 1 else ["generated", "real clips"]
        cols += [r["quality"]["generated"], r["quality"]["real"]]
    rows = [[html.escape(labels[k]), *[_fmt(c.get(k)) for c in cols]] for k in keys]
    notes = "".join(f"<li><b>{html.escape(v[0])}</b>: {html.escape(v[1])}</li>" for v in METRICS.values())
    fd_rows = []
    for r in reports:
        fd = r["frechet"]
        fd_rows.append([html.escape(_label(r)), html.escape(fd["name"]), _fmt(fd["generated_vs_real"], 3),
                        _fmt(fd["real_vs_real"], 3), html.escape(fd["features"])])
    return ("<h2>Video quality</h2>" + _table(header, rows, "table-quality") + f"<ul class='notes'>{notes}</ul>"
            + "<h3>Fr&eacute;chet distance to real clips</h3>"
            + _table(["model", "metric", "generated vs real", "real vs real (floor)", "features"], fd_rows,
                     "table-frechet"))


def _samples_section(report: dict, folder: Path) -> str:
    cells = []
    for v in report["videos"]:
        gif = folder / v["gif"] if v.get("gif") else None
        if gif is None or not gif.is_file():
            continue
        failed = [f"{c['attribute']}: {c['measured']} (wanted {c['expected']})" for c in v["checks"] if not c["passed"]]
        verdict = "pass" if v["pass"] else "fail"
        cells.append(f'<div class="cell {verdict}"><img src="{data_uri(gif)}" alt="{html.escape(v["text"])}" '
                     f'width="128" height="128"><p><b>{verdict}</b> prompt {v["id"]}, video {v["video"]}, '
                     f'seed {v["seed"]}</p>'
                     f'<p>{html.escape(v["text"])}</p><p class="failed">{html.escape("; ".join(failed))}</p></div>')
    if not cells:
        return ""
    return (f'<h2>Samples: {html.escape(_label(report))}</h2><figure class="samples"><div class="grid">'
            f'{"".join(cells)}</div><figcaption>{len(cells)} sample videos (GIF) with the judge\'s verdict'
            f'</figcaption></figure>')


def vae_section(rows: list[dict]) -> str:
    """The autoencoder table and plots by compression ratio (rows from evaluate_autoencoders)."""
    table = _table(["autoencoder", "compression (T x H x W, channels)", "ratio", "PSNR dB", "worst PSNR", "SSIM",
                    "judge survival", "judge on originals"],
                   [[html.escape(r["name"]), html.escape(r["compression"]), f"{r['ratio']:.1f}", _fmt(r["psnr"], 2),
                     _fmt(r["psnr_min"], 2), _fmt(r["ssim"], 3), _fmt(r["judge_pass"], 3), _fmt(r["judge_original"], 3)]
                    for r in rows], "table-vae")
    names = [f"{r['name']} ({r['ratio']:.0f}x)" for r in rows]
    psnr = bar_chart("Held-out PSNR (dB) by compression ratio", names, {"PSNR": [r["psnr"] for r in rows]},
                     "fig-vae-psnr", "Mean per-clip PSNR of the reconstructions, autoencoders sorted by "
                     "compression ratio (pixel values per latent value)",
                     ymax=max(40.0, max(r["psnr"] for r in rows)), percent=False)
    survival = bar_chart("Judge survival by compression ratio", names,
                         {"reconstructions": [r["judge_pass"] for r in rows],
                          "originals": [r["judge_original"] for r in rows]}, "fig-vae-judge",
                         "Fraction of held-out clips whose reconstruction (and whose original) passes the judge "
                         "on its detailed caption")
    return "<h2>Autoencoders by compression ratio</h2>" + table + psnr + survival


CSS = """body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.cell{font-size:11px;border:1px solid #ddd;padding:4px}.cell.pass{border-color:#3aa05a}
.cell.fail{border-color:#d04040}.cell img{image-rendering:pixelated}.failed{color:#a03030}
figure{margin:12px 0}.notes{font-size:12px}"""


def render_html(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def write_eval_html(report: dict, folder: str | Path, other: dict | None = None,
                    other_folder: str | Path | None = None) -> Path:
    """folder/report.html for a model report (with `other`, the two side by side). Sample GIFs
    are read from each report's folder and inlined, so the page is one self-contained file."""
    folder = Path(folder)
    reports = [report] + ([other] if other else [])
    s = report["suite"]
    title = f"Kinema eval: {_label(report)}" + (f" vs {_label(other)}" if other else "") + f" on {s['name']}"
    meta = "".join(
        f"<p><b>{html.escape(_label(r))}</b>: <code>{html.escape(str(r.get('model')))}</code>, "
        f"{r['suite']['prompts']} prompts x {r['suite']['videos_per_prompt']} videos, {r['suite']['width']}x"
        f"{r['suite']['height']}x{r['suite']['num_frames']}, {r['suite']['num_inference_steps']} steps, guidance "
        f"{r['suite']['guidance_scale']}; {html.escape(r.get('created', ''))}; "
        f"{r.get('seconds', {}).get('total', '?')} s"
        f" on {html.escape(r.get('machine', ''))}</p>" for r in reports)
    body = meta + _adherence_section(reports) + _quality_section(reports) + _samples_section(report, folder)
    if other is not None and other_folder is not None:
        body += _samples_section(other, Path(other_folder))
    path = folder / REPORT_HTML
    path.write_text(render_html(title, body))
    return path
