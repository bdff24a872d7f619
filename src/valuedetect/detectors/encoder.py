"""Fine-tuning a pretrained encoder with value-category heads (the paper's Exp-I).

Any transformers encoder works (a Hub name, a local path, or the offline aliases ``minilm`` and
``mpnet``). Only the top ``trainable_layers`` blocks train; the frozen bottom is computed once
per argument and cached, which on a CPU is most of the speed-up over a plain Trainer. A saved
detector holds only the trained blocks and heads (the base model comes from its package), so
a MiniLM detector is a few MB.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.encoder.settings import TrainSettings
from valuedetect.errors import ConfigError, InputError, ValueDetectError
from valuedetect.models import quiet_transformers
from valuedetect.taxonomy import NUM_LEVEL1
from valuedetect.templates import input_template

WEIGHTS_FILE = "trained-weights.safetensors"
INFERENCE_MODES = ("auto", "int8", "fp32")
INFERENCE_VARIABLE = "VALUEDETECT_INFERENCE"  # overrides the saved setting (predict, serve, the API)


@dataclass
class EncoderConfig(DetectorConfig, TrainSettings):
    """Model and input settings; the optimisation settings come from TrainSettings."""

    model: str = "minilm"
    template: str = "plain"
    max_length: int = 128
    pooling: str = "mean"  # mean | cls
    heads: str = "single"  # single | multiple
    head_hidden: int = 0  # hidden units of each binary head (multiple heads only); 0: linear
    dropout: float = 0.1
    trainable_layers: int = 2  # top blocks that train; -1 (or the number of blocks): the whole model
    pos_weight: str = "none"  # none | sqrt | balanced
    save_dtype: str = "float16"  # float16 halves the saved size; scores change < 1e-3
    threads: int = 0  # intra-op threads (torch and ONNX Runtime); 0: one per core this process may use
    # torch's dynamic int8 of the linear layers on the fp32 path (kept for saved detectors; the
    # faster, checked int8 path is ``inference``)
    quantize: bool = False
    # auto: the int8 ONNX Runtime path where a check recorded its official F1 within 0.005 of fp32
    # (valuedetect.encoder.int8), else fp32; int8 / fp32: force one. VALUEDETECT_INFERENCE overrides.
    inference: str = "auto"
    # Also learn the 54 level-1 values (their labels ship with the data) as 54 more outputs of the
    # head: auxiliary targets for the 20 categories, and level-1 predictions with their own
    # thresholds chosen on dev. Early stopping still reads the categories' F1.
    level1: bool = False
    # Distillation (valuedetect.distill): a teacher (a saved detector folder, or a teacher-scores
    # file from `valuedetect teacher-scores`) whose probabilities on the training arguments are
    # mixed into the targets: (1 - distill_weight) * gold + distill_weight * teacher.
    distill_from: str = ""
    distill_weight: float = 0.5
    # random: heads start at PyTorch's default initialisation; descriptions: each linear head
    # starts as the argument's similarity to its category's description (valuedetect.encoder.label_init)
    head_init: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError("distill_weight must lie in [0, 1]")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")
        if self.heads not in ("single", "multiple"):
            raise ValueError(f"heads must be 'single' or 'multiple', not {self.heads!r}")
        if self.pos_weight not in ("none", "sqrt", "balanced"):
            raise ValueError(f"pos_weight must be none, sqrt or balanced, not {self.pos_weight!r}")
        if self.save_dtype not in ("float16", "float32", "bfloat16"):
            raise ValueError(f"save_dtype must be float16, bfloat16 or float32, not {self.save_dtype!r}")
        if self.trainable_layers == 0 or self.trainable_layers < -1:
            raise ValueError("trainable_layers must be -1 (all) or a positive number of top layers")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.head_init not in ("random", "descriptions"):
            raise ValueError(f"head_init must be random or descriptions, not {self.head_init!r}")
        if self.head_init == "descriptions" and self.heads == "multiple" and self.head_hidden > 0:
            raise ValueError("head_init = 'descriptions' needs linear heads: set head_hidden = 0")
        if self.inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be auto, int8 or fp32, not {self.inference!r}")




class EncoderDetector(Detector):
    type_name = "encoder"
    config_class = EncoderConfig
    config: EncoderConfig

    # -- building ---------------------------------------------------------------------------
    def _build(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from valuedetect.encoder.model import EncoderClassifier, find_blocks
        from valuedetect.models import resolve_model

        c = self.config
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        source = resolve_model(c.model)
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(source)
                backbone_config = AutoConfig.from_pretrained(source)
                if hasattr(backbone_config, "hidden_dropout_prob"):
                    backbone_config.hidden_dropout_prob = c.dropout
                    backbone_config.attention_probs_dropout_prob = c.dropout
                backbone = AutoModel.from_pretrained(source, config=backbone_config)
        except (OSError, ValueError) as error:
            raise ValueDetectError(f"cannot load model {c.model!r} ({source}): {error}") from None
        if c.trainable_layers == -1:
            frozen = 0
        else:
            holder, name = find_blocks(backbone)
            n_blocks = len(getattr(holder, name))
            if c.trainable_layers > n_blocks:
                raise ValueDetectError(f"trainable_layers = {c.trainable_layers}, but {c.model} has {n_blocks}")
            frozen = n_blocks - c.trainable_layers
        torch.manual_seed(c.seed)
        width = self.task.width + (NUM_LEVEL1 if c.level1 else 0)
        self.model = EncoderClassifier(backbone, width, heads=c.heads, pooling=c.pooling,
                                       head_hidden=c.head_hidden, dropout=c.dropout, frozen_layers=frozen)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._int8_state = None  # a new model: the inference path is chosen again

    def check_task(self, where: str) -> None:
        self.task.check_input_template(input_template(self.config.template), where)
        if self.config.level1 and self.task.name != "values":
            raise ConfigError(f"{where}: level1 = true needs the values task, not {self.task.name!r}")

    @property
    def predicts_level1(self) -> bool:
        return self.config.level1

    def _encode(self, arguments: Sequence[Argument]) -> list[list[int]]:
        """Token ids per argument; a template with a second segment (``pair``) is encoded as the
        tokenizer's sentence pair, truncated longest first. Segment ids are not passed on (the
        cached frozen bottom reads ids and mask only): the separator token marks the boundary."""
        template = input_template(self.config.template)
        rendered = [template.render_pair(a) for a in arguments]
        ids: list[list[int]] = [[] for _ in arguments]
        for paired in (False, True):
            rows = [i for i, (_, second) in enumerate(rendered) if (second is not None) == paired]
            if not rows:
                continue
            first = [rendered[i][0] for i in rows]
            second = [rendered[i][1] for i in rows] if paired else None
            encoded = self.tokenizer(first, second, truncation=True, max_length=self.config.max_length)["input_ids"]
            for i, row in zip(rows, encoded, strict=True):
                ids[i] = row
        return ids

    def _cache_bottom(self, input_ids: list[list[int]], label: str) -> list[Any]:
        """Frozen-bottom hidden states per argument, unpadded, computed once (and read from the
        shared disk cache when one is configured, see ``encoder.state_cache``)."""
        from valuedetect.encoder import state_cache

        folder = state_cache.cache_folder()
        key = state_cache.state_key(self.model.backbone, self.model.frozen_layers, input_ids) if folder else ""
        if folder is not None:
            cached = state_cache.load_states(folder, key)
            if cached is not None and len(cached) == len(input_ids):
                if self.log:
                    self.log(f"frozen layers ({label}): {len(cached)} arguments read from {folder}")
                return cached
        hidden = self._compute_bottom(input_ids, label)
        if folder is not None:
            state_cache.save_states(folder, key, hidden)
        return hidden

    def _compute_bottom(self, input_ids: list[list[int]], label: str) -> list[Any]:
        from valuedetect.encoder.batching import BucketBatchSampler, EncodedArguments, collate

        data = EncodedArguments(input_ids)
        sampler = BucketBatchSampler(data.lengths(), 128, shuffle=False)
        hidden: list[Any] = [None] * len(data)
        done = 0
        for indices in sampler:
            batch = collate([data[i] for i in indices], self.pad_id)
            states = self.model.bottom(batch["input_ids"], batch["attention_mask"])
            for row, i in enumerate(indices):
                hidden[i] = states[row, : len(input_ids[i])].clone()
            done += len(indices)
            if self.progress:
                self.progress(f"frozen layers ({label})", done, len(data))
        return hidden

    # -- the Detector interface ----------------------------------------------------------------
    def _fit(self, train: Split, dev: Split | None) -> None:
        import torch

        from valuedetect.encoder.batching import EncodedArguments
        from valuedetect.encoder.losses import positive_weights
        from valuedetect.encoder.trainer import train as run_loop

        assert train.labels is not None
        c = self.config
        targets = train.labels
        if c.level1:
            if train.level1_labels is None:
                raise InputError(f"level1 = true, but the {train.name} split has no level-1 labels "
                                 "(level1-labels-training.tsv)")
            targets = np.hstack([train.labels, train.level1_labels])
        if c.distill_from:
            targets = self._distilled(targets, train, dev)
        self._build()
        train_ids = self._encode(train.arguments)
        dev_ids = self._encode(dev.arguments) if dev is not None else None
        cache = self.model.frozen_layers > 0
        train_data = EncodedArguments(train_ids, targets,
                                      self._cache_bottom(train_ids, "training") if cache else None)
        dev_data = None
        if dev is not None and dev.labels is not None and dev_ids is not None:
            dev_data = EncodedArguments(dev_ids, None, self._cache_bottom(dev_ids, "dev") if cache else None)
        if c.head_init == "descriptions":
            self._init_heads(train_data, targets)
        settings = TrainSettings(**{k: getattr(c, k) for k in TrainSettings.__dataclass_fields__})
        pos_weight = positive_weights(torch.as_tensor(targets, dtype=torch.float32), c.pos_weight)
        width = self.task.width

        def dev_measure(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
            return self.task.choose(scores[:, :width], labels)  # the categories choose, not level 1

        state = run_loop(
            self.model, train_data, dev_data, None if dev is None else dev.labels, settings,
            self.pad_id, pos_weight=pos_weight, checkpoint_dir=self.checkpoint_dir, resume=self.resume,
            progress=self.progress, log=self.log, on_step=getattr(self, "on_step", None),
            dev_measure=dev_measure, measure_name=self.task.headline,
        )
        self.model.eval()
        self._round_trip_saved_dtype()
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.info.update(
            history=state.history, best_epoch=state.best_epoch, parameters_total=total,
            parameters_trainable=trainable, frozen_layers=self.model.frozen_layers,
            base_model=c.model, processes=state.processes,
            training=self._training_standard(state, targets, pos_weight).to_dict(),
        )

    def _init_heads(self, train_data: Any, targets: np.ndarray) -> None:
        """Heads from the value descriptions (valuedetect.encoder.label_init says why)."""
        from valuedetect.encoder.label_init import init_from_descriptions
        from valuedetect.templates import label_texts

        if self.task.name != "values":
            raise ConfigError(f"head_init = 'descriptions' needs the values task, not {self.task.name!r}")
        texts = label_texts(level1=self.config.level1)
        label_ids = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)["input_ids"]
        note = init_from_descriptions(self.model, label_ids, train_data, targets, self.pad_id, self.config.seed)
        self.info["head_init"] = {"from": "descriptions", **note}
        if self.log:
            self.log(f"heads start from the {len(texts)} label descriptions (their mean cosine "
                     f"{note['description_cosine_mean']:.2f} before centring)")

    def _distilled(self, targets: np.ndarray, train: Split, dev: Split | None) -> np.ndarray:
        """The gold targets with the teacher's probabilities mixed into the 20 category columns
        (level-1 columns, where trained, stay gold: the teacher scores categories only)."""
        from valuedetect.distill import teacher_targets

        c = self.config
        width = self.task.width
        if self.task.name != "values":
            raise ConfigError(f"distill_from: distillation needs the values task, not {self.task.name!r}")
        soft, note = teacher_targets(c.distill_from, train, dev)
        mixed = np.asarray(targets, dtype=np.float32).copy()
        mixed[:, :width] = (1.0 - c.distill_weight) * mixed[:, :width] + c.distill_weight * soft
        self.info["distillation"] = {**note, "weight": c.distill_weight, "arguments": len(train)}
        if self.log:
            self.log(f"distillation: targets are {1 - c.distill_weight:g} x gold + {c.distill_weight:g} x the "
                     f"teacher's probabilities ({note['teacher']})")
        return mixed

    def refit_settings(self) -> dict[str, Any]:
        """The epoch dev chose, trained to without early stopping (the schedule then spans it)."""
        best = int(self.info.get("best_epoch") or -1)
        return {"epochs": best, "patience": 0} if best > 0 else {}

    @staticmethod
    def _training_standard(state: Any, labels: np.ndarray, pos_weight: Any) -> Any:
        """How far the classifier trained, for the protocol's "same standard" rule: its training
        loss in the epoch whose weights are kept, against the best constant answer's."""
        from valuedetect.protocol import TrainingStandard, constant_answer_loss

        classify = [h for h in state.history if h.get("stage") == "classify"]
        kept = next((h for h in classify if h["epoch"] == state.best_epoch), classify[-1] if classify else None)
        weights = None if pos_weight is None else pos_weight.detach().cpu().numpy()
        return TrainingStandard(
            epochs_completed=float(len(classify)),
            # the BCE term alone: a contrastive extra term is not on the constant answer's scale
            final_loss=None if kept is None else float(kept.get("bce_loss", kept["loss"])),
            constant_loss=constant_answer_loss(labels, weights),
            stopped_by="early stopping" if state.stopped_early else "epochs",
        )

    def _round_trip_saved_dtype(self) -> None:
        """Make the in-memory weights exactly what ``save`` will write, so thresholds tuned now
        and scores recorded now hold for the saved detector too."""
        import torch

        dtype = getattr(torch, self.config.save_dtype)
        state = {k: v.to(dtype).to(v.dtype) for k, v in self.model.trainable_state_dict().items()}
        self.model.load_state_dict(state, strict=False)

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        return self._predict_both(arguments)[0]

    def _predict_both(self, arguments: Sequence[Argument]) -> tuple[np.ndarray, np.ndarray | None]:
        scores = self._all_scores(arguments)
        width = self.task.width
        return scores[:, :width], (scores[:, width:] if self.config.level1 else None)

    def _all_scores(self, arguments: Sequence[Argument]) -> np.ndarray:
        import torch

        from valuedetect.encoder.batching import EncodedArguments
        from valuedetect.encoder.trainer import predict_scores

        if not hasattr(self, "model"):
            raise InputError("the encoder detector must be fitted or loaded before predicting")
        input_ids = self._encode(arguments)
        session = self._int8_session()
        if session is not None:
            return session.scores(input_ids, self.pad_id)
        model = self._inference_model()
        with torch.inference_mode():
            return predict_scores(model, EncodedArguments(input_ids), 64, self.pad_id)

    def _inference_model(self) -> Any:
        if not self.config.quantize:
            return self.model
        if getattr(self, "_quantized", None) is None:
            import torch

            self._quantized = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        return self._quantized

    # -- the int8 path (valuedetect.encoder.int8) ------------------------------------------------
    def inference_mode(self) -> str:
        """auto | int8 | fp32: the environment's choice over the saved one."""
        mode = os.environ.get(INFERENCE_VARIABLE, "").strip().lower() or self.config.inference
        if mode not in INFERENCE_MODES:
            raise ValueDetectError(f"{INFERENCE_VARIABLE} must be auto, int8 or fp32, not {mode!r}")
        return mode

    @property
    def inference(self) -> tuple[str, str]:
        """("int8" | "fp32", why): the path ``predict_proba`` takes (decided on first use)."""
        self._int8_session()
        return self._inference_choice

    def _int8_session(self) -> Any:
        """The int8 session where the mode and the check allow it, else None (fp32)."""
        mode = self.inference_mode()
        cached = getattr(self, "_int8_state", None)
        if cached is not None and cached[0] == mode:
            return cached[1]
        session, why = self._choose_int8(mode)
        self._int8_state = (mode, session)
        self._inference_choice = ("int8" if session is not None else "fp32", why)
        if self.log:
            self.log(f"inference: {self._inference_choice[0]} ({why})")
        return session

    def _int8_file(self) -> Path:
        """The detector folder's own int8 file, else the per-machine cache entry for these weights."""
        from valuedetect.encoder import int8
        from valuedetect.models import cache_dir

        folder = getattr(self, "_folder", None)
        if folder is not None and (folder / int8.FILE).is_file():
            return folder / int8.FILE
        key = hashlib.blake2b(f"{int8.FILE_RECIPE};{sorted(int8.versions().items())};"
                              f"{int8.weights_digest(self.model)}".encode(), digest_size=16).hexdigest()
        return cache_dir() / "int8" / f"{key}.onnx"

    def _choose_int8(self, mode: str) -> tuple[Any, str]:
        from valuedetect.encoder import int8

        if mode == "fp32":
            return None, "inference = fp32"
        missing = int8.runtime_missing()
        if missing:
            if mode == "int8":
                raise ValueDetectError(f"inference = int8: {missing}")
            return None, missing
        if mode == "int8":  # forced: no check asked for
            return int8.Int8Session(self._ensure_int8_file(), self.config.threads), "inference = int8"
        record = self.info.get("int8")
        if not isinstance(record, dict):
            return None, "int8 not checked for this detector (EncoderDetector.check_int8)"
        if record.get("recipe") != int8.RECIPE:
            return None, f"int8 checked under another recipe ({record.get('recipe')})"
        if not record.get("within_bound"):
            return None, (f"int8 {record.get('measure', 'F1')} {record.get('int8'):.4f} against fp32 "
                          f"{record.get('fp32'):.4f} on {record.get('split')}: beyond the {int8.F1_BOUND} bound")
        if record.get("weights") != int8.weights_digest(self.model):
            return None, "the int8 check was made on other weights"
        path = self._int8_file()
        built = False
        if not path.is_file():
            here = int8.versions()
            differ = [f"{k} {record.get('versions', {}).get(k)} (here {v})" for k, v in here.items()
                      if record.get("versions", {}).get(k) != v]
            if differ:
                return None, f"int8 checked with {', '.join(differ)}: check it again to use it"
            self._ensure_int8_file()
            built = True
        if int8.file_digest(path) != record.get("sha256"):
            if built:  # this machine's export differs from the checked one: not what was measured
                path.unlink(missing_ok=True)
                return None, "the int8 model built here differs from the checked one"
            raise InputError("is not the int8 model that was checked (its sha256 differs): damaged or replaced; "
                             "delete it and it is built again, or set inference = 'fp32'", path)
        why = (f"checked on {record.get('split')}: {record.get('measure', 'F1')} {record['int8']:.4f} against fp32 "
               f"{record['fp32']:.4f}")
        return int8.Int8Session(path, self.config.threads), why

    def _ensure_int8_file(self) -> Path:
        from valuedetect.encoder import int8

        path = self._int8_file()
        if not path.is_file():
            if self.log:
                self.log("exporting the encoder to int8 ONNX (once per machine and detector)")
            int8.export_int8(self.model, path, self.log)
        return path

    def check_int8(self, split: Split, fp32_scores: np.ndarray | None = None,
                   bound: float | None = None) -> dict[str, Any]:
        """Score ``split`` (labelled) through fp32 and int8 with this detector's thresholds and
        record in ``info["int8"]`` whether int8 keeps the task's measure (the official F1) within
        ``bound`` of fp32, either way; ``inference = "auto"`` then follows the record.
        ``fp32_scores``: the split's fp32 scores when already computed."""
        from valuedetect.encoder import int8

        if split.labels is None:
            raise InputError(f"the {split.name} split has no labels to check int8 against")
        missing = int8.runtime_missing()
        if missing:
            raise ValueDetectError(missing)
        bound = int8.F1_BOUND if bound is None else bound
        if fp32_scores is None:
            previous = os.environ.pop(INFERENCE_VARIABLE, None)
            saved = (self.config.inference, self.config.quantize)
            self.config.inference, self.config.quantize, self._int8_state = "fp32", False, None
            try:
                fp32_scores = self.predict_proba(split.arguments)
            finally:
                (self.config.inference, self.config.quantize), self._int8_state = saved, None
                if previous is not None:
                    os.environ[INFERENCE_VARIABLE] = previous
        path = self._ensure_int8_file()
        session = int8.Int8Session(path, self.config.threads)
        int8_scores = session.scores(self._encode(split.arguments), self.pad_id)[:, : self.task.width]  # not level 1
        measure = self.task.headline
        fp32_value = float(getattr(self.task.score(split.labels, self.decide(fp32_scores)), measure))
        int8_value = float(getattr(self.task.score(split.labels, self.decide(int8_scores)), measure))
        record = {
            "split": split.name, "arguments": len(split), "measure": measure,
            "fp32": fp32_value, "int8": int8_value, "bound": bound,
            "within_bound": bool(abs(int8_value - fp32_value) <= bound),
            "max_score_difference": float(np.max(np.abs(np.asarray(fp32_scores) - int8_scores))),
            "recipe": int8.RECIPE, "versions": int8.versions(),
            "weights": int8.weights_digest(self.model), "sha256": int8.file_digest(path),
        }
        self.info["int8"] = record
        self._int8_state = None
        return record

    def _save_weights(self, directory: Path) -> None:
        import torch
        from safetensors.torch import save_file

        dtype = getattr(torch, self.config.save_dtype)
        state = {k: v.detach().to(dtype).contiguous() for k, v in self.model.trainable_state_dict().items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"base_model": self.config.model})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates owner-only files
        os.replace(tmp, directory / WEIGHTS_FILE)

    def _load_weights(self, directory: Path) -> None:
        import torch
        from safetensors.torch import load_file

        path = directory / WEIGHTS_FILE
        if not path.exists():
            raise InputError(f"missing {WEIGHTS_FILE}", directory)
        self._build()
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises its own error type for corrupt files
            raise InputError(f"unreadable {WEIGHTS_FILE} ({error})", directory) from None
        expected = set(self.model.trainable_state_dict())
        missing = expected - set(state)
        if missing:
            raise InputError(f"{WEIGHTS_FILE} lacks {len(missing)} weights (e.g. {sorted(missing)[0]}); "
                             f"was it trained from {self.config.model!r} with these settings?", directory)
        reference = self.model.state_dict()
        for k, v in state.items():
            if k not in reference or reference[k].shape != v.shape:
                raise InputError(f"{WEIGHTS_FILE}: weight {k} does not fit base model {self.config.model!r}", directory)
        self.model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
        self.model.eval()
        self._folder = directory  # where a shipped int8-model.onnx may lie
