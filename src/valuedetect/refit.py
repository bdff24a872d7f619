"""The optional refit of a detector meant to ship: once dev has fixed the recipe (epochs,
thresholds), fit once more on all of training plus validation (7289 arguments instead of 4561).

Nothing labelled is left to score such a refit on, so it has no held-out figure: its folder says
so, and its validation F1 is never reported (validation is in its training data). The held-out
figures of the recipe are those of the run it was refitted from.

What refitting buys can still be measured: ``refit_data = "training"`` refits on all of training
(the dev slice added back, 5393 arguments) and scores validation once with it. Validation stays
out of everything that refit saw or chose, so that score is held out, and the difference from the
run it was refitted from is the gain of the extra data under the same choices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.compute import LEDGER, ComputeLedger
from valuedetect.config import TrainConfig
from valuedetect.data import Split, atomic_write_json, load_split, write_labels, write_run
from valuedetect.detectors import make_detector
from valuedetect.detectors.base import Detector
from valuedetect.errors import InputError

REFIT_FOLDER = "refit"
REFIT_FILE = "refit.json"  # written last: a refit folder holding it is finished


def joined(*splits: Split) -> Split:
    """One split of several (labels stacked), in the order given."""
    labels = [s.labels for s in splits]
    if any(label is None for label in labels):
        raise ValueError("every split of a refit needs labels")
    level1 = [s.level1_labels for s in splits]
    return Split(name=" + ".join(s.name for s in splits), arguments=[a for s in splits for a in s.arguments],
                 labels=np.concatenate(labels),  # type: ignore[arg-type]
                 level1_labels=None if any(x is None for x in level1) else np.concatenate(level1))  # type: ignore[arg-type]


def refit(chosen: Detector, config: TrainConfig, output: Path, resume: bool = False,
          progress: Callable[[str, int, int], None] | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit ``config``'s method on training + validation (or, with ``refit_data = "training"``, on
    training alone, then score validation) with what ``chosen`` fixed on dev, save it in
    ``output/refit`` with its test run, and return what ``refit.json`` holds."""
    folder = output / REFIT_FOLDER
    say = log or (lambda _message: None)
    fixed = chosen.refit_settings()
    detector = make_detector(config.method, {**config.detector, **fixed}, "refit")
    detector.progress, detector.log = progress, log
    detector.checkpoint_dir, detector.resume = folder / "checkpoint", resume
    # level-1 labels ride along, as in the held-out run (a detector trained on them needs them)
    train = load_split("training", config.data_dir, level1=True)
    validation = load_split("validation", config.data_dir, level1=True)
    held_out = config.refit_data == "training"
    data = train if held_out else joined(train, validation)
    what = f"all {len(train)} of training, validation held out" if held_out else \
        f"all {len(train)} of training and {len(validation)} of validation"
    say(f"refit: {len(data)} arguments ({what}) with the recipe fixed on dev: {fixed or 'no trained choice'}, "
        "thresholds as chosen there")
    folder.mkdir(parents=True, exist_ok=True)
    # every process that worked on the refit counts (a resumed one adds to the ledger)
    with ComputeLedger(folder / LEDGER, fresh=not resume) as ledger:
        detector.fit(data)  # no dev: nothing is chosen here
    detector.thresholds = chosen.thresholds
    detector.level1_thresholds = getattr(chosen, "level1_thresholds", None)
    seconds, cpu_seconds = ledger.wall_seconds, ledger.cpu_seconds
    record: dict[str, Any] = {
        "refit_of": str(output),
        "refit_data": config.refit_data,
        "fixed_on_dev": fixed,
        "thresholds": "as chosen on dev by the run refitted from",
        "training_arguments": len(data),
        "data": f"training ({len(train)}, the dev slice included)" +
                ("" if held_out else f" + validation ({len(validation)})"),
        "held_out": None,
        "note": "validation is in this detector's training data: it has no held-out score; the held-out "
                "figures of its recipe are those of the run it was refitted from",
        "compute": {"train_cpu_seconds": round(cpu_seconds, 1), "train_seconds": round(seconds, 1)},
    }
    if held_out:
        record.update(_score_validation(detector, validation, folder, chosen.config))
    detector.info.update(refit=record)
    detector.save(folder)
    if config.predict_test:
        try:
            test = load_split("test", config.data_dir)
        except InputError:  # no test split shipped: nothing to label
            test = None
        if test is not None:
            write_run(folder / "test-run.tsv", test.ids, detector.predict(test.arguments))
            record["test_run"] = str(folder / "test-run.tsv")
    checkpoint = folder / "checkpoint"
    if checkpoint.is_dir():
        import shutil

        shutil.rmtree(checkpoint)
    atomic_write_json(folder / REFIT_FILE, record)
    return record


def _score_validation(detector: Detector, validation: Split, folder: Path, chosen_config: Any) -> dict[str, Any]:
    """Score validation once with a refit that never saw it; the run files and figures it adds to
    ``refit.json``."""
    from valuedetect.metrics import ranking_auc, score

    assert validation.labels is not None
    started, cpu = time.time(), time.process_time()
    raw, level1 = detector.predict_proba_levels(validation.arguments)
    seconds, cpu_seconds = time.time() - started, time.process_time() - cpu
    decided = detector.decide(raw)
    write_run(folder / "validation-run.tsv", validation.ids, decided)
    np.save(folder / "validation-scores.npy", raw.astype(np.float32))
    scores = score(validation.labels, decided, bootstrap=1000, seed=getattr(chosen_config, "seed", 0))
    added: dict[str, Any] = {
        "held_out": {"split": "validation", "arguments": len(validation),
                     "validation": {**scores.to_dict(), "ranking_auc": ranking_auc(validation.labels, raw)}},
        "note": "refitted on training alone (the dev slice added back to the arguments the recipe trained on) "
                "with the epochs and thresholds dev chose; validation was not seen by it or by any choice, "
                "so its validation score is held out",
        "validation_run": "validation-run.tsv",
        "validation_cpu_seconds": round(cpu_seconds, 1),
        "validation_seconds": round(seconds, 1),
    }
    if level1 is not None and validation.level1_labels is not None:
        level1_decided = detector.decide_level1(level1)
        write_labels(folder / "validation-level1-run.tsv", validation.ids, level1_decided, level=1)
        added["held_out"]["level1"] = score(validation.level1_labels, level1_decided).to_dict()
    return added


__all__ = ["REFIT_FILE", "REFIT_FOLDER", "joined", "refit"]
