"""Experiment configs: a TOML file naming a grid of runs, expanded into resolved run specs.

::

    name = "quick"
    results = "runs/experiments/quick"     # where records go (a command-line --results wins)

    [defaults]                             # applied to every run (training-config keys)
    predict_test = false

    [[run]]
    name = "minilm-{training_per_category}"
    config = "configs/default.toml"        # optional base training config
    family = "fine-tuning"                 # optional: derived from the method otherwise
    [run.detector]
    epochs = 2
    [run.grid]                             # one run per combination, in the order given
    training_per_category = [5, 50]
    "detector.model" = ["minilm", "mpnet"]
    # a table value merges into the table: detector = [{model = "minilm"}, {model = "mpnet", epochs = 2}]

``seeds = [13, 14, 15]`` (in a run or in ``[defaults]``) repeats each configuration once per
seed, as runs ``<name>-s<seed>`` with ``detector.seed`` set; the report groups them back into one
configuration (mean and spread over seeds). A configuration is what a run's name says before
the seed suffix.

Settings merge in this order, later winning: the base config file, ``[defaults]``, the run's
own keys, its grid values. Detector tables merge key by key. ``task = "nli"`` makes a run learn
the NLI side task (``valuedetect.nli``) instead of the value categories, with the same training-config
keys (``method``, ``[run.detector]``, subsets, protocol). Everything is validated before the first
run starts, so a typo cannot fail the grid an hour in.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valuedetect.config import TrainConfig, check_detector_settings, from_dict, read_toml, stable_settings, to_dict
from valuedetect.errors import ConfigError
from valuedetect.experiments.records import FAMILIES, TASKS, spec_hash

_RUN_KEYS = {"name", "config", "family", "task", "grid", "seeds"}
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class RunSpec:
    """One run of the grid, fully resolved: what the worker executes and the record stores."""

    name: str
    task: str
    family: str
    settings: dict[str, Any]  # TrainConfig fields
    group: str = ""  # the configuration: the run's name without its seed suffix
    seed: int | None = None  # set when the experiment repeats the configuration over seeds

    def __post_init__(self) -> None:
        self.group = self.group or self.name

    @property
    def hash(self) -> str:
        return spec_hash({"task": self.task, "settings": stable_settings(self.settings)})

    @property
    def model(self) -> str | None:
        detector = self.settings.get("detector", {})
        model = detector.get("model", (detector.get("member") or {}).get("model"))
        return str(model) if model is not None else None


@dataclass
class Experiment:
    name: str
    path: Path
    results: Path
    runs: list[RunSpec] = field(default_factory=list)
    description: str = ""
    # A configuration (a run's group name) that the report compares every other one with, instead
    # of the best run: an ablation study's baseline recipe.
    reference: str | None = None


def family_of(method: str, detector: dict[str, Any]) -> str:
    """The comparison family a run belongs to, when its config does not say."""
    if method == "ensemble":  # an ensemble belongs to its members' family
        return family_of(str(detector.get("method", "encoder")), detector.get("member") or {})
    if method == "encoder":
        return "fine-tuning"
    if method == "prompt":
        return "prompt-tuning" if detector.get("soft_prompt_tokens", 0) else "prompt-zero-shot"
    if method == "llm":
        return "llm-prompting"
    return "baseline"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_dotted(settings: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b`` in nested tables; a table value merges into the table already there."""
    parts = key.split(".")
    target = settings
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"grid key {key!r}: {part!r} is not a table")
    if isinstance(value, dict) and isinstance(target.get(parts[-1]), dict):
        target[parts[-1]] = _merge(target[parts[-1]], value)
    else:
        target[parts[-1]] = copy.deepcopy(value)


