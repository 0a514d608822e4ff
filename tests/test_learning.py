"""Issue "make learning real": the step-wise teacher context, demonstrations, the warm start,
held-out evaluation that is held out, and the errors for bad input."""

from __future__ import annotations

import dataclasses
import difflib
import json

import pytest

import agentsd
from agentsd.demos import NoOracleError, load_demos, oracle_demos
from agentsd.distill.config import (
    DemoConfig,
    ModelConfig,
    OptimConfig,
    RolloutSettings,
    TrainConfig,
)
from agentsd.distill.teacher import teacher_row
from agentsd.distill.update import OBJECTIVES, terms_for
from agentsd.hints import (
    REFERENCE_LEAD,
    TeacherContextConfig,
    TeacherViewEnv,
    action_text,
    hint_text,
    skills_section,
    turn_views,
)

CTX = TeacherContextConfig(views=("skills", "reference"))


def _insertions(student: list[int], teacher: list[int]) -> list[tuple[int, int]]:
    """Spans of ``teacher`` inserted into ``student``; fails if anything else differs."""
    sm = difflib.SequenceMatcher(a=student, b=teacher, autojunk=False)
    ops = [op for op in sm.get_opcodes() if op[0] != "equal"]
    assert all(op[0] == "insert" for op in ops), ops
    return [(op[3], op[4]) for op in ops]


@pytest.mark.parametrize("env_id", ["Sokoban-Easy-v0", "ToolWorld-Easy-v0"])
def test_teacher_row_equals_student_plus_additions_on_real_template(tok, env_id):

    demo = oracle_demos(env_id, [5], tok, max_turns=4)[0]
    skills = ["Push boxes toward targets; never into corners."]
    row = teacher_row(demo, tok, CTX, skills)
    student = demo.token_ids()
    spans = _insertions(student, row.input_ids)
    added = "".join(tok.decode(row.input_ids[a:b]) for a, b in spans)
    # the additions are the skills section and one reference reply per turn, nothing else
    assert "Push boxes toward targets" in added
    assert added.count(REFERENCE_LEAD) == len(demo.turns)
    full, plain = tok.decode(row.input_ids), tok.decode(student)
    for t in demo.turns:  # (diff may place an insertion a token earlier or later: same tokens)
        assert REFERENCE_LEAD + t.privileged["reference"] in full
        assert t.privileged["reference"] not in plain.replace(t.action_text, "")
    # every scored position holds the student's own action token
    assert [row.input_ids[i] for i in row.row_pos] == [student[j] for j in row.student_pos]
    assert len(row.row_pos) == demo.num_action_tokens()


def test_teacher_row_hint_sits_at_the_end_of_the_latest_observation(tok):

    demo = oracle_demos("ToolWorld-Easy-v0", [3], tok, max_turns=4)[0]
    assert len(demo.turns) >= 2
    row = teacher_row(demo, tok, TeacherContextConfig(views=("reference",)))
    text = tok.decode(row.input_ids)
    for t in demo.turns:
        # the reference reply is followed only by the chat template's turn switch, then the action
        hint_end = text.index(t.privileged["reference"]) + len(t.privileged["reference"])
        between = text[hint_end: text.index(t.action_text, hint_end)]
        assert len(between) < 40 and "<|im_start|>assistant" in between


def test_teacher_row_needs_recorded_views(tok):
    demo = oracle_demos("Sokoban-Easy-v0", [1], tok)[0]
    for t in demo.turns:
        t.privileged = {}
    with pytest.raises(ValueError, match="record_privileged"):
        teacher_row(demo, tok, CTX)


def test_action_text_writes_tool_calls_in_the_envs_own_format():
    env = agentsd.make("ToolWorld-Easy-v0")
    env.reset(seed=3)
    text = action_text(env.oracle_action())
    assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
    _, _, _, _, info = env.step(text)
    assert info["parse"] == "ok"


def test_turn_views_follow_the_state_reached():
    env = agentsd.make("Sokoban-Easy-v0")
    env.reset(seed=1_000_003)
    v0 = turn_views(env)
    assert v0["reference"].startswith("<answer>") and v0["next_step"]
    env.step("<answer>Up</answer>")
    v1 = turn_views(env)
    if env.level != env.start:  # the move changed the state: the reference follows it
        assert v1["reference"] == f"<answer>{v1['next_step']}</answer>"


def test_skills_are_bounded_and_show_no_other_episodes_answers():
    body = "Rule one.\nExample: <answer>Up Up</answer>\n```\n#####\n# @ #\n```\n" + "More. " * 400
    cfg = TeacherContextConfig(max_skill_chars=300)
    text = skills_section([body], cfg)
    assert "<answer>" not in text and "# @ #" not in text and "Rule one." in text
    assert len(text) < 300 + 120


