"""replay_demos: episodes sampled in another context re-rendered in the student's, same actions."""

from agentsd.demos import oracle_demos, replay_demos
from agentsd.hints import TeacherContextConfig
from agentsd.policy.models import load_tokenizer


def test_replay_puts_teacher_context_episodes_in_the_plain_prompt():
    tok = load_tokenizer("smollm2")
    ctx = TeacherContextConfig(views=("notes",))
    teacher = oracle_demos("Sokoban-Easy-v0", [3, 4], tok, teacher=ctx)
    plain = oracle_demos("Sokoban-Easy-v0", [3, 4], tok)
    for t in teacher:  # the teacher's prompt carries its notes; the replay must drop them
        t.env_id, t.spec_kwargs = "", {}
    out = replay_demos(teacher, tok, env_id="Sokoban-Easy-v0", kwargs={})
    assert [t.seed for t in out] == [3, 4] and all(t.policy == "replay" for t in out)
    for r, p, t in zip(out, plain, teacher):
        assert r.token_ids() == p.token_ids()  # exactly the plain demo: prompt and action tokens
        assert len(t.token_ids()) > len(r.token_ids())
        assert [x.action_ids for x in r.turns] == [x.action_ids for x in t.turns]
        assert r.action_mask() == p.action_mask()


def test_replay_drops_failures_and_names_a_missing_env():
    tok = load_tokenizer("smollm2")
    demos = oracle_demos("Sokoban-Easy-v0", [5], tok)
    demos[0].success = False
    assert replay_demos(demos, tok) == []
    demos[0].success, demos[0].env_id = True, ""
    try:
        replay_demos(demos, tok)
    except ValueError as e:
        assert "env_id" in str(e)
    else:
        raise AssertionError("no error for a trajectory without env_id")
