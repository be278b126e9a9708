"""The recipe registry: the one list of local datasets seem_ray can make, by short name.

Flow position: **recipe name -> dataset id** -> generate (makes it) / minari (loads it, and
names the recipes when an id is missing). A plain table with no env or Minari imports, so both
the loader and the generator read it without importing each other.

Recipes (short name -> id ``seem_ray/<name>-v0``): ``pointmaze-{umaze,medium,large}-
{dense,sparse}``, ``{hopper,halfcheetah,walker2d}-random`` and
``{hopper,halfcheetah,walker2d}-medium-replay``; :mod:`seem_ray.data.generate` says how each
kind is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from seem_ray.data.batches import DataError

__all__ = [
    "D4RL_EXPERT_RETURN",
    "NAMESPACE",
    "RECIPES",
    "VERSION",
    "Recipe",
    "dataset_id_for",
    "find_recipe",
    "recipe_of_id",
]

NAMESPACE = "seem_ray"
VERSION = 0


@dataclass(frozen=True)
class Recipe:
    """How to make one local dataset."""

    name: str
    """Short name; the dataset id is ``seem_ray/<name>-v0``."""
    kind: str
    """'maze' (planner + PD), 'random' (uniform actions) or 'replay' (online TD3 buffer)."""
    env_id: str
    """Gymnasium id of the collecting (and, except for mazes, evaluation) env."""
    episodes: int = 0
    """Maze: episodes collected by default."""
    episode_steps: int = 0
    """Maze: steps per collected episode (the continuing task is cut by a timeout)."""
    steps: int = 0
    """Random/replay: env steps collected by default."""
    ref_max_score: float | None = None
    """Constant expert reference (MuJoCo, from D4RL); None = measure (mazes: the planner)."""
    description: str = ""


D4RL_EXPERT_RETURN = {"hopper": 3234.3, "halfcheetah": 12135.0, "walker2d": 4592.3}
"""D4RL's expert reference returns (normalized score 100) for the MuJoCo locomotion tasks."""

_MAZES = {
    "umaze": ("UMaze", 30, 1000),
    "medium": ("Medium", 40, 2000),
    "large": ("Large", 50, 2500),
}
_MUJOCO = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}


def _build_recipes() -> dict[str, Recipe]:
    out: dict[str, Recipe] = {}
    for maze, (title, episodes, ep_steps) in _MAZES.items():
        for reward in ("dense", "sparse"):
            name = f"pointmaze-{maze}-{reward}"
            suffix = "Dense" if reward == "dense" else ""
            out[name] = Recipe(
                name=name,
                kind="maze",
                env_id=f"PointMaze_{title}{suffix}-v3",
                episodes=episodes,
                episode_steps=ep_steps,
                description=(
                    f"PointMaze {title} ({reward} reward): BFS waypoint planner + PD controller "
                    "with Gaussian action noise, continuing goals (D4RL maze2d style)."
                ),
            )
    for task, env_id in _MUJOCO.items():
        out[f"{task}-random"] = Recipe(
            name=f"{task}-random",
            kind="random",
            env_id=env_id,
            steps=100_000,
            ref_max_score=D4RL_EXPERT_RETURN[task],
            description=f"{env_id}: uniform random policy.",
        )
        out[f"{task}-medium-replay"] = Recipe(
            name=f"{task}-medium-replay",
            kind="replay",
            env_id=env_id,
            steps=30_000,
            ref_max_score=D4RL_EXPERT_RETURN[task],
            description=f"{env_id}: full replay buffer of a short online TD3 run.",
        )
    return out


RECIPES: dict[str, Recipe] = _build_recipes()


def dataset_id_for(name: str) -> str:
    """Recipe short name -> Minari id, e.g. 'hopper-random' -> 'seem_ray/hopper-random-v0'."""
    return f"{NAMESPACE}/{name}-v{VERSION}"


def find_recipe(name: str) -> Recipe:
    """The recipe for a short name or its dataset id; DataError naming the known ones."""
    short = name
    if short.startswith(NAMESPACE + "/"):
        short = short[len(NAMESPACE) + 1 :]
    if short.endswith(f"-v{VERSION}"):
        short = short[: -len(f"-v{VERSION}")]
    if short not in RECIPES:
        raise DataError(f"unknown dataset recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[short]


def recipe_of_id(dataset_id: str) -> Recipe | None:
    """The recipe a dataset id was made from, or None for ids no recipe makes."""
    namespace, _, rest = dataset_id.partition("/")
    name = rest.rsplit("-v", 1)[0]
    if namespace != NAMESPACE or name not in RECIPES:
        return None
    return RECIPES[name]
