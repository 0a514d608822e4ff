"""Sokoban for text agents: procedural levels, a solver for the privileged plan, shaped reward.

What the agent sees (``Sokoban-v0``, seed 0, abridged)::

    #######
    #  .  #
    # $ @ #
    #     #
    #######
    Legend: # wall, @ you, $ box, . target, * box on target, + you on a target.
    Reply with moves inside <answer>…</answer>, for example <answer>Left Up</answer>.

A good action is ``<answer>Left</answer>``; pushing the last box onto its target ends the episode
with reward ``-0.1`` per move ``+1`` per box placed ``+10`` for solving (the reward scheme of
gym-sokoban, Schrader 2018). ``info["reward_terms"]`` splits it into ``step``, ``box_on``,
``box_off``, ``solved`` and ``format``.

Levels are made by reverse play (pulling boxes away from their targets, so every level is
solvable by construction), deterministic per seed through ``numpy.random.Generator`` only. An A*
solver with dead-square pruning supplies the privileged ``plan``; :func:`validate` proves the plan
solves the level.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentsd.env import TextEnv
from agentsd.tools import ParsedAction
from agentsd.types import ParseStatus, Privileged

__all__ = ["SokobanEnv", "Level", "PRESETS", "generate_level", "solve", "validate",
           "render", "parse_moves", "apply_moves"]

WALL, FLOOR = "#", " "
DIRS: dict[str, tuple[int, int]] = {"Up": (-1, 0), "Down": (1, 0), "Left": (0, -1), "Right": (0, 1)}
_ALIASES = {"up": "Up", "u": "Up", "down": "Down", "d": "Down", "left": "Left", "l": "Left",
            "right": "Right", "r": "Right"}

#: difficulty presets: room size (with the outer wall), boxes, reverse-play steps
PRESETS: dict[str, dict[str, int]] = {
    "easy": {"height": 6, "width": 6, "boxes": 1, "reverse_steps": 40, "min_plan": 3},
    "medium": {"height": 7, "width": 7, "boxes": 2, "reverse_steps": 150, "min_plan": 8},
    "hard": {"height": 8, "width": 8, "boxes": 3, "reverse_steps": 300, "min_plan": 14},
}

Pos = tuple[int, int]


@dataclass(frozen=True)
class Level:
    """A Sokoban position: walls as a tuple of strings, targets, boxes and the player."""

    walls: tuple[str, ...]  # '#' wall, ' ' floor
    targets: frozenset[Pos]
    boxes: frozenset[Pos]
    player: Pos

    @property
    def solved(self) -> bool:
        return self.boxes == self.targets

    def floor(self, p: Pos) -> bool:
        r, c = p
        return 0 <= r < len(self.walls) and 0 <= c < len(self.walls[0]) and self.walls[r][c] != WALL


# ---------------------------------------------------------------------------------------------
# rendering and moves (pure functions)

def render(level: Level, coordinates: bool = False) -> str:
    """The board as text; ``coordinates`` adds row and column numbers."""
    rows = []
    for r, line in enumerate(level.walls):
        chars = []
        for c, ch in enumerate(line):
            p = (r, c)
            if ch == WALL:
                chars.append("#")
            elif p == level.player:
                chars.append("+" if p in level.targets else "@")
            elif p in level.boxes:
                chars.append("*" if p in level.targets else "$")
            else:
                chars.append("." if p in level.targets else " ")
        rows.append("".join(chars))
    if not coordinates:
        return "\n".join(rows)
    head = "   " + "".join(str(c % 10) for c in range(len(rows[0])))
    return "\n".join([head] + [f"{r:>2} {row}" for r, row in enumerate(rows)])


def step_level(level: Level, move: str) -> tuple[Level, str]:
    """Apply one move. Returns the new level and what happened: ``moved``, ``pushed``,
    ``wall`` (bumped, no change) or ``blocked`` (box against wall or box)."""
    dr, dc = DIRS[move]
    r, c = level.player
    nxt = (r + dr, c + dc)
    if not level.floor(nxt):
        return level, "wall"
    if nxt in level.boxes:
        beyond = (r + 2 * dr, c + 2 * dc)
        if not level.floor(beyond) or beyond in level.boxes:
            return level, "blocked"
        boxes = (level.boxes - {nxt}) | {beyond}
        return Level(level.walls, level.targets, frozenset(boxes), nxt), "pushed"
    return Level(level.walls, level.targets, level.boxes, nxt), "moved"


def apply_moves(level: Level, moves: list[str]) -> Level:
    for m in moves:
        level, _ = step_level(level, m)
    return level


_SPLIT_RE = re.compile(r"[\s,;>\-→|]+")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def parse_moves(text: str) -> tuple[list[str] | None, str | None]:
    """Moves from ``<answer>…</answer>`` (or from text made only of moves). Returns
    ``(moves, None)`` or ``(None, error)``."""
    m = _ANSWER_RE.findall(text)
    body = m[-1] if m else text
    tokens = [t for t in _SPLIT_RE.split(body.strip()) if t]
    moves = [_ALIASES.get(t.lower().strip(".!")) for t in tokens]
    if not tokens:
        return None, ("no moves found; reply with moves inside <answer>…</answer>, "
                      "for example <answer>Up Left</answer>")
    if None in moves:
        if not m:
            return None, ("no <answer> found; reply with moves inside <answer>…</answer>, "
                          "for example <answer>Up Left</answer>")
        bad = tokens[moves.index(None)]
        return None, (f"{bad[:40]!r} is not a move; use Up, Down, Left or Right "
                      "(several allowed, separated by spaces)")
    return moves, None  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# solver

def _neighbors(level: Level, p: Pos) -> list[tuple[str, Pos]]:
    return [(m, (p[0] + dr, p[1] + dc)) for m, (dr, dc) in DIRS.items()]


def live_squares(level: Level) -> frozenset[Pos]:
    """Squares from which a box can still reach some target (reverse pull reachability);
    a box anywhere else is dead."""
    live: set[Pos] = set(level.targets)
    q = deque(level.targets)
    while q:
        b = q.popleft()
        for dr, dc in DIRS.values():
            prev, player = (b[0] + dr, b[1] + dc), (b[0] + 2 * dr, b[1] + 2 * dc)
            if level.floor(prev) and level.floor(player) and prev not in live:
                live.add(prev)
                q.append(prev)
    return frozenset(live)


def _heuristic(boxes: frozenset[Pos], targets: frozenset[Pos]) -> int:
    return sum(min(abs(b[0] - t[0]) + abs(b[1] - t[1]) for t in targets) for b in boxes)


def solve(level: Level, max_nodes: int = 200_000) -> list[str] | None:
    """A* over (player, boxes) with dead-square pruning. Returns a shortest move list, or
    ``None`` when the level is unsolvable or the node budget runs out."""
    if level.solved:
        return []
    live = live_squares(level)
    if any(b not in live for b in level.boxes):
        return None
    start = (level.player, level.boxes)
    parents: dict[Any, tuple[Any, str] | None] = {start: None}
    g = {start: 0}
    heap = [(_heuristic(level.boxes, level.targets), 0, 0, start)]
    tie = 0
    while heap and len(g) <= max_nodes:
        _, cost, _, state = heapq.heappop(heap)
        if cost > g[state]:
            continue
        player, boxes = state
        if boxes == level.targets:
            moves = []
            while parents[state] is not None:
                state, m = parents[state]
                moves.append(m)
            return moves[::-1]
        for m, (dr, dc) in DIRS.items():
            nxt = (player[0] + dr, player[1] + dc)
            if not level.floor(nxt):
                continue
            nboxes = boxes
            if nxt in boxes:
                beyond = (nxt[0] + dr, nxt[1] + dc)
                if not level.floor(beyond) or beyond in boxes or beyond not in live:
                    continue
                nboxes = (boxes - {nxt}) | {beyond}
            ns = (nxt, nboxes)
            if cost + 1 < g.get(ns, 1 << 30):
                g[ns] = cost + 1
                parents[ns] = (state, m)
                tie += 1
                heapq.heappush(heap, (cost + 1 + _heuristic(nboxes, level.targets), cost + 1, tie, ns))
    return None


def validate(level: Level, plan: list[str]) -> bool:
    """True when replaying ``plan`` from ``level`` solves it."""
    return apply_moves(level, plan).solved


# ---------------------------------------------------------------------------------------------
# generation by reverse play

def _carve_room(rng: np.random.Generator, h: int, w: int, min_floor: int) -> list[list[str]]:
    while True:
        grid = [[WALL] * w for _ in range(h)]
        r, c = int(rng.integers(1, h - 1)), int(rng.integers(1, w - 1))
        dirs = list(DIRS.values())
        d = dirs[int(rng.integers(4))]
        for _ in range(h * w * 2):
            if rng.random() < 0.35:
                d = dirs[int(rng.integers(4))]
            nr, nc = r + d[0], c + d[1]
            if 1 <= nr < h - 1 and 1 <= nc < w - 1:
                r, c = nr, nc
            grid[r][c] = FLOOR
            if rng.random() < 0.25:  # widen corridors into rooms
                for dr, dc in dirs:
                    if 1 <= r + dr < h - 1 and 1 <= c + dc < w - 1:
                        grid[r + dr][c + dc] = FLOOR
        if sum(ch == FLOOR for row in grid for ch in row) >= min_floor:
            return grid


def _reverse_play(rng: np.random.Generator, level: Level, steps: int) -> Level:
    """Walk the player backwards, pulling boxes; return the visited state that scores highest
    on (total box displacement) x (box switches + 1), the score Boxoban's generator uses."""
    best, best_score = level, -1
    home = {b: b for b in level.boxes}  # current position -> its target
    player, last_box, switches = level.player, None, 0
    dirs = list(DIRS.values())
    for _ in range(steps):
        dr, dc = dirs[int(rng.integers(4))]
        back = (player[0] - dr, player[1] - dc)
        if not level.floor(back) or back in home:
            continue
        front = (player[0] + dr, player[1] + dc)
        if front in home and rng.random() < 0.9:
            home[player] = home.pop(front)
            if last_box != home[player]:
                switches += last_box is not None
                last_box = home[player]
        player = back
        state = Level(level.walls, level.targets, frozenset(home), player)
        moved = sum(abs(b[0] - t[0]) + abs(b[1] - t[1]) for b, t in home.items())
        score = moved * (switches + 1)
        if score > best_score and not state.solved:
            best, best_score = state, score
    return best


