"""Every shell example and Python block in README.md runs (``slow``: real SmolLM2 on the CPU).

Each line of a fenced ``bash`` block of README.md or scripts/README.md is one example (``\\``
continues a line; ``&&`` chains stay one example). They run in order, in one temporary folder
(``scripts/`` linked in), so an example can read what an earlier one wrote, and each must exit 0
and write what it names: the value of ``--out``, ``--out-dir`` or ``--merge``, the folder
``agentsd export`` writes, or a path its comment points to (``# -> runs/skills``).

An example that cannot run here says so in the README, and the test skips it with that reason:
a comment tag ``[gpu]``, ``[server]`` (needs an OpenAI-compatible server) or ``[long ...]``
(``AGENTSD_README_LONG=1`` runs those too); a line with ``...`` is a sketch of flags, not a
command. The README's ``<!-- test-command -->`` runs this suite (CI: ``.ci/run``) and is skipped;
its ``<!-- main-command -->`` (about 15 minutes) runs, without its package installs, only with
``AGENTSD_README_LONG=1``.

Each fenced ``python`` block is one example too: the blocks run in order, each in a fresh
interpreter in the same folder, and must exit 0. A block that cannot run here carries the same tag
as its first-line comment (``# [gpu]``, ``# [long: why]``); a block with ``...`` in its code is a
sketch and must be tagged. The default tier parses every example and compiles every Python block.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the documents whose examples run: the front door, then the scripts' reference and write-ups
DOCS = ("README.md", "scripts/README.md")
TAG = re.compile(r"\[(gpu|server|long)\b([^\]]*)\]", re.IGNORECASE)
SKIP_WHY = {"gpu": "needs a GPU", "server": "needs an OpenAI-compatible server",
            "long": "long on a CPU"}


def _tag_skip(comment: str) -> str | None:
    """Why a ``[gpu]`` / ``[server]`` / ``[long ...]`` tag in ``comment`` skips its example."""
    m = TAG.search(comment)
    if not m:
        return None
    kind, detail = m.group(1).lower(), m.group(2).strip(" :")
    if kind == "long" and os.environ.get("AGENTSD_README_LONG"):
        return None
    return f"{SKIP_WHY[kind]}{': ' + detail if detail else ''} (README tag [{kind}])"


@dataclass(frozen=True)
class Example:
    line: int  # line number in its document
    command: str  # without its comment
    comment: str
    marker: str  # the <!-- name --> right before the block, if any
    doc: str = "README.md"

    def skip_reason(self) -> str | None:
        long_ok = bool(os.environ.get("AGENTSD_README_LONG"))
        if self.marker == "test-command":
            return "README's test command installs packages and runs this suite (CI: .ci/run)"
        if self.marker == "main-command":
            return None if long_ok else (
                "README's main command installs packages and runs `agentsd quickstart`, about 15 "
                "minutes on a 2-core CPU (AGENTSD_README_LONG=1 runs the quickstart part)")
        tagged = _tag_skip(self.comment)
        if tagged or TAG.search(self.comment):
            return tagged
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


@dataclass(frozen=True)
class PyBlock:
    """A fenced ``python`` block: its first line (``# [gpu] why``) may tag it."""

    line: int  # line number of its first code line
    code: str
    doc: str = "README.md"

    @property
    def tag_comment(self) -> str:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        return first[1:] if first.startswith("#") else ""

    def is_sketch(self) -> bool:
        """``...`` in the code (not in a string or comment) stands for what the block leaves out."""
        toks = tokenize.generate_tokens(io.StringIO(self.code).readline)
        return any(t.type == tokenize.OP and t.string == "..." for t in toks)

    def skip_reason(self) -> str | None:
        return _tag_skip(self.tag_comment)


def python_blocks(text: str, doc: str = "README.md") -> list[PyBlock]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() in ("```python", "```py"):
            start = i + 1
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            blocks.append(PyBlock(start + 1, "\n".join(lines[start:i]) + "\n", doc))
        i += 1
    return blocks


def readme_examples(text: str, doc: str = "README.md") -> list[Example]:
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
                    examples.append(Example(start, " ".join(command.split()), comment, marker, doc))
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


EXAMPLES = [e for doc in DOCS for e in readme_examples((ROOT / doc).read_text(), doc)]
PY_BLOCKS = [b for doc in DOCS for b in python_blocks((ROOT / doc).read_text(), doc)]


def _id(x: Example | PyBlock) -> str:
    where = "" if x.doc == "README.md" else "scripts-"
    return f"{where}{'py-' if isinstance(x, PyBlock) else ''}L{x.line}"


def test_readme_has_examples_and_each_is_run_or_skipped_with_a_reason():
    readme = [e for e in EXAMPLES if e.doc == "README.md"]
    assert len(readme) >= 10
    runnable = [e for e in readme if e.skip_reason() is None]
    assert any(e.command.startswith("agentsd train") for e in runnable)
    assert any(e.command.startswith("agentsd rollout") for e in runnable)
    assert any(e.doc == "scripts/README.md" for e in EXAMPLES)  # the write-ups' commands are read too


def test_readme_python_blocks_compile_and_sketches_are_tagged():
    readme = [b for b in PY_BLOCKS if b.doc == "README.md"]
    assert len(readme) >= 4 and sum(b.skip_reason() is None for b in readme) >= 4
    for b in PY_BLOCKS:
        compile(b.code, f"{b.doc}:{b.line}", "exec")  # a SyntaxError names the block's line
        assert not b.is_sketch() or TAG.search(b.tag_comment), (
            f"{b.doc} line {b.line}: a Python block with '...' is a sketch; make it run or tag it "
            "with a first-line comment such as '# [long: why]'")


def test_readme_python_blocks_use_no_undefined_name():
    """Each block runs alone in a fresh interpreter, so it imports what it uses (the skills
    snippet once called ``load_library`` without importing it: a NameError for every reader)."""
    pytest.importorskip("ruff")
    for b in PY_BLOCKS:
        r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F821",
                            "--output-format", "concise", "--stdin-filename", f"L{b.line}.py", "-"],
                           input=b.code, capture_output=True, text=True)
        assert r.returncode == 0, f"{b.doc} Python block at line {b.line}:\n{r.stdout}"


