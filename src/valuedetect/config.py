"""Dataclass configs built from TOML or dicts, with errors that name the key and the file.

We validate by hand against the dataclass fields instead of pulling in pydantic: the configs
are flat, the types are few (bool, int, float, str, lists of them, optional values), and the
error messages can then say exactly which key in which file is wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from valuedetect.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    values = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        values[key] = _coerce(value, hints[key], f"{source}: key {key!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {error}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a TOML config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None


# What a refit trains on: everything labelled (a detector to ship, no held-out score), or training
# alone, which leaves validation held out and so measures the refit.
REFIT_DATA = ("training+validation", "training")


@dataclasses.dataclass
class TrainConfig:
    """A training run: which task and method, its settings, where data and outputs live."""

    method: str
    detector: dict[str, Any] = dataclasses.field(default_factory=dict)
    # What the detector learns (valuedetect.tasks): "values" (the 20 categories) or "nli" (does
    # the premise support the conclusion; the label is the stance).
    task: str = "values"
    data_dir: str | None = None
    output: str | None = None
    predict_test: bool = True
    # A seeded subset of validation, for methods too slow to score all 1896 arguments
    # (LLM prompting on a CPU); every report of such a run states the subset.
    validation_limit: int | None = None
    validation_sample: float | None = None
    subset_seed: int = 0
    # Less training data, for few-shot and data-size experiments: k arguments per category
    # (seeded; an argument counts for every category it has), or a seeded fraction.
    training_per_category: int | None = None
    training_fraction: float | None = None
    # Cross-fitting (valuedetect.distill): train on the fit split minus fold ``cross_fit_fold`` of
    # ``cross_fit_folds`` (grouped by conclusion, seeded by subset_seed), so that the K fold runs
    # together give every fit argument a teacher score from a model that never trained on it.
    cross_fit_folds: int | None = None
    cross_fit_fold: int | None = None
    # The evaluation protocol (valuedetect.protocol): "heldout" chooses on a dev slice of
    # training and scores validation once; "paper" chooses and scores on validation (optimistic).
    protocol: str = "heldout"
    dev_fraction: float = 0.15
    dev_seed: int = 0
    # A seeded subset of the dev slice to choose on, for methods whose every scored argument is
    # costly (LLM prompting); training still leaves out the whole slice.
    dev_limit: int | None = None
    # After the held-out run, fit once more on training + validation with the epochs and
    # thresholds chosen on dev (valuedetect.refit), into output/refit: a detector to ship, with
    # no held-out score of its own. refit_data = "training" refits on training alone (the dev
    # slice added back) and scores validation with it, held out: what the refit's extra data buys.
    refit: bool = False
    refit_data: str = "training+validation"

    def __post_init__(self) -> None:
        from valuedetect.protocol import PROTOCOLS
        from valuedetect.tasks import get_task

        try:
            get_task(self.task).check_method(self.method)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        if self.task != "values" and self.training_per_category is not None:
            raise ValueError(f"training_per_category picks arguments per value category; the {self.task} task "
                             "takes training_fraction instead")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        if self.refit_data not in REFIT_DATA:
            raise ValueError(f"refit_data must be one of {', '.join(REFIT_DATA)}, not {self.refit_data!r}")
        if self.refit_data != REFIT_DATA[0] and not self.refit:
            raise ValueError(f"refit_data = {self.refit_data!r} is read only with refit = true")
        if self.refit_data == "training":
            if self.protocol != "heldout":
                raise ValueError("refit_data = 'training' measures the refit on validation, held out; under the "
                                 f"{self.protocol} protocol validation chose the thresholds, so nothing would be")
            subsets = [k for k in ("training_per_category", "training_fraction", "validation_limit",
                                   "validation_sample") if getattr(self, k) is not None]
            if subsets:
                raise ValueError(f"refit_data = 'training' refits on all of training and scores all of validation; "
                                 f"it does not combine with {', '.join(subsets)}")
        if self.refit and self.task != "values":
            raise ValueError(f"refit makes a value detector to ship; the {self.task} task has none")
        if not 0 < self.dev_fraction < 1:
            raise ValueError("dev_fraction must be in (0, 1)")
        if self.dev_limit is not None and self.dev_limit < 1:
            raise ValueError("dev_limit must be at least 1")
        if self.training_per_category is not None and self.training_per_category < 1:
            raise ValueError("training_per_category must be at least 1")
        if self.training_fraction is not None and not 0 < self.training_fraction <= 1:
            raise ValueError("training_fraction must be in (0, 1]")
        if self.training_per_category is not None and self.training_fraction is not None:
            raise ValueError("give training_per_category or training_fraction, not both")
        if (self.cross_fit_folds is None) != (self.cross_fit_fold is None):
            raise ValueError("give cross_fit_folds and cross_fit_fold together (the number of folds, and the one "
                             "this run leaves out)")
        if self.cross_fit_folds is not None:
            assert self.cross_fit_fold is not None
            if self.cross_fit_folds < 2:
                raise ValueError("cross_fit_folds must be at least 2")
            if not 0 <= self.cross_fit_fold < self.cross_fit_folds:
                raise ValueError(f"cross_fit_fold must lie in 0..{self.cross_fit_folds - 1}, not {self.cross_fit_fold}")
            if self.protocol != "heldout":
                raise ValueError("cross-fitting leaves a fold of the fit split out; the held-out protocol has one "
                                 f"(the {self.protocol} protocol does not)")
            clashes = [k for k in ("training_per_category", "training_fraction") if getattr(self, k) is not None]
            if clashes or self.refit:
                raise ValueError("cross-fitting leaves one fold out of all of the fit split; it does not combine with "
                                 f"{', '.join(clashes) or 'refit'}")
            if self.task != "values":
                raise ValueError(f"cross-fitting makes teacher scores for value detectors; the {self.task} task "
                                 "has none")
        if self.validation_limit is not None and self.validation_limit < 1:
            raise ValueError("validation_limit must be at least 1")
        if self.validation_sample is not None and not 0 < self.validation_sample <= 1:
            raise ValueError("validation_sample must be in (0, 1]")
        if self.validation_limit is not None and self.validation_sample is not None:
            raise ValueError("give validation_limit or validation_sample, not both")


# Keys added to TrainConfig after runs were recorded, at the value every earlier run had: a hash
# or fingerprint of settings leaves them out at that value, so a run recorded (or checkpointed)
# before the key existed still matches its settings and is neither rerun nor refused on resume.
LATER_KEYS: dict[str, Any] = {"task": "values", "refit": False, "refit_data": "training+validation",
                              "cross_fit_folds": None, "cross_fit_fold": None}


def stable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Run settings as hashes and fingerprints read them (see ``LATER_KEYS``)."""
    return {k: v for k, v in settings.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training config; the detector table is validated by the method's own config."""
    raw = read_toml(path)
    config = from_dict(TrainConfig, raw, str(path))
    check_detector_settings(config, str(path))
    return config


def check_detector_settings(config: TrainConfig, source: str, where: str | None = None) -> None:
    """Validate the detector table for the config's method and task (building nothing heavy)."""
    from valuedetect.detectors import make_detector

    make_detector(config.method, config.detector, source, task=config.task, where=where)
