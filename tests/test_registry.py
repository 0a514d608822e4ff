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
    agentsd.register("MissingAttr-v0", "agentsd.envs.sokoban:NoSuchEnv")
    with pytest.raises(EntryPointError, match="has no attribute 'NoSuchEnv'"):
        agentsd.make("MissingAttr-v0")


def test_module_prefixed_id_imports_module(scratch_registry, tmp_path, monkeypatch):
    pkg = tmp_path / "thirdparty_envs_mod.py"
    pkg.write_text(
        "import agentsd\n"
        "agentsd.register('tp/Thing-v0', 'agentsd.envs.sokoban:SokobanEnv', kwargs={'difficulty': 'easy'})\n"
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
    code = "import agentsd, sys; agentsd.list_envs(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_wrappers_forward_attributes():
    env = agentsd.make("Sokoban-Easy-v0", seed=0)
    env.reset()
    assert env.privileged().plan  # forwarded through TurnLimit and OrderEnforcing
    assert isinstance(types.SimpleNamespace(e=env).e.unwrapped, TextEnv)


# ---- gymnasium-native: one spec type, one registry ---------------------------------------------

def test_specs_are_gymnasium_specs_with_agentsd_extras():
    import gymnasium

    s = agentsd.spec("Sokoban-Easy-v0")
    assert isinstance(s, gymnasium.envs.registration.EnvSpec)
    assert s.max_turns == s.max_episode_steps == 10 and "train" in s.splits
    env = agentsd.make("Sokoban-Easy-v0", max_turns=4)
    assert env.spec.max_episode_steps == 4 and env.spec.nondeterministic is False


def test_every_id_is_in_gymnasiums_registry_under_the_agentsd_namespace():
    import gymnasium as gym

    from agentsd.registry import gymnasium_id

    gym.register_envs(agentsd)
    for env_id, s in agentsd.list_envs().items():
        gid = gymnasium_id(env_id)
        assert gid.startswith("agentsd/") and gym.spec(gid).entry_point.entry_point == s.entry_point
        assert agentsd.spec(gid) is s  # agentsd.make accepts gymnasium's name too
    env = gym.make("agentsd/Sokoban-Easy-v0")
    obs, _ = env.reset(seed=0)
    assert env.spec.id == "agentsd/Sokoban-Easy-v0" and env.spec.max_episode_steps == 10
    assert env.action_space.contains("<answer>Up Left</answer>")
    assert env.step("<answer>Up</answer>")[4]["parse"] == "ok"


def test_namespaced_and_scratch_ids_reach_gymnasium(scratch_registry):
    import gymnasium as gym

    agentsd.register("tp/Echo-v0", Echo, max_turns=2)
    env = gym.make("agentsd/tp.Echo-v0", greeting="yo")
    obs, _ = env.reset(seed=0)
    assert obs[0]["content"].startswith("yo ")
    assert agentsd.spec("agentsd/tp.Echo-v0").id == "tp/Echo-v0"


def test_gymnasium_wrappers_keep_the_spec_and_vector_envs_run(recwarn):
    import gymnasium as gym
    from gymnasium.wrappers import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(agentsd.make("Sokoban-Easy-v0", seed=0))
    env.reset()
    info = {}
    for _ in range(10):
        _, _, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
        if terminated or truncated:
            break
    assert info["success"] and "episode" in info
    assert env.spec is not None and env.spec.additional_wrappers[-1].name == "RecordEpisodeStatistics"
    assert not [w for w in recwarn if "spec" in str(w.message)]

    venv = gym.make_vec("agentsd/Sokoban-Easy-v0", num_envs=2, vectorization_mode="sync")
    obs, _ = venv.reset(seed=[0, 1])
    assert len(obs) == 2 and obs[0] != obs[1]
    _, rewards, _, _, _ = venv.step(("<answer>Up</answer>", "<answer>Down</answer>"))
    assert rewards.shape == (2,)
    venv.close()


# ---- the env suite installs as agentsd.envs ----------------------------------------------------

def test_a_local_envs_folder_never_hides_the_builtins(tmp_path):
    """Run from a folder with its own ``envs/`` (common in RL projects): the built-ins still load,
    and the only importable ``envs`` is the user's."""
    import subprocess

    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("MINE = True\n")
    code = ("import agentsd, envs, gymnasium\n"
            "assert envs.MINE\n"
            "agentsd.make('Sokoban-Easy-v0').reset(seed=0)\n"
            "gymnasium.make('agentsd/ToolWorld-Easy-v0').reset(seed=0)\n"
            "print(len(agentsd.list_envs()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 8

    bare = tmp_path / "bare"
    bare.mkdir()
    code = "import importlib.util, agentsd; print(importlib.util.find_spec('envs'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=bare, capture_output=True, text=True)
    assert out.stdout.strip() == "None", "a top-level 'envs' package is installed"


def test_a_failed_builtin_import_raises_instead_of_emptying_the_registry(monkeypatch):
    reg = sys.modules["agentsd.registry"]
    monkeypatch.setattr(reg, "_BUILTINS_LOADED", False)
    monkeypatch.setattr(reg, "BUILTINS_MODULE", "no_such_builtin_suite_xyz")
    for _ in range(2):  # not swallowed the second time either
        with pytest.raises(EntryPointError, match="cannot register the built-in envs.*no_such_builtin_suite_xyz"):
            agentsd.make("Sokoban-v0")
    monkeypatch.setattr(reg, "BUILTINS_MODULE", "agentsd.envs")
    agentsd.make("Sokoban-v0")