def test_python_block_tags_and_sketches_are_read():
    tagged = python_blocks("```python\n# [gpu: needs CUDA]\nimport torch\n```\n")[0]
    assert tagged.skip_reason() == "needs a GPU: needs CUDA (README tag [gpu])"
    assert python_blocks("```python\nx = f(a, ...)\n```\n")[0].is_sketch()
    plain = python_blocks("```python\nprint('...')  # ...\n```\n")[0]
    assert not plain.is_sketch() and plain.skip_reason() is None and plain.line == 2


def test_the_front_door_stays_short_and_keeps_its_markers():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250, "README.md is the front door: move write-ups to scripts/README.md"
    assert "## Contents" in text and "## What the quickstart shows" in text
    for name in ("main-command", "test-command"):
        out = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_command.py"), name],
                             capture_output=True, text=True, check=True).stdout
        assert out.startswith("pip install torch==")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    (d / "scripts").symlink_to(ROOT / "scripts")
    return d


def _run_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    bindir = Path(sys.executable).parent  # `agentsd` and `python` of this interpreter
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("example", EXAMPLES, ids=[_id(e) for e in EXAMPLES])
def test_readme_example_runs(example, workdir):
    why = example.skip_reason()
    if why:
        pytest.skip(f"{example.doc} line {example.line} `{example.command[:60]}`: {why}")
    env = _run_env()
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", example.runnable()], cwd=workdir, env=env,
                       capture_output=True, text=True, timeout=1500)
    took = time.monotonic() - t0
    print(f"{example.doc} line {example.line}: {took:.0f} s: {example.command}")
    assert r.returncode == 0, f"{example.command}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    for path in example.outputs():
        p = workdir / path
        assert p.exists(), f"{example.command} did not write {path}"
        assert p.is_dir() and any(p.iterdir()) or p.is_file() and p.stat().st_size > 0, \
            f"{example.command} wrote an empty {path}"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", PY_BLOCKS, ids=[_id(b) for b in PY_BLOCKS])
def test_readme_python_block_runs(block, workdir):
    why = block.skip_reason()
    if why:
        pytest.skip(f"{block.doc} Python block at line {block.line}: {why}")
    script = workdir / f"{Path(block.doc).parent.name or 'readme'}_L{block.line}.py"
    script.write_text(block.code)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, script.name], cwd=workdir, env=_run_env(),
                       capture_output=True, text=True, timeout=600)
    print(f"{block.doc} Python block at line {block.line}: {time.monotonic() - t0:.0f} s")
    assert r.returncode == 0, f"{block.doc} line {block.line}:\n{block.code}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
