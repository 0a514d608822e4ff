"""The run report (:mod:`agentsd.distill.report`) and the series helpers it draws from."""

from __future__ import annotations

import json
import math

import pytest

from agentsd.distill.metrics import mean_curve, mean_std, metric_series
from agentsd.distill.report import plot_comparison, plot_learning_curve, render_html, token_spans, write_report

BOARD = "#######\n#  @  #\n# $ . #\n#######\n"


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def _rows() -> list[dict]:
    return [
        {"step": 0, "eval/success": 0.0, "eval/parse_rate": 0.5, "eval/success_t1": 0.0,
         "eval/parse_rate_t1": 0.4, "teacher/eval_success": 0.25, "teacher/eval_parse_rate": 0.9,
         "eval/success_std": 0.0},
        {"step": 1, "rollout/success": 0.1, "kl/mean": 0.5, "loss/total": 1.0},
        {"step": 2, "rollout/success": 0.2, "kl/mean": 0.4, "loss/total": 0.8,
         "eval/success": 0.25, "eval/parse_rate": 0.75, "eval/success_std": 0.1},
    ]


def _run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    (run / "config.json").write_text(json.dumps({"algo": "opd", "rollout": {"env": "Sokoban-Easy-v0"}}))
    sample = {"seed": 7, "success": False, "reward": -0.5, "tokens": [BOARD, "<answer>", " Right", "</answer>"],
              "mask": [0, 1, 1, 1], "student_logp": [0.0, -1.0, -2.0, -0.5],
              "teacher_logp": [0.0, -0.5, -3.0, -0.5]}
    (run / "samples" / "step_000002.jsonl").write_text(json.dumps(sample) + "\n")
    return run


def test_boards_keep_their_spaces_and_lines():
    spans = token_spans({"tokens": [BOARD, "<answer>Right</answer>"], "mask": [0, 1]})
    assert "#  @  #↵\n# $ . #" in spans  # spaces and line breaks survive escaping
    assert "<br>" not in spans


def test_page_keeps_whitespace_and_shows_the_curve_first(tmp_path):
    out = write_report(_run_dir(tmp_path))
    page = out["html"].read_text()
    assert "white-space:pre-wrap" in page and "white-space:normal" not in page
    curve, traj = page.index("src='learning_curve.png'"), page.index("<h2>Trajectories")
    assert curve < page.index("src='training_curves.png'") < traj
    assert page.index("Held-out success (greedy) <b>0.0%</b>") < curve
    assert "teacher context acting 25.0%" in page and "&rarr; <b>25.0%</b> at step 2" in page
    assert "#  @  #" in page  # the board's spaces reach the page
    assert _is_png(out["png"]) and _is_png(out["training_png"])


def test_page_without_evaluation_says_so(tmp_path):
    run = _run_dir(tmp_path)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss/total": 1.0}) + "\n")
    out = write_report(run)
    assert "No held-out evaluation was logged" in out["html"].read_text()
    assert _is_png(out["png"])


def test_learning_curve_draws_every_heldout_key_present(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    orig = matplotlib.axes.Axes.plot

    def spy(self, *a, **k):
        labels.append(k.get("label"))
        return orig(self, *a, **k)

    bands = []
    orig_fill = matplotlib.axes.Axes.fill_between
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between",
                        lambda self, *a, **k: bands.append(a) or orig_fill(self, *a, **k))
    assert _is_png(plot_learning_curve(_rows(), tmp_path / "c.png"))
    assert labels.count("student, greedy") == 2 and labels.count("student, T=1") == 2
    assert labels.count("teacher context acting") == 2
    assert len(bands) == 1  # only eval/success carries a spread


def test_metric_series_spread_from_std_key_or_seeds():
    s = metric_series(_rows(), "eval/success")
    assert s.steps == [0, 2] and s.mean == [0.0, 0.25] and s.std == [0.0, 0.1] and s.has_spread
    seeds = [{"step": 5, "eval/success": v} for v in (0.0, 0.5, 1.0)] + [{"step": 5, "eval/success": None}]
    s = metric_series(seeds, "eval/success")
    assert s.steps == [5] and s.mean == [0.5] and s.n == [3] and math.isclose(s.std[0], 0.5)
    assert len(metric_series(_rows(), "not/logged")) == 0


def test_mean_curve_aligns_seeds_by_step():
    s = mean_curve([[(0, 0.0), (10, 0.5)], [(0, 0.2), (10, 0.7), (20, 0.9)]])
    assert s.steps == [0, 10, 20] and s.n == [2, 2, 1]
    assert [round(m, 6) for m in s.mean] == [0.1, 0.6, 0.9]
    assert math.isclose(s.std[0], mean_std([0.0, 0.2])[1]) and s.std[2] == 0.0
    with pytest.raises(ValueError):
        mean_std([])


@pytest.mark.parametrize("curves", [
    {"grpo": [[(0, 0.1), (5, 0.2), (10, 0.3)]]},  # one seed: a line, no band
    {"grpo": [[(0, 0.1), (10, 0.3)], [(0, 0.0), (10, 0.5)], [(0, 0.1), (10, 0.2)]],
     "opd": [[(0, 0.1), (5, 0.4)], [(0, 0.1), (5, 0.6), (10, 0.7)]], "rft": []},
    {},
])
def test_plot_comparison_writes_a_png(tmp_path, curves):
    path = plot_comparison(curves, tmp_path / "cmp.png", title="Sokoban", ylabel="held-out success")
    assert path == tmp_path / "cmp.png" and _is_png(path)


def test_render_html_escapes_tokens(tmp_path):
    run = _run_dir(tmp_path)
    sample = {"seed": 1, "tokens": ["<script>x</script>"], "mask": [1]}
    (run / "samples" / "step_000003.jsonl").write_text(json.dumps(sample) + "\n")
    page = render_html(run)
    assert "<script>x" not in page and "&lt;script&gt;" in page


def test_headline_names_the_task_count_and_a_spread():
    from agentsd.distill.report import _headline

    rows = [{"step": 0, "eval/success": 0.25, "eval/parse_rate": 0.5},
            {"step": 3, "eval/success": 0.5, "eval/parse_rate": 1.0}]
    text = _headline(rows, 4)
    assert "on 4 held-out tasks (one task = 25.0%" in text
    assert "25.0%</b> &plusmn; 21.7%" in text and "50.0%</b> &plusmn; 25.0%" in text
    assert "tasks" not in _headline(rows)  # no count known: none claimed