def _reachable(level: Level) -> list[Pos]:
    seen, q = {level.player}, deque([level.player])
    while q:
        p = q.popleft()
        for _, n in _neighbors(level, p):
            if n not in seen and level.floor(n) and n not in level.boxes:
                seen.add(n)
                q.append(n)
    return sorted(seen)


def generate_level(rng: np.random.Generator, height: int, width: int, boxes: int,
                   reverse_steps: int, min_plan: int = 1,
                   max_tries: int = 500) -> tuple[Level, list[str]]:
    """A solvable, unsolved level whose optimal plan has at least ``min_plan`` moves, and that
    plan, drawn from ``rng`` only. The player ends on a random cell it can walk from, which
    keeps the level solvable."""
    for _ in range(max_tries):
        grid = _carve_room(rng, height, width, min_floor=boxes * 2 + 4)
        walls = tuple("".join(row) for row in grid)
        floor = [(r, c) for r in range(height) for c in range(width) if grid[r][c] == FLOOR]
        idx = rng.permutation(len(floor))[: boxes + 1]
        targets = frozenset(floor[i] for i in idx[:boxes])
        solved = Level(walls, targets, targets, floor[idx[boxes]])
        start = _reverse_play(rng, solved, reverse_steps)
        if start.solved:
            continue
        cells = _reachable(start)
        start = Level(walls, targets, start.boxes, cells[int(rng.integers(len(cells)))])
        plan = solve(start)
        if plan and len(plan) >= min_plan:
            return start, plan
    raise RuntimeError(f"could not generate a {height}x{width} level with {boxes} boxes "
                       f"in {max_tries} tries; use a larger room or fewer boxes")


