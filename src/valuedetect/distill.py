"""Knowledge distillation: a teacher's probabilities on the training arguments as soft targets.

An encoder detector with ``distill_from`` learns from ``(1 - distill_weight) * gold +
distill_weight * teacher`` instead of the gold 0/1 labels. The teacher is a saved detector
(typically an ensemble) or a teacher-scores file written from one by ``valuedetect
teacher-scores``, so the student's main job need not retrain the teacher.

What keeps this honest under the held-out protocol: the teacher must have been trained under it
on exactly the student's fit arguments with the same dev slice, so neither dev (which chooses the
student's epochs and thresholds) nor validation (which scores it) ever reached the student through
the teacher. The check compares the ID digests that every run records. Only training arguments
get teacher scores: never validation, test or the supplementary splits.

Cross-fitting: a teacher scores the arguments it trained on, where its probabilities sit close to
the gold labels and add little to them. K teachers trained with ``cross_fit_folds = K`` and
``cross_fit_fold = 0..K-1`` each leave one fold of the fit split out; ``valuedetect teacher-scores``
given all K scores every fit argument with the one teacher that did not train on it (out of fold).
The folds are recomputed from the training split and checked against what each teacher recorded.

A teacher-scores file is the official run-file layout with probabilities instead of 0/1
(``Argument ID`` then the 20 categories), and a sidecar ``<name>.json`` that says which teacher
made it, under which protocol, and the sha256 of the scores file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import ID_COLUMN, Split, _read_tsv, atomic_write_json, atomic_write_text, read_json_object
from valuedetect.errors import InputError
from valuedetect.protocol import ids_digest
from valuedetect.taxonomy import CATEGORY_NAMES

DECIMALS = 4


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _teacher_protocol(info: dict[str, Any], where: Path) -> dict[str, Any]:
    if info.get("refit"):
        raise InputError("the teacher is a refit (trained on validation too): it cannot teach a held-out student",
                         where)
    protocol = info.get("protocol") or {}
    if not isinstance(protocol, dict) or protocol.get("name") != "heldout" or not protocol.get("fit_ids_sha256"):
        raise InputError("the teacher was not trained under the held-out protocol (its record states no fit and "
                         "dev slice), so it may have learned from the arguments that choose or score the student; "
                         "train the teacher with the default protocol", where)
    return protocol


def check_teacher(protocol: dict[str, Any], train: Split, dev: Split | None, where: Path) -> None:
    """Refuse a teacher that trained on other arguments than the student's fit split, or chose on
    another dev slice: it would carry dev or validation arguments into the student."""
    if dev is None:  # a refit: it has no held-out score to protect
        return
    if protocol.get("dev_ids_sha256") != ids_digest(dev.ids):
        raise InputError(f"the teacher chose on another dev slice (digest {protocol.get('dev_ids_sha256')}, the "
                         f"student's is {ids_digest(dev.ids)}): use the same dev_seed and dev_fraction", where)
    if protocol.get("fit_ids_sha256") != ids_digest(train.ids):
        raise InputError(f"the teacher trained on other arguments (digest {protocol.get('fit_ids_sha256')}, the "
                         f"student's fit split is {ids_digest(train.ids)}): train both on the same split, "
                         "without a training subset", where)


def _load_teacher(folder: Path) -> Any:
    """The teacher, on its fp32 path: soft targets must not depend on this machine's int8 record
    or on VALUEDETECT_INFERENCE. It must label the 20 categories."""
    from valuedetect.detectors import load_detector
    from valuedetect.predictor import set_inference

    teacher = load_detector(folder)
    if teacher.task.name != "values":
        raise InputError(f"the teacher is a detector of the {teacher.task.name} task; a teacher must label the 20 "
                         "value categories", folder)
    set_inference(teacher, "fp32")
    return teacher


def teacher_targets(source: str | Path, train: Split, dev: Split | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's probabilities [n, 20] for ``train``'s arguments, and what to record about it."""
    path = Path(source)
    if path.is_dir():
        teacher = _load_teacher(path)
        protocol = _teacher_protocol(teacher.info, path / "detector.json")
        if "cross_fit" in protocol:
            raise InputError("this teacher is one cross-fitting fold: alone it scores most of the fit split "
                             "in-sample; write out-of-fold scores from all its folds with `valuedetect teacher-scores "
                             "FOLD_0 ... FOLD_K-1 --output FILE` and distil from that file", path)
        check_teacher(protocol, train, dev, path / "detector.json")
        scores = teacher.predict_proba(train.arguments)
        return scores, {"teacher": str(path), "teacher_type": teacher.type_name,
                        "teacher_validation_f1": teacher.info.get("validation_f1")}
    if not path.exists():
        raise InputError("no such teacher: expected a saved detector folder or a teacher-scores file", path)
    if path.suffix == ".json":
        raise InputError("expected a saved detector folder or a teacher-scores .tsv, not a JSON file", path)
    meta = read_sidecar(path)
    protocol = meta.get("protocol")
    if not isinstance(protocol, dict):
        raise InputError("the sidecar states no teacher protocol (a 'protocol' object)", sidecar(path))
    check_teacher(protocol, train, dev, sidecar(path))
    ids, scores = read_teacher_scores(path)
    position = {arg_id: i for i, arg_id in enumerate(ids)}
    missing = [arg_id for arg_id in train.ids if arg_id not in position]
    if missing:
        raise InputError(f"no teacher scores for {len(missing)} of the {len(train)} arguments the student trains on, "
                         f"e.g. {missing[0]!r}", path)
    return scores[[position[i] for i in train.ids]], {
        "teacher": str(path), "teacher_type": meta.get("teacher_type"),
        "teacher_validation_f1": meta.get("teacher_validation_f1"), "teacher_scores_sha256": meta.get("sha256")}