def test_hint_text_puts_the_reference_last():
    h = hint_text({"reference": "<answer>Up</answer>", "notes": "n", "next_step": "Up"},
                  TeacherContextConfig(views=("reference", "notes", "next_step")))
    assert h.splitlines()[-1] == REFERENCE_LEAD + "<answer>Up</answer>"
    assert hint_text({"notes": "n"}, TeacherContextConfig(views=("reference",))) == ""


def test_rollouts_record_the_views_of_each_turn(tok):
    from agentsd.policy.base import Generation
    from agentsd.rollout import RolloutConfig, run_rollouts

    class Wrong:  # always moves Up: the state (and hence the reference) changes turn by turn
        tokenizer = tok
        model_id = "wrong"

        def generate(self, prompts, params):
            ids = tok.encode("<answer>Up</answer>", add_special_tokens=False)
            return [Generation(token_ids=ids, logprobs=[0.0] * len(ids),
                               text="<answer>Up</answer>", finish_reason="stop") for _ in prompts]

    res = run_rollouts(Wrong(), "Sokoban-Easy-v0", seeds=[1_000_001], samples_per_task=1,
                       config=RolloutConfig(max_turns=3, record_privileged=True))
    traj = res.trajectories[0]
    env = agentsd.make("Sokoban-Easy-v0")
    env.reset(seed=1_000_001)
    for t in traj.turns:  # what was recorded is what the env said from the state reached
        assert t.privileged == turn_views(env)
        env.step(t.action_text)
    off = run_rollouts(Wrong(), "Sokoban-Easy-v0", seeds=[1_000_001], samples_per_task=1,
                       config=RolloutConfig(max_turns=1))
    assert off.trajectories[0].turns[0].privileged == {}


def test_teacher_view_env_acts_with_the_same_hint():
    env = TeacherViewEnv(agentsd.make("Sokoban-Easy-v0"), TeacherContextConfig(views=("reference",)))
    obs, _ = env.reset(seed=1_000_002)
    ref = obs[-1]["content"].rsplit(REFERENCE_LEAD, 1)[1]
    _, _, term, _, info = env.step(ref)
    assert term and info["success"]


# ---------------------------------------------------------------------------------------------
# demonstrations and the warm start

def test_oracle_demos_are_gold_and_end_their_turns(tok):

    for env_id in ("Sokoban-Easy-v0", "ToolWorld-Easy-v0", "Code-Gen-v0"):
        d = oracle_demos(env_id, [2], tok, max_turns=6)[0]
        assert d.success, env_id
        for t in d.turns:
            assert t.action_ids[-1] == tok.eos_token_id
            assert tok.decode(t.action_ids[:-1]) == t.action_text
        assert sum(d.action_mask()) == d.num_action_tokens() > 0


def test_demos_in_teacher_context_carry_the_hint(tok):
    d = oracle_demos("Sokoban-Easy-v0", [2], tok, teacher=CTX)[0]
    assert REFERENCE_LEAD in d.turns[0].observation[-1]["content"]
    assert d.success


def test_sft_on_an_env_without_oracle_fails_before_loading(monkeypatch):
    agentsd.register("test/NoOracle-v0", "agentsd.env:TextEnv", max_turns=2,
                     splits={"train": agentsd.Split((0, 10)), "test": agentsd.Split((10, 20))},
                     on_duplicate="ignore")

    class NoOracle:
        def reset(self, seed=None):
            return [{"role": "user", "content": "x"}], {}

        def oracle_action(self):
            return None

        def close(self):
            pass

    monkeypatch.setattr(agentsd, "make", lambda *a, **k: NoOracle())
    with pytest.raises(ValueError, match="has no oracle; pass --demos.source"):
        TrainConfig(algo="sft", rollout=RolloutSettings(env="test/NoOracle-v0"))
    with pytest.raises(NoOracleError):
        oracle_demos("test/NoOracle-v0", [0], _FakeTok())


class _FakeTok:
    eos_token_id = 0


