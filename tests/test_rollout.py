"""The rollout engine: token-in/token-out on a real chat template, limits and stop reasons,
batching, envs off the generation thread, determinism."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from agentsd.env import TextEnv
from agentsd.policy import HFPolicy, SamplingParams
from agentsd.policy.base import Generation
from agentsd.policy.models import random_model
from agentsd.rollout import ChatRenderer, RolloutConfig, Task, rollout, run_rollouts
from agentsd.types import StopReason


class Scripted:
    """A policy that answers from a script and records every prompt it was fed."""

    model_id = "scripted"

    def __init__(self, tokenizer, actions=("<answer>Left</answer>",), eos=True):
        self.tokenizer, self.actions, self.eos = tokenizer, list(actions), eos
        self.prompts: list[list[int]] = []
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def generate(self, prompts, params):
        self.prompts.extend(list(p) for p in prompts)
        self.calls.append(len(prompts))
        out = []
        for _p in prompts:
            text = self.actions[len(self.prompts) % len(self.actions)]
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: params.max_tokens]
            if self.eos and len(ids) < params.max_tokens:
                ids.append(self.tokenizer.eos_token_id)
            out.append(Generation(ids, [-0.25] * len(ids), self.tokenizer.decode(
                ids, skip_special_tokens=True), "stop" if self.eos else "length"))
        return out


class Counter3(TextEnv):
    """Say a number; the episode ends when the model answers 3. Knobs for engine tests."""

    def __init__(self, fail_on_step=False, gate=None, as_tool=False):
        super().__init__()
        self.fail_on_step, self.gate, self.as_tool = fail_on_step, gate, as_tool

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return [self.system("Count."), self.user(f"Task {seed}: answer 3.")], {"task_id": f"c{seed}"}

    def step(self, action):
        if self.gate is not None:
            assert self.gate.wait(60), "the fast episodes never finished: generation was stalled"
        if self.fail_on_step:
            raise RuntimeError("env exploded")
        p = self.parse(action)
        if not p.ok:
            return [self.user(p.error)], -0.1, False, False, self.info(p, format=-0.1)
        win = p.answer == "3"
        msg = self.tool_result("ok", "call_1") if self.as_tool else self.user(f"got {p.answer}")
        return [msg], float(win), win, False, self.info(p, success=win if win else None, solved=float(win))


def _expected_prompts(trajs):
    """Every prompt the engine must have fed: each turn's full prefix."""
    out = []
    for t in trajs:
        prefix: list[int] = []
        for turn in t.turns:
            prefix = prefix + turn.prompt_ids
            out.append(tuple(prefix))
            prefix = prefix + turn.action_ids
    return Counter(out)


def test_stored_sequence_is_exactly_what_the_model_saw_on_a_real_chat_template(tok):
    pol = Scripted(tok, ["<answer>Up</answer>", "<answer>Left Down</answer>"])
    trajs = rollout(pol, "Sokoban-Easy-v0", seeds=[0, 1], samples_per_task=2,
                    params=SamplingParams(max_tokens=32), max_turns=3)
    assert len(trajs) == 4 and all(len(t.turns) == 3 for t in trajs)
    assert Counter(tuple(p) for p in pol.prompts) == _expected_prompts(trajs)
    for t in trajs:
        # the concatenated ids decode to the chat template's rendering of the conversation
        conv = []
        for turn in t.turns:
            conv += turn.observation + [{"role": "assistant", "content": turn.action_text}]
        rendered = tok.apply_chat_template(conv, tokenize=False)
        assert tok.decode(t.token_ids(), skip_special_tokens=False) + "\n" == rendered
        assert t.action_mask() == [m for turn in t.turns for m in
                                   [0] * len(turn.prompt_ids) + [1] * len(turn.action_ids)]
        assert t.turns[0].action_ids[-1] == tok.eos_token_id
        assert t.turns[1].prompt_ids[0] != tok.eos_token_id  # the EOS is not fed twice


