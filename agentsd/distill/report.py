"""Run reports: learning-curve PNGs and an HTML page where a person reads trajectories with
the teacher-student per-token gap highlighted.

``write_report(run_dir)`` reads ``metrics.jsonl``, ``config.json`` and ``samples/*.jsonl`` from a
run folder and writes ``learning_curve.png`` (held-out success and parse rate vs step, the first
thing on the page), ``training_curves.png`` and ``report.html`` next to them. Observations keep
their whitespace (a Sokoban board reads as a board). In the HTML, each action token is coloured
by ``log p_teacher - log p_student``: green where the teacher likes the token more than the
student (the update pushes it up), red where less (pushed down); env and prompt tokens are grey.
Hovering a token shows both log-probabilities. Beside each sample, collapsed, is the context the
teacher scored it with: the text its row adds over the student's tokens (skills, hints, the
reference reply), read from ``samples/step_N.teacher.json`` (:func:`save_teacher_contexts`) when
the run wrote one. That file sits next to ``step_N.jsonl`` rather than inside it: the samples
file's bytes are pinned (``tests/test_step_golden.py``).

``plot_comparison`` draws several algorithms' held-out curves, mean ± std over seeds
(``scripts/compare.py``).

The page also shows the teacher's advantage measured at step 0 (each teacher view acting next to
the student: ``teacher/advantage/<view>``) and, for a run with dynamic skills
(``skills.refresh_every``), when each skill appeared (``skills_versions/index.json``) and how
the episodes whose teacher saw it did (:func:`skill_history`).
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentsd.distill.metrics import Series, mean_curve, metric_series, read_metrics

__all__ = ["write_report", "plot_learning_curve", "plot_training_curves", "plot_comparison",
           "render_html", "token_spans", "skill_history", "teacher_additions",
           "save_teacher_contexts", "read_teacher_contexts", "HELDOUT_CURVES", "TEACHER_SUFFIX"]

#: what the held-out panels draw: (key, label, line style); keys absent from the metrics are skipped
HELDOUT_CURVES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "held-out success": (("eval/success", "student, greedy", "-"),
                         ("eval/success_t1", "student, T=1", "--"),
                         ("teacher/eval_success", "teacher context acting", ":")),
    "held-out parse rate": (("eval/parse_rate", "student, greedy", "-"),
                            ("eval/parse_rate_t1", "student, T=1", "--"),
                            ("teacher/eval_parse_rate", "teacher context acting", ":")),
}
_TRAINING = (("rollout/success", "train success"), ("kl/mean", "reverse KL / token"),
             ("loss/total", "loss"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _draw(ax: Any, series: Series, label: str, style: str = "-", color: Any = None) -> None:
    """A mean line with markers and, where the series has a spread, a ±std band."""
    line, = ax.plot(series.steps, series.mean, style, marker="o", ms=3, label=label, color=color)
    if series.has_spread:
        lo = [m - s for m, s in zip(series.mean, series.std, strict=True)]
        hi = [m + s for m, s in zip(series.mean, series.std, strict=True)]
        ax.fill_between(series.steps, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)


def _save(fig: Any, path: str | Path, title: str) -> Path:
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _not_logged(ax: Any, what: str = "not logged") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="#888")


def plot_learning_curve(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Held-out success and parse rate vs step (:data:`HELDOUT_CURVES`: the student greedy and
    at temperature 1, the teacher context acting), with a ±std band where the metrics carry a
    spread (``<key>_std``, or several rows per step from several seeds)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(HELDOUT_CURVES), figsize=(5.5 * len(HELDOUT_CURVES), 3.4))
    for ax, (panel, curves) in zip(axes, HELDOUT_CURVES.items(), strict=True):
        drawn = 0
        for key, label, style in curves:
            series = metric_series(rows, key)
            if len(series):
                _draw(ax, series, label, style)
                drawn += 1
        if drawn:
            ax.legend(fontsize=8, loc="best")
        else:
            _not_logged(ax, "no held-out evaluation logged")
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    return _save(fig, path, title)


def plot_training_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Train success, per-token reverse KL and loss vs step."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(_TRAINING), figsize=(3.7 * len(_TRAINING), 2.8))
    for ax, (key, label) in zip(axes, _TRAINING, strict=True):
        series = metric_series(rows, key)
        if len(series):
            _draw(ax, series, label)
        else:
            _not_logged(ax)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, path, title)


def plot_comparison(curves: dict[str, list[list[tuple[int, float]]]], path: str | Path,
                    title: str = "", ylabel: str = "held-out success") -> Path:
    """One line per algorithm: the mean over seeds of its ``(step, value)`` curves, with a ±std
    band (sample std over seeds, as in ``scripts/compare.py``'s table). A single seed draws a
    line without a band; an algorithm with no points is listed in the legend as ``(no data)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for algo, runs in curves.items():
        series = mean_curve([r for r in runs if r])
        if not len(series):
            ax.plot([], [], label=f"{algo} (no data)")
            continue
        n_seeds = sum(1 for r in runs if r)
        _draw(ax, series, f"{algo} ({n_seeds} seed{'s' if n_seeds > 1 else ''})")
    if not curves:
        _not_logged(ax, "no curves")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=9, loc="best")
    return _save(fig, path, title)