# ---------------------------------------------------------------------------------------------
# the env

SYSTEM_PROMPT = (
    "You are playing Sokoban. Push every box ($) onto a target (.). You can push a box, never "
    "pull it, and only one box at a time. A box pushed into a corner that is not a target can "
    "never be moved out again."
)
LEGEND = "Legend: # wall, @ you, $ box, . target, * box on target, + you on a target."


class SokobanEnv(TextEnv):
    """Sokoban with several word moves per turn (see the module docstring)."""

    max_action_chars = 4000

    def __init__(self, difficulty: str = "medium", height: int | None = None,
                 width: int | None = None, boxes: int | None = None,
                 reverse_steps: int | None = None, min_plan: int | None = None,
                 max_moves_per_turn: int = 8,
                 coordinates: bool = False, format_penalty: float = -0.5,
                 render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        if difficulty not in PRESETS:
            raise ValueError(f"difficulty must be one of {sorted(PRESETS)}, got {difficulty!r}")
        p = dict(PRESETS[difficulty])
        for k, v in (("height", height), ("width", width), ("boxes", boxes),
                     ("reverse_steps", reverse_steps), ("min_plan", min_plan)):
            if v is not None:
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{k} must be a positive int, got {v!r}")
                p[k] = v
        if p["height"] < 4 or p["width"] < 4:
            raise ValueError("height and width must be at least 4 (the outer wall included)")
        if max_moves_per_turn < 1:
            raise ValueError(f"max_moves_per_turn must be >= 1, got {max_moves_per_turn}")
        self.params = p
        self.difficulty = difficulty
        self.max_moves_per_turn = max_moves_per_turn
        self.coordinates = coordinates
        self.format_penalty = float(format_penalty)
        self.level: Level | None = None
        self.start: Level | None = None
        self.plan: list[str] = []
        self._next_cache: dict[Level, list[str] | None] = {}

    # -- gym API --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        self.start, self.plan = generate_level(self.np_random, **self.params)
        self.level = self.start
        self._next_cache = {}
        self._live = live_squares(self.start)  # walls and targets never change in an episode
        example = ("<answer>Up</answer> (one move per turn)" if self.max_moves_per_turn == 1 else
                   f"<answer>Left Up</answer> (at most {self.max_moves_per_turn} moves per turn)")
        intro = (f"{self.board()}\n{LEGEND}\nReply with moves inside <answer>…</answer>, for "
                 f"example {example}.")
        return [self.system(SYSTEM_PROMPT), self.user(intro)], {"task_id": self.task_id}

    def step(self, action: Any):
        assert self.level is not None, "call reset() first"
        parsed = self.parse(action)
        moves, err = (None, parsed.error)
        if parsed.status not in (ParseStatus.BAD_TYPE, ParseStatus.TOO_LONG):
            moves, err = parse_moves(parsed.text)
        if moves is None:
            status = parsed.status if parsed.status in (ParseStatus.BAD_TYPE, ParseStatus.TOO_LONG) \
                else (ParseStatus.INVALID_ACTION if "not a move" in (err or "") else ParseStatus.NO_ACTION)
            info = self.info(ParsedAction(status), format=self.format_penalty)
            info["deadlock"] = self.deadlocked()
            return ([self.user(f"Invalid action: {err}\n\n{self.board()}")], self.format_penalty,
                    False, False, info)
        notes = []
        if len(moves) > self.max_moves_per_turn:
            notes.append(f"Only the first {self.max_moves_per_turn} moves were executed.")
            moves = moves[: self.max_moves_per_turn]
        before = self.level
        events = []
        for m in moves:
            self.level, ev = step_level(self.level, m)
            events.append(ev)
            if self.level.solved:
                break
        on_before = len(before.boxes & before.targets)
        on_after = len(self.level.boxes & self.level.targets)
        terms = {"step": -0.1 * len(events), "box_on": float(max(0, on_after - on_before)),
                 "box_off": -float(max(0, on_before - on_after)),
                 "solved": 10.0 if self.level.solved else 0.0}
        bumps = sum(e in ("wall", "blocked") for e in events)
        if bumps:
            notes.append(f"{bumps} move(s) had no effect (wall or blocked box).")
        if self.level.solved:
            notes.append("All boxes are on targets. Solved!")
        info = self.info(ParsedAction(ParseStatus.OK), success=self.level.solved if self.level.solved
                         else None, **terms)
        info["moves_executed"] = len(events)
        info["deadlock"] = self.deadlocked()
        text = (" ".join(notes) + "\n\n" if notes else "") + self.board()
        return [self.user(text)], float(sum(terms.values())), self.level.solved, False, info

    def render(self) -> str | None:
        return self.board() if self.level is not None else None

    # -- agentsd extras ------------------------------------------------------------------------
    def board(self) -> str:
        return render(self.level, self.coordinates)

    def deadlocked(self) -> bool:
        """True when some box sits on a dead square (the level can no longer be solved)."""
        return any(b not in self._live for b in self.level.boxes)

    def privileged(self) -> Privileged:
        if self.level is None:
            return Privileged()
        if self.level not in self._next_cache:
            self._next_cache[self.level] = solve(self.level, max_nodes=50_000)
        rest = self._next_cache[self.level]
        return Privileged(
            solution=" ".join(self.plan), plan=list(self.plan),
            next_step=" ".join(rest[: self.max_moves_per_turn]) if rest else None,
            notes=(f"An optimal solution takes {len(self.plan)} moves. "
                   + ("From the current position it is no longer solvable."
                      if rest is None else f"From here {len(rest)} moves remain.")),
            extra={"moves_remaining": len(rest) if rest is not None else None},
        )

    def oracle_action(self) -> str | None:
        nxt = self.privileged().next_step if self.level is not None else None
        return f"<answer>{nxt}</answer>" if nxt else None

    def example_actions(self) -> list[str]:
        return ["<answer>Up</answer>", "<answer>Down Left</answer>", "Right",
                "<answer>Left Left Up</answer>"]

    @property
    def task_id(self) -> str | None:
        return None if self.episode_seed is None else f"sokoban-{self.difficulty}-{self.episode_seed}"
