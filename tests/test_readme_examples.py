"""Every shell example in README.md runs (``slow``: real SmolLM2 on the CPU, minutes).

Each line of a fenced ``bash`` block is one example (``\\`` continues a line; ``&&`` chains stay
one example). They run in order, in one temporary folder (``scripts/`` linked in), so an example
can read what an earlier one wrote, and each must exit 0 and write what it names: the value of
``--out``, ``--out-dir`` or ``--merge``, the folder ``agentsd export`` writes, or a path its
comment points to (``# -> runs/skills``).

An example that cannot run here says so in the README, and the test skips it with that reason:
a comment tag ``[gpu]``, ``[server]`` (needs an OpenAI-compatible server) or ``[long ...]``
(``AGENTSD_README_LONG=1`` runs those too); a line with ``...`` is a sketch of flags, not a
command. The README's ``<!-- test-command -->`` runs this suite (CI: ``.ci/run``) and is skipped;
its ``<!-- main-command -->`` (about 15 minutes) runs, without its package installs, only with
``AGENTSD_README_LONG=1``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(r"\[(gpu|server|long)\b([^\]]*)\]", re.IGNORECASE)
SKIP_WHY = {"gpu": "needs a GPU", "server": "needs an OpenAI-compatible server",
            "long": "long on a CPU"}


@dataclass(frozen=True)
class Example:
    line: int  # README line number
    command: str  # without its comment
    comment: str
    marker: str  # the <!-- name --> right before the block, if any

    def skip_reason(self) -> str | None:
        long_ok = bool(os.environ.get("AGENTSD_README_LONG"))
        if self.marker == "test-command":
            return "README's test command installs packages and runs this suite (CI: .ci/run)"
        if self.marker == "main-command":
            return None if long_ok else (
                "README's main command installs packages and runs `agentsd quickstart`, about 15 "
                "minutes on a 2-core CPU (AGENTSD_README_LONG=1 runs the quickstart part)")
        m = TAG.search(self.comment)
        if m:
            kind, detail = m.group(1).lower(), m.group(2).strip(" :")
            if kind == "long" and long_ok:
                return None
            return f"{SKIP_WHY[kind]}{': ' + detail if detail else ''} (README tag [{kind}])"
        if re.search(r"(^|\s)\.\.\.(\s|$)", self.command):
            return "a sketch: '...' stands for more flags"
        return None

    def runnable(self) -> str:
        """The command without the package installs it may start with."""
        parts = [p.strip() for p in self.command.split("&&")]
        return " && ".join(p for p in parts if not p.startswith("pip install"))

    def outputs(self) -> list[str]:
        """Paths the example says it writes."""
        out = []
        if self.marker == "main-command":  # the quickstart's run folder (README: Training)
            out += ["runs/quickstart/report.html", "runs/quickstart/learning_curve.png"]
        for part in re.split(r"&&|;", self.command):
            words = shlex.split(part)
            for i, w in enumerate(words[:-1]):
                if w in ("--out", "--out-dir", "--merge"):
                    out.append(words[i + 1])
            if words[:2] == ["agentsd", "export"]:
                out.append(words[-1])
        out += re.findall(r"->\s*(\S+)", self.comment)
        return list(dict.fromkeys(out))


def readme_examples(text: str) -> list[Example]:
    examples, marker = [], ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        m = re.fullmatch(r"<!--\s*([\w-]+)\s*-->", s)
        if m:
            marker = m.group(1)
        elif s in ("```bash", "```sh"):
            i += 1
            while not lines[i].startswith("```"):
                start, logical = i + 1, lines[i]
                while logical.rstrip().endswith("\\"):
                    i += 1
                    logical = logical.rstrip()[:-1] + " " + lines[i].strip()
                command, comment = _split_comment(logical)
                if command.strip():
                    examples.append(Example(start, " ".join(command.split()), comment, marker))
                i += 1
            marker = ""
        elif s:
            marker = ""
        i += 1
    return examples


def _split_comment(line: str) -> tuple[str, str]:
    """``(command, comment)``: a comment starts at a ``#`` after a space."""
    m = re.search(r"(^|\s)#(\s|$)", line)
    return (line, "") if not m else (line[:m.start()], line[m.end():].strip())


EXAMPLES = readme_examples((ROOT / "README.md").read_text())


def test_readme_has_examples_and_each_is_run_or_skipped_with_a_reason():
    assert len(EXAMPLES) >= 10
    runnable = [e for e in EXAMPLES if e.skip_reason() is None]
    assert any(e.command.startswith("agentsd train") for e in runnable)
    assert any(e.command.startswith("agentsd rollout") for e in runnable)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    (d / "scripts").symlink_to(ROOT / "scripts")
    return d


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("example", EXAMPLES, ids=[f"L{e.line}" for e in EXAMPLES])
def test_readme_example_runs(example, workdir):
    why = example.skip_reason()
    if why:
        pytest.skip(f"README line {example.line} `{example.command[:60]}`: {why}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    bindir = Path(sys.executable).parent  # `agentsd` and `python` of this interpreter
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", example.runnable()], cwd=workdir, env=env,
                       capture_output=True, text=True, timeout=1500)
    took = time.monotonic() - t0
    print(f"README line {example.line}: {took:.0f} s: {example.command}")
    assert r.returncode == 0, f"{example.command}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    for path in example.outputs():
        p = workdir / path
        assert p.exists(), f"{example.command} did not write {path}"
        assert p.is_dir() and any(p.iterdir()) or p.is_file() and p.stat().st_size > 0, \
            f"{example.command} wrote an empty {path}"