def token_spans(sample: dict[str, Any], max_abs_gap: float = 3.0) -> str:
    """HTML spans for one scored trajectory (see the module docstring for the colours)."""
    toks, mask = sample["tokens"], sample["mask"]
    s_lp, t_lp = sample.get("student_logp"), sample.get("teacher_logp")
    out = []
    for i, tok in enumerate(toks):
        # the page keeps whitespace (pre-wrap): boards and indentation stay as the model saw them
        text = html.escape(tok).replace("\n", "↵\n")
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


#: the teacher contexts of ``samples/step_N.jsonl`` are in ``samples/step_N`` + this suffix
TEACHER_SUFFIX = ".teacher.json"


def teacher_additions(student_ids: Sequence[int], row_ids: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``(student position, ids)`` of each run of tokens a teacher row holds where the student's
    sequence has none (or others): what the teacher's context adds over the student's prompt.
    The row is the student's tokens plus insertions (:func:`agentsd.teacher_context.teacher_row`),
    so a diff finds them; the student tokens a row lacks (a step-wise row ends at its turn) are
    not additions. An insertion that could sit a few tokens later (the student's ``.`` matched
    to the one ending an added sentence) is moved there, so it reads as the text it added."""
    a, b = list(student_ids), list(row_ids)
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    out = []
    for k, (op, i1, _, j1, j2) in enumerate(ops):
        if op == "insert" and k + 1 < len(ops) and ops[k + 1][0] == "equal":
            room = ops[k + 1][2] - ops[k + 1][1]  # the equal run after it: how far it can move
            while room and b[j1] == b[j2]:
                i1, j1, j2, room = i1 + 1, j1 + 1, j2 + 1, room - 1
        if op in ("insert", "replace"):
            out.append((i1, b[j1:j2]))
    return out


def _context_labels(cfg: Any, n_views: int) -> list[str]:
    """One name per teacher: ``teacher.score_views`` (several teachers), else the context's views."""
    if cfg is None:
        return ["teacher"] * n_views
    if cfg.teacher.score_views:
        return list(cfg.teacher.score_views)
    return ["+".join(cfg.teacher_views().views)]


def save_teacher_contexts(samples_path: str | Path, batch: Any, tokenizer: Any,
                          cfg: Any = None) -> Path | None:
    """Write what each kept sample's teacher read beyond the student's prompt next to the samples
    file (``step_N.jsonl`` -> ``step_N.teacher.json``): ``{"samples": {trajectory id: [{"view":
    name, "added": [{"at": student token position, "text": decoded text}]}]}}``, one entry per
    teacher (``teacher.score_views``), from the step's teacher rows (``batch.rows``). ``None``
    (nothing written) without a samples file or without teacher rows. The samples file itself is
    only read (for the ids it kept)."""
    samples_path = Path(samples_path)
    by_view = batch.rows_by_view or ([batch.rows] if batch.rows else [])
    if not samples_path.exists() or not by_view:
        return None
    labels = _context_labels(cfg, len(by_view))
    index = {t.id: i for i, t in enumerate(batch.trajs)}
    out: dict[str, list[dict[str, Any]]] = {}
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        tid = json.loads(line).get("id") if line.strip() else None
        if tid not in index:
            continue
        i = index[tid]
        student = batch.trajs[i].token_ids()
        contexts = []
        for label, rows in zip(labels, by_view, strict=True):
            added: list[dict[str, Any]] = []
            for row in rows[i]:
                for at, ids in teacher_additions(student, row.input_ids):
                    item = {"at": at, "text": tokenizer.decode(ids)}
                    if item not in added:  # step-wise rows repeat the earlier turns' hints
                        added.append(item)
            contexts.append({"view": label, "added": added})
        out[tid] = contexts
    path = samples_path.with_suffix(TEACHER_SUFFIX)
    path.write_text(json.dumps({"samples": out}, ensure_ascii=False), encoding="utf-8")
    return path


def read_teacher_contexts(samples_path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The teacher contexts :func:`save_teacher_contexts` wrote next to ``samples_path``, by
    trajectory id (empty when there is no such file)."""
    path = Path(samples_path).with_suffix(TEACHER_SUFFIX)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("samples", {})


def _where(at: int, mask: Sequence[int]) -> str:
    """Where an addition at student position ``at`` sits, counted in the sample's actions (runs
    of action tokens in ``mask``)."""
    ends = [j + 1 for j in range(len(mask)) if mask[j] and (j + 1 == len(mask) or not mask[j + 1])]
    before = sum(1 for e in ends if e <= at)
    return "after the last action" if ends and before == len(ends) else f"before action {before + 1}"


def _teacher_context_html(sample: dict[str, Any], contexts: list[dict[str, Any]]) -> str:
    """A collapsed block with each teacher's additions, escaped, in sequence order."""
    parts = []
    for c in contexts:
        added = c.get("added", [])
        chars = sum(len(a["text"]) for a in added)
        body = "".join(f"<div class='at'>{_where(a['at'], sample.get('mask', []))}</div>"
                       f"<div class='traj hint'>{html.escape(a['text'])}</div>" for a in added)
        parts.append(f"<details class='teacher'><summary>teacher context "
                     f"<code>{html.escape(str(c.get('view', 'teacher')))}</code>: {len(added)} "
                     f"addition{'s' if len(added) != 1 else ''}, {chars} characters, over the "
                     f"student's prompt</summary>{body or '<p>(nothing added)</p>'}</details>")
    return "".join(parts)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:1.2em auto;color:#222}
h1{font-size:1.3em;margin:.2em 0}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.traj{font-family:monospace;font-size:13px;line-height:1.45;border:1px solid #ddd;padding:8px;
margin:8px 0;white-space:pre-wrap;overflow-wrap:anywhere;tab-size:4}.env{color:#999}.act{color:#000}
.headline{font-size:1.05em;margin:.3em 0}details{margin:6px 0}summary{cursor:pointer}
img{max-width:100%}details.teacher{margin-left:1.2em}.at{color:#666;font-size:.9em;margin-top:4px}
.hint{background:#f6f3e8;margin:2px 0}"""


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, int | float) else "–"


def _spread(p: Any, n: int) -> str:
    """`` ± s.e.`` of a success rate over ``n`` tasks (binomial: one run has no seed spread)."""
    if not isinstance(p, int | float) or n < 1:
        return ""
    return f" &plusmn; {(p * (1 - p) / n) ** 0.5:.1%}"


def _headline(rows: list[dict[str, Any]], n_tasks: int = 0) -> str:
    """First and last held-out numbers in words, next to the curve, with the task count (one
    task's worth of points) and each rate's binomial standard error."""
    evals = [r for r in rows if isinstance(r.get("eval/success"), int | float)]
    if not evals:
        return "<p class='headline'>No held-out evaluation was logged.</p>"
    first, last = evals[0], evals[-1]
    n = int(n_tasks or 0)
    count = (f" on {n} held-out tasks (one task = {1 / n:.1%}; &plusmn; = binomial standard "
             "error, one run)") if n else ""
    text = (f"Held-out success (greedy){count} <b>{_pct(first['eval/success'])}</b>"
            f"{_spread(first['eval/success'], n)} at step "
            f"{first.get('step', 0)} &rarr; <b>{_pct(last['eval/success'])}</b>"
            f"{_spread(last['eval/success'], n)} at step "
            f"{last.get('step', 0)}; parse rate {_pct(first.get('eval/parse_rate'))} &rarr; "
            f"{_pct(last.get('eval/parse_rate'))}")
    if isinstance(last.get("eval/success_t1"), int | float):
        text += f"; at T=1 {_pct(last['eval/success_t1'])}"
    teacher = [r for r in rows if isinstance(r.get("teacher/eval_success"), int | float)]
    if teacher:
        text += f"; teacher context acting {_pct(teacher[-1]['teacher/eval_success'])}"
    return f"<p class='headline'>{text}.</p>"


def _eval_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [k for k in ("eval/success", "eval/success_t1", "eval/parse_rate", "eval/parse_rate_t1",
                        "eval/reward", "teacher/eval_success", "teacher/eval_parse_rate")
            if any(r.get(k) is not None for r in rows)]
    evals = [r for r in rows if any(r.get(k) is not None for k in cols)]
    if not evals:
        return []
    out = ["<h2>Held-out evaluation</h2><table><tr><th>step</th>"
           + "".join(f"<th>{html.escape(k)}</th>" for k in cols) + "</tr>"]
    for r in evals:
        cells = "".join(f"<td>{r[k]:.3f}</td>" if isinstance(r.get(k), int | float) else "<td></td>"
                        for k in cols)
        out.append(f"<tr><td>{r.get('step', 0)}</td>{cells}</tr>")
    out.append("</table>")
    return out


def _advantage_table(rows: list[dict[str, Any]]) -> list[str]:
    """Step 0: each teacher view's held-out success next to the student's, and the difference."""
    first = next((r for r in rows if any(k.startswith("teacher/advantage/") for k in r)), None)
    if first is None:
        return []
    views = [k.rsplit("/", 1)[1] for k in first if k.startswith("teacher/advantage/")]
    out = ["<h2>The teacher's advantage at step 0</h2><p>Held-out success, greedy: each teacher "
           f"view acting next to the student ({_pct(first.get('eval/success'))}).</p><table>"
           "<tr><th>view</th><th>teacher success</th><th>parse rate</th><th>advantage</th></tr>"]
    for v in views:
        adv = first[f"teacher/advantage/{v}"]
        out.append(f"<tr><td>{html.escape(v)}</td><td>{_pct(first.get(f'teacher/eval_success/{v}'))}"
                   f"</td><td>{_pct(first.get(f'teacher/eval_parse_rate/{v}'))}</td>"
                   f"<td>{100 * adv:+.1f} pts</td></tr>")
    out.append("</table>")
    return out


def skill_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """One entry per skill a dynamic-skills run's library held: ``name``, the ``step`` and
    ``version`` it appeared in (0: the library the run started with), and over every logged
    step the ``shown`` episodes whose teacher rows saw it, how many were ``solved``, and the
    success ``rate`` (``None`` when never shown). Empty for a run without ``skills_versions``."""
    from agentsd.distill.skill_refresh import SkillVersions

    run_dir = Path(run_dir)
    index = SkillVersions(run_dir).index()
    if not index:
        return []
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    first: dict[str, tuple[int, int]] = {}
    for e in index:
        for name in e.get("added", []):
            first.setdefault(name, (e["step"], e["version"]))
    out = []
    for name, (step, version) in first.items():
        shown = sum(r.get(f"skills/shown/{name}") or 0 for r in rows)
        solved = sum(r.get(f"skills/solved/{name}") or 0 for r in rows)
        out.append({"name": name, "step": step, "version": version, "shown": int(shown),
                    "solved": int(solved), "rate": solved / shown if shown else None})
    return out


def _skills_table(run_dir: Path) -> list[str]:
    hist = skill_history(run_dir)
    if not hist:
        return []
    out = ["<h2>Skills</h2><p>When each skill entered the run's library (step 0: the library the "
           "run started with) and how the training episodes whose teacher saw it did.</p><table>"
           "<tr><th>skill</th><th>appeared</th><th>episodes shown</th><th>solved</th>"
           "<th>success rate</th></tr>"]
    for h in hist:
        when = "start" if h["version"] == 0 else f"step {h['step']} (v{h['version']:03d})"
        rate = f"{_pct(h['rate'])} ({h['solved']}/{h['shown']})" if h["shown"] else "not shown"
        out.append(f"<tr><td>{html.escape(h['name'])}</td><td>{when}</td><td>{h['shown']}</td>"
                   f"<td>{h['solved']}</td><td>{rate}</td></tr>")
    out.append("</table>")
    return out


def render_html(run_dir: str | Path) -> str:
    """The report page of a run folder as a string. The first screen is the held-out learning
    curve (``learning_curve.png``) and a one-line summary; training curves, the evaluation table,
    the token-level trajectories and the config follow."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    parts = [f"<!doctype html><meta charset='utf-8'><title>agentsd run {html.escape(run_dir.name)}"
             f"</title><style>{_CSS}</style>",
             f"<h1>Run <code>{html.escape(str(run_dir))}</code></h1>",
             f"<p>algo <b>{html.escape(str(cfg.get('algo', '?')))}</b>, env "
             f"<b>{html.escape(str(cfg.get('rollout', {}).get('env', '?')))}</b>, model "
             f"<b>{html.escape(str(cfg.get('model', {}).get('name', '?')))}</b>, teacher "
             f"<b>{html.escape(str(cfg.get('teacher', {}).get('mode', '?')))}</b>, "
             f"{len({r['step'] for r in rows if r.get('step', 0) > 0})} steps logged.</p>",
             _headline(rows, (cfg.get('rollout') or {}).get('eval_tasks', 0))]
    if (run_dir / "learning_curve.png").exists():
        parts.append("<img src='learning_curve.png' alt='held-out success and parse rate vs step'>")
    if (run_dir / "training_curves.png").exists():
        parts.append("<h2>Training</h2><img src='training_curves.png' "
                     "alt='train success, reverse KL and loss vs step'>")
    parts += _eval_table(rows)
    parts += _advantage_table(rows)
    parts += _skills_table(run_dir)
    parts.append("<h2>Trajectories</h2><p>Action tokens are coloured by log p<sub>teacher</sub> "
                 "&minus; log p<sub>student</sub>: <span style='background:rgba(40,160,60,.6)'>"
                 "teacher prefers</span>, <span style='background:rgba(220,50,50,.6)'>teacher "
                 "disprefers</span>; grey = prompt/env tokens; &crarr; marks a line break. Hover "
                 "for values.</p>")
    files = sorted((run_dir / "samples").glob("step_*.jsonl"), reverse=True)
    if files and cfg.get("algo") in ("opd", "opsd") and not any(
            f.with_suffix(TEACHER_SUFFIX).exists() for f in files):
        parts.append("<p>This run did not record its teacher's context next to the samples "
                     f"(<code>samples/step_N{TEACHER_SUFFIX}</code>).</p>")
    for f in files:
        samples = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        contexts = read_teacher_contexts(f)
        parts.append(f"<h3>{html.escape(f.stem)}</h3>")
        for s in samples:
            head = (f"seed {s.get('seed')} &middot; {'success' if s.get('success') else 'failure'}"
                    f" &middot; reward {s.get('reward', 0):.2f}")
            if s.get("skills"):
                head += " &middot; skills: " + html.escape(", ".join(s["skills"]))
            hint = _teacher_context_html(s, contexts[s["id"]]) if s.get("id") in contexts else ""
            parts.append(f"<details><summary>{head}</summary>{hint}<div class='traj'>"
                         f"{token_spans(s)}</div></details>")
    parts.append("<h2>Config</h2><pre>" + html.escape(json.dumps(cfg, indent=1)) + "</pre>")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write ``learning_curve.png`` (held-out), ``training_curves.png`` and ``report.html`` into
    ``run_dir``; return their paths (``png``, ``training_png``, ``html``)."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    png = plot_learning_curve(rows, run_dir / "learning_curve.png", title=run_dir.name)
    training = plot_training_curves(rows, run_dir / "training_curves.png")
    page = run_dir / "report.html"
    page.write_text(render_html(run_dir), encoding="utf-8")
    return {"png": png, "training_png": training, "html": page}