def test_hf_rollout_logprobs_match_rescoring_the_stored_sequence(tok):
    import torch

    model = random_model(tok, seed=0)
    pol = HFPolicy(model, tok, model_id="tiny")
    trajs = rollout(pol, "Sokoban-Easy-v0", seeds=[0], samples_per_task=2,
                    params=SamplingParams(max_tokens=6, seed=0), max_turns=2)
    for t in trajs:
        assert t.policy == "tiny" and t.stop_reason == StopReason.MAX_TURNS.value
        ids = torch.tensor([t.token_ids()])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        mask = t.action_mask()
        rescored = [logp[i - 1, tid].item() for i, tid in enumerate(t.token_ids()) if mask[i]]
        stored = [x for x, m in zip(t.sampler_logprobs(), mask) if m]
        assert stored == pytest.approx(rescored, abs=1e-3)


def test_seeded_rollouts_are_reproducible(tok):
    pol = HFPolicy(random_model(tok, seed=0), tok)
    kw = dict(seeds=[3], samples_per_task=2, params=SamplingParams(max_tokens=4, seed=5), max_turns=2)
    a, b = rollout(pol, "Sokoban-Easy-v0", **kw), rollout(pol, "Sokoban-Easy-v0", **kw)
    assert [t.token_ids() for t in a] == [t.token_ids() for t in b]
    assert a[0].token_ids() != a[1].token_ids()  # the two samples of a task differ


def test_order_metadata_and_summary(tok):
    pol = Scripted(tok, ["<answer>3</answer>"])
    res = run_rollouts(pol, [Counter3], seeds=[5, 6, 7], samples_per_task=2)
    trajs = res.trajectories
    assert [(t.seed, t.meta["sample"]) for t in trajs] == [(s, g) for s in (5, 6, 7) for g in (0, 1)]
    assert all(t.stop_reason == "terminated" and t.success and t.total_reward == 1.0 for t in trajs)
    assert [t.task_id for t in trajs[::2]] == ["c5", "c6", "c7"]
    assert trajs[0].turns[0].parse == "ok" and trajs[0].turns[0].reward_terms == {"solved": 1.0}
    assert trajs[0].final_observation == [{"role": "user", "content": "got 3"}]
    s = res.summary
    assert (s.episodes, s.success_rate, s.mean_turns, s.generate_calls) == (6, 1.0, 1.0, 1)
    assert s.mean_batch == 6 and s.stop_reasons == {"terminated": 6}
    assert "success 100.0%" in s.format()


@pytest.mark.parametrize("kw, script, reason, turns", [
    ({"max_turns": 2}, ["<answer>1</answer>"], StopReason.MAX_TURNS, 2),
    ({"max_parse_failures": 2}, ["no answer here"], StopReason.PARSE_FAILURES, 2),
    ({"max_episode_tokens": 60}, ["<answer>1</answer>"], StopReason.MAX_TOKENS, None),
    ({"context_length": 60}, ["<answer>1</answer>"], StopReason.CONTEXT_LENGTH, None),
])
def test_limits_end_episodes_with_their_stop_reason(tok, kw, script, reason, turns):
    [t] = rollout(Scripted(tok, script), Counter3, seeds=[0], params=SamplingParams(max_tokens=8),
                  **{"max_turns": 50, **kw})
    assert t.stop_reason == reason.value
    if turns is not None:
        assert len(t.turns) == turns
    if reason in (StopReason.MAX_TOKENS, StopReason.CONTEXT_LENGTH):
        assert len(t.token_ids()) <= 60


def test_a_long_action_is_cut_at_the_token_budget(tok):
    [t] = rollout(Scripted(tok, ["<answer>1</answer> " + "blah " * 40], eos=False), Counter3,
                  seeds=[0], params=SamplingParams(max_tokens=64), max_episode_tokens=50)
    assert len(t.token_ids()) == 50 and t.turns[-1].finish_reason == "length"
    assert t.stop_reason == "max_tokens"
    assert len(t.turns[-1].action_logprobs) == len(t.turns[-1].action_ids)


def test_env_errors_end_only_their_episode(tok):
    bad = lambda: Counter3(fail_on_step=True)  # noqa: E731
    trajs = rollout(Scripted(tok, ["<answer>3</answer>"]), [bad, Counter3], seeds=[0])
    assert [t.stop_reason for t in trajs] == ["error", "terminated"]
    assert "env exploded" in trajs[0].meta["error"]


