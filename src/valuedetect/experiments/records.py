"""One record per finished (or failed) run of an experiment: what the report reads.

Layout of a results folder written by ``valuedetect experiment run``::

    RESULTS/
      experiment.json          name, the config file, the run names in grid order
      <run name>/
        record.json            a RunRecord (below)
        run/                   the training output: detector, dev-run.tsv, validation-run.tsv,
                               validation-scores.npy, test-run.tsv, results.json (NLI runs:
                               dev-, validation- and test-predictions.tsv instead of the run files)

A record is written only when its run has ended, atomically, so a killed experiment leaves
either a complete record or none, and the runner knows what to skip when it resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from valuedetect.data import atomic_write_json
from valuedetect.errors import InputError
from valuedetect.tasks import TASKS as TASK_NAMES

RECORD_FILE = "record.json"
EXPERIMENT_FILE = "experiment.json"
RUN_FOLDER = "run"
TASKS = TASK_NAMES  # valuedetect.tasks: the value categories, the NLI side task
FAMILIES = ("baseline", "fine-tuning", "prompt-zero-shot", "prompt-tuning", "llm-prompting")


def spec_hash(spec: dict[str, Any]) -> str:
    """A short fingerprint of a run's resolved settings: a record made with other settings is stale."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class RunRecord:
    """Everything a reported number depends on, next to the number.

    ``validation`` (task "values") is ``metrics.Scores.to_dict()``: official f1, precision,
    recall, mean_f1 (labelled as not official), per_category, ci95, n. For task "nli" it is
    ``nli.NLIScores.to_dict()``: ``{"accuracy", "ci95", "macro_f1", "n"}`` (``dev`` the same without
    an interval). ``outputs`` holds paths relative to the run's folder: dev_run, validation_run,
    test_run (values) or dev_predictions, validation_predictions, test_predictions (nli), and
    validation_scores, results; a missing output is None.
    """

    name: str
    status: str  # done | failed
    group: str = ""  # the configuration this run is a seed of (its name without the seed suffix)
    task: str = "values"
    family: str = "fine-tuning"
    method: str = ""
    model: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # the resolved run settings (TrainConfig as a dict)
    spec_hash: str = ""
    error: str | None = None
    started: str = ""
    finished: str = ""
    wall_seconds: float = 0.0
    train_seconds: float | None = None
    inference_seconds: float | None = None
    peak_rss_mib: float | None = None
    seed: int | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    parameters_trainable: int | None = None
    parameters_total: int | None = None
    training_arguments: int | None = None
    training_subset: str | None = None
    validation_subset: str | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    # The protocol (valuedetect.protocol): what chose, what was scored; dev scores are in-sample
    # for what was chosen on dev. compute: CPU-seconds of training and of scoring validation.
    protocol: dict[str, Any] = field(default_factory=dict)
    dev: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None  # protocol.TrainingStandard; None for methods that train nothing
    detector_config: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group = self.group or self.name

    @property
    def done(self) -> bool:
        return self.status == "done"

    def save(self, folder: str | Path) -> None:
        atomic_write_json(Path(folder) / RECORD_FILE, asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> RunRecord:
        path = Path(folder) / RECORD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("no record.json: this run has not finished", folder) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"record.json is not valid JSON ({error})", path) from None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise InputError("record.json is not a run record (expected an object with a name)", path)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_records(results: str | Path) -> list[RunRecord]:
    """All records of a results folder, in the experiment's grid order where it is known."""
    results = Path(results)
    if not results.is_dir():
        raise InputError("no such results folder", results)
    order: list[str] = []
    meta = results / EXPERIMENT_FILE
    if meta.exists():
        order = list(json.loads(meta.read_text(encoding="utf-8")).get("runs", []))
    folders = sorted(p.parent for p in results.glob(f"*/{RECORD_FILE}"))
    if order:  # runs of the grid as it is now; folders set aside (stale, removed runs) are not
        folders = [p for p in folders if p.name in order]
    rank = {name: i for i, name in enumerate(order)}
    folders.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    records = [RunRecord.load(p) for p in folders]
    return [r for r, p in zip(records, folders, strict=True) if r.name == p.name]


__all__ = ["EXPERIMENT_FILE", "FAMILIES", "RECORD_FILE", "RUN_FOLDER", "TASKS", "RunRecord", "read_records",
           "spec_hash"]
