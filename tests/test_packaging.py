"""Packaging: the wheel holds agentsd (with the env suite as ``agentsd.envs`` and the shipped skills)
and nothing named ``envs`` at the top of site-packages; an installed wheel works from a folder that
has its own ``envs/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    cfg = _setuptools()
    listed, dirs = set(cfg["packages"]), cfg["package-dir"]
    assert dirs["agentsd.envs"] == "envs" and "envs" not in listed
    found = set()
    for top, name in (("agentsd", "agentsd"), ("envs", "agentsd.envs")):
        for d in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if d.name == "__pycache__" or not any(d.glob("*.py")) and not any(d.glob("*.md")):
                continue
            found.add(".".join([name, *d.relative_to(ROOT / top).parts]))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (so the shared tree gets no build/ folder)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("agentsd", "envs", "skills"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True, capture_output=True, timeout=300)
    return next(out.glob("agentsd-*.whl"))


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"agentsd", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "agentsd/envs/__init__.py" in names and "agentsd/envs/toolworld/env.py" in names
    assert "agentsd/__main__.py" in names and "agentsd/skills/prompts/summarize_v1.md" in names
    shipped = [n for n in names if n.startswith("agentsd/shipped_skills/") and n.endswith("/SKILL.md")]
    assert len(shipped) == len(list((ROOT / "skills").glob("*/*/SKILL.md")))


@pytest.mark.slow
def test_installed_wheel_works_beside_a_users_envs_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)
    work = tmp_path / "project"
    (work / "envs").mkdir(parents=True)
    (work / "envs" / "__init__.py").write_text("MINE = True\n")
    code = ("import agentsd, envs, gymnasium, pathlib\n"
            f"assert envs.MINE and str(pathlib.Path(agentsd.__file__)).startswith({str(venv)!r})\n"
            "agentsd.make('ToolWorld-Easy-v0', seed=0).reset()\n"
            "gymnasium.make('agentsd/Sokoban-Easy-v0').reset(seed=0)\n"
            "from agentsd.skills.library import load_library\n"
            "print(len(load_library()))")
    out = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(list((ROOT / "skills").glob("*/*/SKILL.md")))
    out = subprocess.run([str(py), "-m", "agentsd", "play", "--env", "Sokoban-Easy-v0"], cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and '"success": true' in out.stdout, out.stderr