def test_demo_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        DemoConfig(source=str(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no successful trajectory"):
        DemoConfig(source=str(empty))
    with pytest.raises(ValueError, match="no successful trajectory"):
        load_demos(str(empty))


def test_init_from_errors_before_loading(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ModelConfig(init_from=str(tmp_path / "missing"))
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        ModelConfig(init_from=str(tmp_path / "run"))


def test_objective_table_per_algorithm():
    assert [t.name for t in terms_for(TrainConfig(algo="opd"))] == ["distill"]
    assert [t.name for t in terms_for(TrainConfig(algo="sft"))] == ["sft"]
    assert [t.name for t in terms_for(TrainConfig(algo="rft"))] == ["sft"]
    assert [t.name for t in terms_for(TrainConfig(algo="grpo", rollout=RolloutSettings(
        samples_per_task=2)))] == ["grpo"]
    assert OBJECTIVES["distill"].needs_teacher and not OBJECTIVES["grpo"].needs_teacher


def _tiny(algo: str, out, **kw) -> TrainConfig:
    return TrainConfig(algo=algo, steps=kw.pop("steps", 2), out_dir=str(out), eval_every=0,
                       progress=False, tensorboard=False, eval_at_start=kw.pop("eval_at_start", False),
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4,
                                         init_from=kw.pop("init_from", "")),
                       rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=1,
                                               max_tokens=4, eval_tasks=2, eval_sampled=False),
                       optim=OptimConfig(lr=kw.pop("lr", 1e-2)), **kw)


def test_sft_lowers_demo_nll_and_init_from_merges_it(tmp_path):
    import torch

    from agentsd.distill.trainer import build_student, train

    res = train(_tiny("sft", tmp_path / "sft", steps=4))
    losses = [h["loss/sft"] for h in res.history if "loss/sft" in h]
    assert losses[-1] < losses[0]
    # a run started from it computes what the SFT run's student computes (adapter merged, the
    # new adapter starts at zero), and its frozen teacher is that warm model
    warm_cfg = _tiny("opd", tmp_path / "opd", init_from=str(tmp_path / "sft"))
    warm, _ = build_student(warm_cfg)
    sft_model, _ = build_student(_tiny("sft", tmp_path / "x"))
    from agentsd.distill.checkpoint import latest_checkpoint, load_checkpoint

    opt = torch.optim.AdamW([p for p in sft_model.parameters() if p.requires_grad])
    load_checkpoint(latest_checkpoint(tmp_path / "sft"), sft_model, opt)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        a = warm(ids).logits
        b = sft_model(ids).logits
        with warm.disable_adapter():
            c = warm(ids).logits
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(c, b, atol=1e-5)
    assert (tmp_path / "sft" / "checkpoints" / "step_000004" / "adapter" / "adapter_config.json").exists()


def test_init_from_another_model_is_refused(tmp_path):
    from agentsd.distill.checkpoint import merge_init_from

    run = tmp_path / "r"
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    (run / "checkpoints" / "step_000001" / "state.pt").write_bytes(b"")
    (run / "checkpoints" / "step_000001" / "trainable.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"model": {"name": "other-model"}}))
    with pytest.raises(ValueError, match="trained on model 'other-model'"):
        merge_init_from(None, run, "smollm2")


def test_teacher_worse_than_student_is_reported(tmp_path):
    from agentsd.distill.trainer import _check_teacher

    with pytest.warns(UserWarning, match="teacher context acts worse than the student"):
        _check_teacher({"eval/success": 0.2, "eval/parse_rate": 1.0,
                        "teacher/eval_success": 0.0, "teacher/eval_parse_rate": 0.3})


def test_opd_step_zero_reports_teacher_acting(tmp_path):
    from agentsd.distill.trainer import train

    res = train(_tiny("opd", tmp_path / "o", steps=1, eval_at_start=True))
    first = res.history[0]
    assert {"eval/success", "eval/parse_rate", "teacher/eval_success",
            "teacher/eval_parse_rate"} <= set(first)


# ---------------------------------------------------------------------------------------------
# held out means held out

def test_toolworld_evaluation_uses_test_templates(tmp_path):
    from agentsd.distill.trainer import _rollouts, eval_tasks
    from agentsd.envs.toolworld.tasks import TEMPLATES
    from agentsd.policy.base import Generation

    cfg = dataclasses.replace(_tiny("grpo", tmp_path / "g"), rollout=RolloutSettings(
        env="ToolWorld-Easy-v0", eval_tasks=16, max_turns=1, max_tokens=4, samples_per_task=2))
    tasks = eval_tasks(cfg)
    assert all(t.kwargs.get("task_split") == "test" for t in tasks)

    class Idle:
        tokenizer = None
        model_id = "idle"

        def generate(self, prompts, params):
            return [Generation(token_ids=[1], logprobs=[0.0], text="hm", finish_reason="stop")
                    for _ in prompts]

    from agentsd.policy.models import load_tokenizer

    Idle.tokenizer = load_tokenizer("smollm2")
    trajs, _ = _rollouts(Idle(), cfg, None, 1, 0.0, 0, False, tasks=tasks)
    templates = {t.task_id.rsplit("-", 2)[0] for t in trajs}
    assert templates and all(TEMPLATES[n].split == "test" for n in templates), templates


def test_linear_lr_schedule_reaches_zero_after_the_last_step(tmp_path):
    from agentsd.distill.trainer import lr_at

    cfg = _tiny("sft", tmp_path / "s", steps=4)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=1.0, lr_schedule="linear"))
    assert [lr_at(cfg, s) for s in (1, 2, 3, 4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_at(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_schedule="constant")), 4) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        OptimConfig(lr_schedule="cosine")
