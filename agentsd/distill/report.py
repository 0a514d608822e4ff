"""Run reports: a learning-curve PNG and an HTML page where a person reads trajectories with
the teacher-student per-token gap highlighted.

``write_report(run_dir)`` reads ``metrics.jsonl``, ``config.json`` and ``samples/*.jsonl`` from a
run folder and writes ``learning_curve.png`` and ``report.html`` next to them. In the HTML, each
action token is coloured by ``log p_teacher - log p_student``: green where the teacher likes the
token more than the student (the update pushes it up), red where less (pushed down); env and
prompt tokens are grey. Hovering a token shows both log-probabilities.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from agentsd.distill.metrics import read_metrics

__all__ = ["write_report", "plot_learning_curve", "render_html", "token_spans"]

_CURVES = (("rollout/success", "train success"), ("eval/success", "held-out success"),
           ("kl/mean", "reverse KL / token"), ("loss/total", "loss"))


def plot_learning_curve(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Four panels (train success, held-out success, per-token reverse KL, loss) vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(_CURVES), figsize=(4 * len(_CURVES), 3.2))
    for ax, (key, label) in zip(axes, _CURVES, strict=True):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", ms=3)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def token_spans(sample: dict[str, Any], max_abs_gap: float = 3.0) -> str:
    """HTML spans for one scored trajectory (see the module docstring for the colours)."""
    toks, mask = sample["tokens"], sample["mask"]
    s_lp, t_lp = sample.get("student_logp"), sample.get("teacher_logp")
    out = []
    for i, tok in enumerate(toks):
        text = html.escape(tok).replace("\n", "↵<br>")
        if not mask[i]:
            out.append(f'<span class="env">{text}</span>')
            continue
        if s_lp is None or t_lp is None:
            out.append(f'<span class="act" title="student {s_lp[i] if s_lp else 0:.3f}">{text}</span>')
            continue
        gap = t_lp[i] - s_lp[i]
        a = min(abs(gap) / max_abs_gap, 1.0)
        rgb = "40,160,60" if gap > 0 else "220,50,50"
        out.append(f'<span class="act" style="background: rgba({rgb},{a:.2f})" '
                   f'title="teacher {t_lp[i]:.3f} | student {s_lp[i]:.3f} | gap {gap:+.3f}">'
                   f'{text}</span>')
    return "".join(out)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.traj{font-family:monospace;font-size:13px;line-height:1.6;border:1px solid #ddd;padding:8px;
margin:8px 0;white-space:normal;word-break:break-word}.env{color:#999}.act{color:#000}
details{margin:6px 0}summary{cursor:pointer}"""


def render_html(run_dir: str | Path) -> str:
    """The report page of a run folder as a string."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    evals = [r for r in rows if r.get("eval/success") is not None]
    parts = [f"<!doctype html><meta charset='utf-8'><title>agentsd run {html.escape(run_dir.name)}"
             f"</title><style>{_CSS}</style>",
             f"<h1>Run <code>{html.escape(str(run_dir))}</code></h1>",
             f"<p>algo <b>{html.escape(str(cfg.get('algo', '?')))}</b>, env "
             f"<b>{html.escape(str(cfg.get('rollout', {}).get('env', '?')))}</b>, model "
             f"<b>{html.escape(str(cfg.get('model', {}).get('name', '?')))}</b>, teacher "
             f"<b>{html.escape(str(cfg.get('teacher', {}).get('mode', '?')))}</b>, "
             f"{len([r for r in rows if r.get('step', 0) > 0])} steps logged.</p>"]
    if (run_dir / "learning_curve.png").exists():
        parts.append("<img src='learning_curve.png' style='max-width:100%'>")
    if evals:
        parts.append("<h2>Held-out evaluation</h2><table><tr><th>step</th><th>success</th>"
                     "<th>reward</th></tr>")
        parts += [f"<tr><td>{r['step']}</td><td>{r['eval/success']:.3f}</td>"
                  f"<td>{r.get('eval/reward', float('nan')):.3f}</td></tr>" for r in evals]
        parts.append("</table>")
    parts.append("<h2>Trajectories</h2><p>Action tokens are coloured by log p<sub>teacher</sub> "
                 "&minus; log p<sub>student</sub>: <span style='background:rgba(40,160,60,.6)'>"
                 "teacher prefers</span>, <span style='background:rgba(220,50,50,.6)'>teacher "
                 "disprefers</span>; grey = prompt/env tokens. Hover for values.</p>")
    for f in sorted((run_dir / "samples").glob("step_*.jsonl"), reverse=True):
        samples = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        parts.append(f"<h3>{html.escape(f.stem)}</h3>")
        for s in samples:
            head = (f"seed {s.get('seed')} &middot; {'success' if s.get('success') else 'failure'}"
                    f" &middot; reward {s.get('reward', 0):.2f}")
            if s.get("skills"):
                head += " &middot; skills: " + html.escape(", ".join(s["skills"]))
            parts.append(f"<details><summary>{head}</summary><div class='traj'>{token_spans(s)}"
                         "</div></details>")
    parts.append("<h2>Config</h2><pre>" + html.escape(json.dumps(cfg, indent=1)) + "</pre>")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write ``learning_curve.png`` and ``report.html`` into ``run_dir``; return their paths."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    png = plot_learning_curve(rows, run_dir / "learning_curve.png", title=run_dir.name)
    page = run_dir / "report.html"
    page.write_text(render_html(run_dir), encoding="utf-8")
    return {"png": png, "html": page}
