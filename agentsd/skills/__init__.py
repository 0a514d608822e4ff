"""Skills: natural-language guidance summarized from trajectories that conditions the teacher.

- :mod:`agentsd.skills.library` — the ``Skill`` type and ``SKILL.md`` files (load, validate, save,
  deduplicate);
- :mod:`agentsd.skills.summarize` — trajectories to skills (an LLM summarizer with versioned
  prompts, and a deterministic one from trajectory statistics and privileged data), incremental
  library updates with provenance;
- :mod:`agentsd.skills.retrieve` — picking the k skills for a task (BM25, embeddings, and a
  UCB usefulness bandit);
- :mod:`agentsd.skills.cli` — ``agentsd skills list/show/build``.
"""

from agentsd.skills.library import (
    KINDS,
    Provenance,
    Skill,
    SkillError,
    SkillLibrary,
    SkillStats,
    default_root,
    load_library,
    load_skill,
    parse_skill_md,
    render_skill_md,
)

__all__ = ["KINDS", "Provenance", "Skill", "SkillError", "SkillLibrary", "SkillStats",
           "default_root", "load_library", "load_skill", "parse_skill_md", "render_skill_md"]
