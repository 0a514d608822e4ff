"""The registry API: ids, make, errors, entry points, splits."""

from __future__ import annotations

import sys
import types

import pytest

import agentsd
from agentsd.env import TextEnv
from agentsd.registry import DuplicateEnvError, EntryPointError, RegistryError, UnknownEnvError
from agentsd.wrappers import ResetNeeded


class Echo(TextEnv):
    def __init__(self, greeting: str = "hi", render_mode=None):
        super().__init__(render_mode)
        self.greeting = greeting

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n = int(self.np_random.integers(1000))
        return [self.user(f"{self.greeting} {self.n}")], {}

    def step(self, action):
        p = self.parse(action)
        return [self.user(p.text or "")], 0.0, False, False, self.info(p)


def test_make_merges_kwargs_and_applies_turn_limit(scratch_registry):
    agentsd.register("Echo-v0", Echo, kwargs={"greeting": "hello"}, max_turns=3)
    env = agentsd.make("Echo-v0", greeting="bonjour")
    obs, _ = env.reset(seed=1)
    assert obs[0]["content"].startswith("bonjour ")
    assert env.spec.kwargs["greeting"] == "bonjour"
    outs = [env.step("x") for _ in range(3)]
    assert [o[3] for o in outs] == [False, False, True]
    assert outs[-1][4]["truncated_by"] == "turn_limit"
    with pytest.raises(ResetNeeded, match="reset"):
        env.step("x")  # the episode ended


def test_make_max_turns_override_and_seed(scratch_registry):
    agentsd.register("Echo-v1", Echo, max_turns=3)
    env = agentsd.make("Echo-v1", seed=7, max_turns=1)
    a, _ = env.reset()
    b, _ = agentsd.make("Echo-v1").reset(seed=7)
    assert a == b
    assert env.step("x")[3] is True


def test_step_before_reset_raises():
    env = agentsd.make("Sokoban-v0")
    with pytest.raises(ResetNeeded, match="call env.reset"):
        env.step("<answer>Up</answer>")


def test_unknown_id_suggests_close_matches():
    with pytest.raises(UnknownEnvError, match="Did you mean: Sokoban-v0"):
        agentsd.make("Sokobn-v0")


def test_unknown_version_lists_versions():
    with pytest.raises(UnknownEnvError, match=r"no version v7.*Sokoban-v0"):
        agentsd.make("Sokoban-v7")


def test_duplicate_registration_warns_or_raises(scratch_registry):
    agentsd.register("Dup-v0", Echo)
    with pytest.warns(UserWarning, match="overriding"):
        agentsd.register("Dup-v0", Echo)
    with pytest.raises(DuplicateEnvError, match="already registered"):
        agentsd.register("Dup-v0", Echo, on_duplicate="raise")


def test_malformed_id_and_entry_point(scratch_registry):
    with pytest.raises(RegistryError, match="Name-vN"):
        agentsd.register("no_version", Echo)
    with pytest.raises(RegistryError, match="module:Attr"):
        agentsd.register("Bad-v0", "just_a_module")


def test_bad_entry_point_says_what_failed(scratch_registry):
    agentsd.register("Missing-v0", "no_such_module_xyz:Env")
    with pytest.raises(EntryPointError, match="cannot import module 'no_such_module_xyz'.*ModuleNotFoundError"):
        agentsd.make("Missing-v0")
    agentsd.register("MissingAttr-v0", "envs.sokoban:NoSuchEnv")
    with pytest.raises(EntryPointError, match="has no attribute 'NoSuchEnv'"):
        agentsd.make("MissingAttr-v0")


def test_module_prefixed_id_imports_module(scratch_registry, tmp_path, monkeypatch):
    pkg = tmp_path / "thirdparty_envs_mod.py"
    pkg.write_text(
        "import agentsd\n"
        "agentsd.register('tp/Thing-v0', 'envs.sokoban:SokobanEnv', kwargs={'difficulty': 'easy'})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = agentsd.make("thirdparty_envs_mod:tp/Thing-v0")
    assert env.spec.namespace == "tp" and env.spec.name == "Thing" and env.spec.version == 0
    env.reset(seed=0)


def test_entry_point_group_loaded_on_miss(scratch_registry, monkeypatch):
    calls = []

    def register_all():
        calls.append(1)
        agentsd.register("plugin/Echo-v0", Echo)

    class FakeEP:
        name, value = "fake", "fake:register_all"

        def load(self):
            return register_all

    import importlib.metadata as md

    monkeypatch.setattr(md, "entry_points", lambda group=None: [FakeEP()] if group == "agentsd.envs" else [])
    monkeypatch.setattr(scratch_registry, "_PLUGINS_LOADED", False)
    env = agentsd.make("plugin/Echo-v0")
    assert calls == [1]
    env.reset(seed=0)


def test_splits_never_overlap_and_give_seeds(scratch_registry):
    train = agentsd.split_seeds("Sokoban-v0", "train", 5)
    test = agentsd.split_seeds("Sokoban-v0", "test", 5)
    assert not set(train) & set(test)
    s = agentsd.spec("Sokoban-v0")
    assert s.splits["train"].seeds[1] <= s.splits["test"].seeds[0]
    with pytest.raises(RegistryError, match="share seeds"):
        agentsd.register("Overlap-v0", Echo, splits={"a": agentsd.Split((0, 10)), "b": agentsd.Split((5, 20))})
    with pytest.raises(RegistryError, match="no split 'dev'"):
        agentsd.make("Sokoban-v0", split="dev")


def test_pprint_registry_lists_builtins(capsys):
    text = agentsd.pprint_registry()
    assert "Sokoban-v0" in text and "Sokoban-Easy-v0" in text


def test_import_is_light():
    code = "import agentsd, sys; agentsd.registry(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_wrappers_forward_attributes():
    env = agentsd.make("Sokoban-Easy-v0", seed=0)
    env.reset()
    assert env.privileged().plan  # forwarded through TurnLimit and OrderEnforcing
    assert isinstance(types.SimpleNamespace(e=env).e.unwrapped, TextEnv)
