"""The Python API's functions: ``load``, ``train`` and ``evaluate``, the library side of the
``predict``, ``train`` and ``evaluate`` commands (the command line parses and calls these)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from valuedetect.config import TrainConfig
from valuedetect.data import Split
from valuedetect.errors import InputError
from valuedetect.metrics import Scores
from valuedetect.predictor import ValueDetector


def load(name_or_path: str | Path | None = None, base_model: str | None = None,
         inference: str | None = None) -> ValueDetector:
    """The shipped detector, a shipped one by name, or a saved detector folder.

    ``base_model``: where the detector's base model is on this machine, when the one it records
    is not here (it must have the recorded weights). ``inference``: ``"fp32"`` forces the fp32
    path; by default (``"auto"``) an encoder detector predicts through int8 where its recorded
    check kept the official F1 within 0.005 of fp32 (``valuedetect.encoder.int8``)."""
    return ValueDetector.from_pretrained(name_or_path, base_model=base_model, inference=inference)


def predict_dataset(source: str | Path, output: str | Path, model: ValueDetector | str | Path | None = None, *,
                    address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
                    batch_size: int = 256, output_format: str | None = None, **columns: Any) -> Any:
    """Label ``source`` into ``output`` on Ray Data with ``model`` (a ValueDetector, a saved
    folder or a shipped name; default the shipped detector): ``ValueDetector.predict_dataset``."""
    detector = model if isinstance(model, ValueDetector) else load(model)
    return detector.predict_dataset(source, output, address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                                    batch_size=batch_size, output_format=output_format, **columns)


def _normalise_template(settings: dict[str, Any]) -> dict[str, Any]:
    """The paper writes BCA, CLS, ...; the built-in template names are lower case."""
    template = settings.get("template")
    if isinstance(template, str):
        from valuedetect.templates import INPUT_TEMPLATES, NLI_TEMPLATES, PROMPT_TEMPLATES

        if template.lower() in {*INPUT_TEMPLATES, *PROMPT_TEMPLATES, *NLI_TEMPLATES}:
            settings = {**settings, "template": template.lower()}
    return settings


def train_config(config_or_method: str | Path | TrainConfig, detector: dict[str, Any] | None = None,
                 overrides_source: str = "the given settings", **run_settings: Any) -> TrainConfig:
    """A checked training config from a TOML file, a TrainConfig or a method name, with detector
    settings and run settings (``output``, ``data_dir``, ``protocol``, ``validation_limit``, ...:
    the fields of TrainConfig) laid over it. A bad key is reported like a bad config key."""
    from valuedetect.config import check_detector_settings, from_dict, load_train_config, to_dict
    from valuedetect.detectors import METHODS, detector_class

    if isinstance(config_or_method, TrainConfig):
        base = config_or_method
    elif isinstance(config_or_method, Path) or str(config_or_method).endswith(".toml") \
            or (str(config_or_method) not in METHODS and Path(config_or_method).exists()):
        base = load_train_config(config_or_method)
    else:
        method = str(config_or_method)
        detector_class(method)  # an unknown method is named before anything else
        base = TrainConfig(method=method, predict_test=method != "llm")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in run_settings.items() if v is not None}
    overrides = _normalise_template(detector or {})
    if not settings and not overrides:
        return base
    raw = {**to_dict(base), **settings, "detector": {**base.detector, **overrides}}
    if "validation_limit" in settings or "validation_sample" in settings:
        # One subset: naming one replaces the config's other.
        raw["validation_limit"] = settings.get("validation_limit")
        raw["validation_sample"] = settings.get("validation_sample")
    config = from_dict(TrainConfig, raw, overrides_source)
    check_detector_settings(config, overrides_source, where=overrides_source)
    return config


def train(config_or_method: str | Path | TrainConfig, *, detector: dict[str, Any] | None = None,
          resume: bool = False, progress: Callable[[str, int, int], None] | None = None,
          log: Callable[[str], None] | None = None, overrides_source: str = "the given settings",
          **run_settings: Any) -> ValueDetector:
    """Train as ``valuedetect train`` does: under the held-out protocol (choose on a dev slice of
    training, score validation once), writing the detector and its runs to ``output``.

    ``config_or_method``: a TOML config (see configs/), a TrainConfig, or a method name with its
    default settings; ``detector``: detector settings over the config's. The returned detector's
    ``training`` holds the scores, the protocol and the files written."""
    from valuedetect.detectors import METHODS
    from valuedetect.training import run_training

    config = train_config(config_or_method, detector, overrides_source, **run_settings)
    if isinstance(config_or_method, TrainConfig):
        source = "TrainConfig"
    else:
        source = str(config_or_method) if str(config_or_method) not in METHODS else f"--method {config_or_method}"
    result = run_training(config, source=source, resume=resume, progress=progress, log=log)
    folder = Path(config.output or f"runs/{config.method}")
    return ValueDetector(result.detector, folder, training=result)


def _as_labels(value: Any, what: str) -> tuple[list[str], Any]:
    from valuedetect.data import read_labels
    from valuedetect.frames import label_matrix

    if isinstance(value, Split):
        if value.labels is None:
            raise InputError(f"the {value.name} split has no labels")
        return value.ids, value.labels
    if isinstance(value, str | Path):
        return read_labels(value)
    return label_matrix(value, what)


def evaluate(run: Any, labels: Any, *, bootstrap: int = 1000, seed: int = 0, run_ids_only: bool = False) -> Scores:
    """The official scores of ``run`` against ``labels``.

    Each may be a file (an official run or labels TSV) or a DataFrame with the 20 category
    columns of 0/1 and the IDs as index (what ``predict`` returns); ``labels`` may also be a
    Split with labels (``valuedetect.load_split("validation")``)."""
    from valuedetect.evaluation import align_run, score_run_file
    from valuedetect.metrics import score

    if isinstance(run, str | Path) and isinstance(labels, str | Path):
        return score_run_file(run, labels, bootstrap=bootstrap, seed=seed, run_ids_only=run_ids_only)
    label_ids, truth = _as_labels(labels, "labels")
    run_ids, predicted = _as_labels(run, "run")
    truth, aligned = align_run(run_ids, predicted, label_ids, truth, run_ids_only,
                               run if isinstance(run, str | Path) else None)
    return score(truth, aligned, bootstrap=bootstrap, seed=seed)


__all__ = ["evaluate", "load", "predict_dataset", "train", "train_config"]