def test_slow_env_does_not_stall_generation_for_the_others(tok):
    """One env's step blocks until every other episode has finished; that can only happen if
    generation keeps going while that env step runs."""
    gate = threading.Event()
    fast_done = []

    def on_traj(t):
        if t.seed != 0:
            fast_done.append(t.seed)
            if len(fast_done) == 3:
                gate.set()

    tasks = [Task(lambda: Counter3(gate=gate), 0)] + [Task(Counter3, s) for s in (1, 2, 3)]
    pol = Scripted(tok, ["<answer>1</answer>"])
    trajs = rollout(pol, tasks=tasks, max_turns=4, on_trajectory=on_traj)
    assert all(t.stop_reason == "max_turns" and len(t.turns) == 4 for t in trajs)
    assert sorted(fast_done) == [1, 2, 3]
    assert 3 in pol.calls  # batches without the slow episode went ahead


def test_tool_messages_render_through_the_template(tok):
    [t] = rollout(Scripted(tok, ["<answer>1</answer>"]), lambda: Counter3(as_tool=True),
                  seeds=[0], max_turns=2)
    assert "ok" in tok.decode(t.turns[1].prompt_ids)


def test_renderer_suffix_and_prefix_check(tok):
    import copy

    r = ChatRenderer(tok)
    first = r.first([{"role": "user", "content": "hi"}])
    assert tok.decode(first).endswith("<|im_start|>assistant\n")
    action = tok.encode("yo", add_special_tokens=False) + [tok.eos_token_id]
    nxt = r.next([{"role": "user", "content": "hi"}], [{"role": "user", "content": "again"}], action)
    assert tok.decode(nxt) == "\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
    # a truncated action (no EOS) gets the template's closing tokens
    nxt2 = r.next([{"role": "user", "content": "hi"}], [{"role": "user", "content": "x"}], action[:1])
    assert tok.decode(nxt2).startswith("<|im_end|>\n<|im_start|>user")
    assert r.prefix_mismatches == 0
    # a template that renders earlier turns differently once more messages follow
    t2 = copy.deepcopy(tok)
    t2.chat_template = ("{% for m in messages %}{% if loop.last and m.role == 'assistant' %}[LAST]"
                        "{% endif %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<assistant>{% endif %}")
    r2 = ChatRenderer(t2)
    with pytest.warns(UserWarning, match="renders earlier turns differently"):
        nxt3 = r2.next([{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}], [5])
    assert t2.decode(nxt3) == "</s><user>b</s><assistant>" and r2.prefix_mismatches == 1


def test_bad_arguments_are_clear_errors(tok):
    pol = Scripted(tok)
    with pytest.raises(ValueError, match="samples_per_task"):
        rollout(pol, "Sokoban-Easy-v0", seeds=[0], samples_per_task=0)
    with pytest.raises(ValueError, match="either envs/seeds or tasks"):
        rollout(pol, "Sokoban-Easy-v0", tasks=[Task("Sokoban-Easy-v0", 0)])
    with pytest.raises(ValueError, match="max_turns"):
        RolloutConfig(max_turns=0)
    with pytest.raises(TypeError, match="env id or a zero-argument"):
        Task(3)


def test_render_tools_passes_the_env_tool_schemas_to_the_template(tok):
    import copy

    from agentsd.tools import Tool

    class WithTools(Counter3):
        tools = (Tool("add", "Add two integers.", {"a": "integer", "b": "integer"}),)

    t2 = copy.deepcopy(tok)
    t2.chat_template = ("{% if tools %}[tools:{% for t in tools %}{{ t.function.name }}{% endfor %}]{% endif %}"
                        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<assistant>{% endif %}")
    pol = Scripted(t2, ["<answer>3</answer>"])
    [plain] = rollout(pol, WithTools, seeds=[0])
    [with_tools] = rollout(pol, WithTools, seeds=[0], render_tools=True)
    assert "[tools:add]" not in t2.decode(plain.turns[0].prompt_ids)
    assert t2.decode(with_tools.turns[0].prompt_ids).startswith("[tools:add]")