def _get_dotted(settings: dict[str, Any], key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _resolve_path(raw: str, experiment_path: Path) -> Path:
    """A config path as written: from the current folder, else from the experiment file's folder
    or the one above it (so ``configs/x.toml`` works from the repository root or beside it)."""
    path = Path(raw)
    if path.is_absolute():
        return path
    for base in (Path.cwd(), experiment_path.parent, experiment_path.parent.parent):
        if (base / path).exists():
            return base / path
    return path


def _grid_points(grid: dict[str, Any], where: str) -> list[dict[str, Any]]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid key {key!r} needs a non-empty list of values")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def _run_name(template: str, point: dict[str, Any], settings: dict[str, Any]) -> str:
    """``{key}`` placeholders take the run's resolved settings (dotted keys reach into tables);
    scalar grid values no placeholder names are appended, so grid runs never share a name."""
    name = template
    for key in re.findall(r"\{([^{}]+)\}", template):
        value = _get_dotted(settings, key)
        if value is None:
            raise ConfigError(f"run name {template!r}: no setting {key!r} to fill in")
        name = name.replace("{" + key + "}", str(value))
    unused = [str(v) for k, v in point.items() if "{" + k + "}" not in template and not isinstance(v, dict)]
    return "-".join([name, *unused]) if unused else name


# What NLI runs took before they became training configs, and where each key went.
_OLD_NLI_KEYS = {"model": "detector.model", "epochs": "detector.epochs", "batch_size": "detector.batch_size",
                 "lr": "detector.lr", "max_length": "detector.max_length", "warmup": "detector.warmup",
                 "seed": "detector.seed", "template": "detector.template", "verbalizer": "detector.verbalizer",
                 "soft_prompt_tokens": "detector.soft_prompt_tokens", "prompt_init": "detector.prompt_init",
                 "max_steps": "detector.max_steps (prompt)", "max_seconds": "detector.max_seconds (prompt)",
                 "training_limit": "training_fraction"}


def _validate_settings(task: str, settings: dict[str, Any], where: str) -> TrainConfig:
    if task == "nli":
        moved = [f"{k} -> {_OLD_NLI_KEYS[k]}" for k in settings if k in _OLD_NLI_KEYS]
        if moved:
            raise ConfigError(f"{where}: NLI runs take training-config keys now (the same as value runs): "
                              f"{'; '.join(moved)}")
    config = from_dict(TrainConfig, settings, where)
    check_detector_settings(config, where)
    return config


def load_experiment(path: str | Path, results: str | Path | None = None) -> Experiment:
    """Read, expand and validate an experiment config (every run, before anything runs)."""
    path = Path(path)
    raw = read_toml(path)
    known = {"name", "results", "description", "reference", "defaults", "run"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    runs_raw = raw.get("run")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise ConfigError(f"{path}: no runs; add at least one [[run]] table")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    default_seeds = _seeds(defaults.pop("seeds", None), f"{path}: [defaults]")
    name = str(raw.get("name") or path.stem)
    folder = Path(results) if results is not None else Path(raw.get("results") or f"runs/experiments/{name}")
    reference = raw.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ConfigError(f"{path}: reference must be the name of one of its [[run]] entries, not {reference!r}")
    experiment = Experiment(name=name, path=path, results=folder, description=str(raw.get("description", "")),
                            reference=reference)
    seen: dict[str, str] = {}
    for number, entry in enumerate(runs_raw, 1):
        where = f"{path}: run {number}"
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigError(f"{where}: every [[run]] needs a name")
        where = f"{path}: run {entry['name']!r}"
        task = entry.get("task")
        if task is not None and task not in TASKS:
            raise ConfigError(f"{where}: task must be one of {', '.join(TASKS)}, not {task!r}")
        grid = entry.get("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"{where}: grid must be a table of lists")
        base: dict[str, Any] = {}
        if entry.get("config"):
            config_path = _resolve_path(str(entry["config"]), path)
            base = read_toml(config_path)
        own = {k: v for k, v in entry.items() if k not in _RUN_KEYS}
        seeds = _seeds(entry["seeds"], where) if "seeds" in entry else default_seeds
        settings = _merge(_merge(base, defaults), own)
        if task is not None:  # the run's own task wins over a base config's or the defaults'
            settings["task"] = task
        points = [(point, seed) for point in (_grid_points(grid, where) if grid else [{}]) for seed in seeds or [None]]
        for point, seed in points:
            resolved = copy.deepcopy(settings)
            for key, value in point.items():
                _set_dotted(resolved, key, value)
            try:
                group = _run_name(str(entry["name"]), point, resolved)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
            run_name = group
            if seed is not None:
                run_name = f"{group}-s{seed}"
                _set_dotted(resolved, "detector.seed", seed)
            run_where = f"{path}: run {run_name!r}"
            if not _NAME_OK.match(run_name):
                raise ConfigError(f"{run_where}: a run name may hold letters, digits and . _ + - only")
            if run_name in seen:
                raise ConfigError(f"{run_where}: two runs have this name (also from {seen[run_name]})")
            seen[run_name] = where
            resolved.pop("output", None)  # the runner decides where each run writes
            config = _validate_settings(str(resolved.get("task", "values")), resolved, run_where)
            data_dir = resolved.get("data_dir")
            if data_dir is not None and not Path(data_dir).is_dir():
                raise ConfigError(f"{run_where}: data_dir {data_dir!r} is not a folder")
            resolved = to_dict(config)
            resolved.pop("output", None)
            family = entry.get("family") or family_of(resolved["method"], resolved["detector"])
            if family not in FAMILIES:
                raise ConfigError(f"{run_where}: family must be one of {', '.join(FAMILIES)}, not {family!r}")
            experiment.runs.append(RunSpec(run_name, config.task, family, resolved, group=group, seed=seed))
    if reference is not None and reference not in {spec.group for spec in experiment.runs}:
        groups = sorted({spec.group for spec in experiment.runs})
        raise ConfigError(f"{path}: reference {reference!r} is not one of its runs ({', '.join(groups)})")
    return experiment


def _seeds(value: Any, where: str) -> list[int] | None:
    """A ``seeds`` setting: a non-empty list of distinct integers, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, not {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: seeds {value!r} repeat a seed")
    return list(value)


__all__ = ["Experiment", "RunSpec", "family_of", "load_experiment"]