def read_sidecar(path: Path) -> dict[str, Any]:
    meta_path = sidecar(path)
    if not meta_path.exists():
        raise InputError(f"a teacher-scores file needs its sidecar {meta_path.name} (written with it by "
                         "`valuedetect teacher-scores`), which says which teacher made it", path)
    meta = read_json_object(meta_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if meta.get("sha256") != digest:
        raise InputError(f"the scores file does not match its sidecar (sha256 {digest[:16]}..., the sidecar says "
                         f"{str(meta.get('sha256'))[:16]}...): it was changed after it was written", path)
    return meta


def read_teacher_scores(path: Path) -> tuple[list[str], np.ndarray]:
    """IDs and probabilities [n, 20] in the official category order; errors name the line."""
    header, rows = _read_tsv(path, (ID_COLUMN,))
    missing = [name for name in CATEGORY_NAMES if name not in header]
    if missing:
        raise InputError(f"missing value category column {missing[0]!r}", path, 1)
    order = [header.index(name) for name in CATEGORY_NAMES]
    id_col = header.index(ID_COLUMN)
    ids, matrix = [], np.zeros((len(rows), len(CATEGORY_NAMES)), dtype=np.float32)
    seen: set[str] = set()
    for r, (number, fields) in enumerate(rows):
        arg_id = fields[id_col].strip()
        if arg_id in seen:
            raise InputError(f"Argument ID {arg_id!r} appears twice", path, number)
        seen.add(arg_id)
        ids.append(arg_id)
        for c, col in enumerate(order):
            try:
                value = float(fields[col])
            except ValueError:
                value = float("nan")
            if not 0.0 <= value <= 1.0:
                raise InputError(f"value {fields[col][:20]!r} in column {header[col]!r} is not a probability", path,
                                 number)
            matrix[r, c] = value
    return ids, matrix


def _write_scores(output: Path, ids: list[str], scores: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    lines = ["\t".join((ID_COLUMN, *CATEGORY_NAMES))]
    lines += ["\t".join((arg_id, *(f"{v:.{DECIMALS}f}" for v in row))) for arg_id, row in zip(ids, scores, strict=True)]
    text = "\n".join(lines) + "\n"
    atomic_write_text(output, text)
    meta = {**meta, "arguments": len(ids), "decimals": DECIMALS,
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    atomic_write_json(sidecar(output), meta)
    return meta


def write_teacher_scores(teachers: str | Path | list[Path], split: Split, output: str | Path) -> dict[str, Any]:
    """Score ``split`` (the training split) with the teacher, or out of fold with K cross-fitted
    teachers; write the scores file and its sidecar."""
    folders = [Path(t) for t in teachers] if isinstance(teachers, list) else [Path(teachers)]
    output = Path(output)
    if output.suffix == ".json":
        raise InputError("the scores file must not end in .json: its sidecar is written beside it as NAME.json", output)
    if split.name != "training":
        raise InputError(f"teacher scores are written for the training split only, not {split.name!r} (the other "
                         "splits are evaluation data)")
    if not folders:
        raise InputError("no teacher given")
    loaded = [(folder, _load_teacher(folder)) for folder in folders]
    protocols = [_teacher_protocol(teacher.info, folder / "detector.json") for folder, teacher in loaded]
    if len(loaded) > 1 or "cross_fit" in protocols[0]:
        return _write_cross_fit_scores(loaded, protocols, split, output)
    folder, teacher = loaded[0]
    return _write_scores(output, split.ids, teacher.predict_proba(split.arguments), {
        "what": "a teacher's probabilities on the training arguments, soft targets for distillation",
        "teacher": str(folder), "teacher_type": teacher.type_name, "base_model": teacher.base_model,
        "members": teacher.info.get("members"), "protocol": protocols[0],
        "teacher_dev_f1": teacher.info.get("dev_f1"), "teacher_validation_f1": teacher.info.get("validation_f1"),
        "split": split.name,
    })


def _recipe(teacher: Any) -> str:
    """What must be the same for every fold's teacher: its kind, base model and settings but the seed."""
    import json

    from valuedetect.config import to_dict

    settings = to_dict(teacher.config)
    settings.pop("seed", None)
    return json.dumps([teacher.type_name, teacher.base_model, settings], sort_keys=True, default=str)


def _write_cross_fit_scores(loaded: list[tuple[Path, Any]], protocols: list[dict[str, Any]], split: Split,
                            output: Path) -> dict[str, Any]:
    """Each fit argument scored by the one teacher whose fold held it out."""
    from valuedetect.protocol import cross_fit_held_out, make_splits

    plans = []
    for (folder, _teacher), protocol in zip(loaded, protocols, strict=True):
        plan = protocol.get("cross_fit")
        if not isinstance(plan, dict):
            raise InputError("several teachers make out-of-fold scores only if each was trained with "
                             "cross_fit_folds and cross_fit_fold; this one was not (to combine whole teachers, "
                             "train an ensemble)", folder / "detector.json")
        plans.append(plan)
    first_folder, first = loaded[0][0], protocols[0]
    folds, seed = plans[0]["folds"], plans[0]["seed"]
    recipe = _recipe(loaded[0][1])
    for (folder, teacher), protocol, plan in zip(loaded, protocols, plans, strict=True):
        for what, mine, theirs in (("number of folds", plan["folds"], folds), ("fold seed", plan["seed"], seed),
                                   ("dev slice", protocol.get("dev_ids_sha256"), first.get("dev_ids_sha256")),
                                   ("fit split", protocol.get("fit_ids_sha256"), first.get("fit_ids_sha256")),
                                   ("recipe (method, model and settings)", _recipe(teacher), recipe)):
            if mine != theirs:
                raise InputError(f"the teachers disagree on the {what} ({mine} here, {theirs} in {first_folder}): "
                                 "train every fold with the same settings", folder / "detector.json")
    got = sorted(plan["fold"] for plan in plans)
    if got != list(range(folds)):
        missing = sorted(set(range(folds)) - set(got))
        twice = sorted({f for f in got if got.count(f) > 1})
        raise InputError(f"out-of-fold scores need one teacher for each of the {folds} folds: "
                         + (f"fold {', '.join(map(str, missing))} missing" if missing else "")
                         + ("; " if missing and twice else "")
                         + (f"fold {', '.join(map(str, twice))} given twice" if twice else ""))
    if split.labels is None:
        raise InputError("the training split has no labels, so its dev slice cannot be recomputed")
    splits = make_splits(split, split, "heldout", float(first["dev_fraction"]), int(first["dev_seed"]))
    fit = splits.fit
    if ids_digest(fit.ids) != first.get("fit_ids_sha256") or ids_digest(splits.dev.ids) != first.get("dev_ids_sha256"):
        raise InputError("the teachers' fit and dev split are not those of this training split (its digests "
                         "differ): were they trained on other data?", first_folder / "detector.json")
    scores = np.full((len(fit), len(CATEGORY_NAMES)), np.nan, dtype=np.float32)
    teachers = []
    for (folder, teacher), plan in zip(loaded, plans, strict=True):
        rows = cross_fit_held_out(fit, folds, int(plan["fold"]), int(seed))
        if ids_digest([fit.ids[i] for i in rows]) != plan.get("held_out_ids_sha256"):
            raise InputError(f"fold {plan['fold']} recomputed here is not the fold this teacher left out: it may "
                             "have trained on the arguments it would score", folder / "detector.json")
        scores[rows] = teacher.predict_proba([fit.arguments[i] for i in rows])
        teachers.append({"teacher": str(folder), "fold": plan["fold"], "arguments": len(rows),
                         "teacher_type": teacher.type_name, "base_model": teacher.base_model,
                         "teacher_dev_f1": teacher.info.get("dev_f1"),
                         "teacher_validation_f1": teacher.info.get("validation_f1")})
    assert not np.isnan(scores).any(), "the folds do not cover the fit split"
    val_f1 = [t["teacher_validation_f1"] for t in teachers if t["teacher_validation_f1"] is not None]
    _folder, teacher = loaded[0]
    return _write_scores(output, fit.ids, scores, {
        "what": f"out-of-fold probabilities of {folds} cross-fitted teachers on the fit arguments, soft targets "
                "for distillation",
        "teacher": ", ".join(str(folder) for folder, _ in loaded), "teacher_type": f"cross-fit ({teacher.type_name})",
        "base_model": teacher.base_model, "teachers": teachers,
        # the student checks these digests: the same dev slice, and a fit split the scores cover
        "protocol": {key: first.get(key) for key in ("name", "optimistic", "dev_fraction", "dev_seed",
                                                     "dev_arguments", "dev_ids_sha256", "fit_arguments",
                                                     "fit_ids_sha256")}
        | {"cross_fit": {"folds": folds, "seed": seed}},
        "teacher_validation_f1": round(float(np.mean(val_f1)), 4) if val_f1 else None,
        "teacher_validation_f1_note": f"mean over the {folds} fold teachers",
        "split": f"{split.name} (the fit split, out of fold)",
    })
