"""The report shows, beside each coloured sample, the context its teacher scored it with: what the
teacher's row adds over the student's tokens (agentsd.distill.report.save_teacher_contexts writes
it next to the samples file, whose bytes stay as they are)."""

from __future__ import annotations

import dataclasses
import html
import json

import pytest

from agentsd.demos import oracle_demos
from agentsd.distill.batch import Batch
from agentsd.distill.report import (
    read_teacher_contexts,
    render_html,
    save_teacher_contexts,
    teacher_additions,
    write_report,
)
from agentsd.hints import TeacherContextConfig
from agentsd.teacher_context import REFERENCE_LEAD, SKILLS_TITLE, teacher_row

#: a skill with characters the page must escape
SKILL = "Push <b>toward</b> a target & never into a corner."


def _batch(tok, views=("skills", "reference")):
    demo = oracle_demos("ToolWorld-Easy-v0", [3], tok, max_turns=4)[0]
    assert len(demo.turns) >= 2  # a hint a turn
    row = teacher_row(demo, tok, TeacherContextConfig(views=views), [SKILL])
    n = len(demo.token_ids())
    return Batch(trajs=[demo], advantages=[0.0], distill_w=[1.0], grpo_w=[0.0], sft_w=[0.0],
                 rows=[[row]], skills=[["push-toward-targets"]]), n


def _run(tmp_path, tok, with_context=True):
    """A run folder as the trainer leaves it: config, metrics, one samples file (written by the
    trainer's own writer) and, with ``with_context``, its teacher contexts next to it."""
    from agentsd.distill.trainer import _save_samples

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"algo": "opd", "rollout": {"env": "ToolWorld-Easy-v0"}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "rollout/success": 1.0}) + "\n")
    batch, n = _batch(tok)
    samples = run / "samples" / "step_000001.jsonl"
    _save_samples(samples, batch, [{"student_logp": [-1.0] * n, "teacher_logp": [-0.5] * n}], tok, 1)
    before = samples.read_bytes()
    if with_context:
        assert save_teacher_contexts(samples, batch, tok).name == "step_000001.teacher.json"
    assert samples.read_bytes() == before  # the pinned samples file is only read
    return run, batch


def test_the_additions_are_what_the_teacher_row_inserts(tok):
    batch, _ = _batch(tok)
    demo, [row] = batch.trajs[0], batch.rows[0]
    added = teacher_additions(demo.token_ids(), row.input_ids)
    text = "".join(tok.decode(ids) for _, ids in added)
    assert SKILLS_TITLE in text and SKILL in text
    assert text.count(REFERENCE_LEAD) == len(demo.turns)  # one hint a turn
    assert teacher_additions(demo.token_ids(), demo.token_ids()) == []
    assert all(0 <= at <= len(demo.token_ids()) for at, _ in added)


def test_report_shows_the_hint_beside_its_sample_escaped(tmp_path, tok):
    run, batch = _run(tmp_path, tok)
    [ctx] = read_teacher_contexts(run / "samples" / "step_000001.jsonl")[batch.trajs[0].id]
    assert ctx["view"] == "teacher" and any(SKILL in a["text"] for a in ctx["added"])
    page = write_report(run)["html"].read_text()
    assert SKILL not in page and html.escape(SKILL) in page  # escaped, never raw HTML
    # next to its sample: inside the sample's <details>, after its summary, before its tokens
    sample_start = page.index("<details><summary>seed 3")
    hint = page.index(html.escape(SKILL))
    tokens = page.index("<div class='traj'>", sample_start)
    assert sample_start < page.index("<details class='teacher'>", sample_start) < hint < tokens
    assert page.index("</details>", hint) < tokens  # the hint block is collapsed on its own
    hints = page[sample_start:tokens]
    assert hints.count(html.escape(REFERENCE_LEAD.strip())) == len(batch.trajs[0].turns)
    assert "before action 1" in hints and f"before action {len(batch.trajs[0].turns)}" in hints


def test_a_run_without_recorded_contexts_says_so(tmp_path, tok):
    run, _ = _run(tmp_path, tok, with_context=False)
    page = render_html(run)
    assert "did not record its teacher's context" in page and "details class='teacher'" not in page


def test_nothing_is_written_without_teacher_rows(tmp_path, tok):
    batch, _ = _batch(tok)
    assert save_teacher_contexts(tmp_path / "missing.jsonl", batch, tok) is None
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": batch.trajs[0].id}) + "\n")
    assert save_teacher_contexts(tmp_path / "s.jsonl", dataclasses.replace(batch, rows=[]), tok) is None
    assert not (tmp_path / "s.teacher.json").exists()


@pytest.mark.usefixtures("one_thread")
def test_a_tiny_run_records_each_teachers_context(tmp_path):
    """A real (one-step, tiny-random) run: the trainer writes each kept sample's teacher context
    beside its samples file; several teachers (``teacher.score_views``) each get their own block."""
    import agentsd.distill.trainer as T
    from agentsd.distill.config import ModelConfig, RolloutSettings, TeacherConfig, TrainConfig

    cfg = TrainConfig(steps=1, seed=3, out_dir=str(tmp_path / "run"), eval_every=0, eval_at_start=False,
                      checkpoint_every=1, progress=False, tensorboard=False, teacher_eval=False,
                      samples_to_keep=2,
                      model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                      rollout=RolloutSettings(tasks_per_step=1, samples_per_task=2, max_turns=2,
                                              max_tokens=6, eval_tasks=1),
                      teacher=TeacherConfig(context=TeacherContextConfig(
                          views=("reference", "plan"), exposure_mode="step"),
                          score_views=("reference", "plan"), combine="agreement"))
    T.train(cfg)
    run = tmp_path / "run"
    contexts = read_teacher_contexts(run / "samples" / "step_000001.jsonl")
    assert len(contexts) == 2
    for per_view in contexts.values():
        assert [c["view"] for c in per_view] == ["reference", "plan"]
        assert all(c["added"] for c in per_view)
    page = render_html(run)
    assert page.count("<details class='teacher'>") == 4
    assert "teacher context <code>plan</code>" in page
