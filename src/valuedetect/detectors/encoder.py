"""Fine-tuning a pretrained encoder with value-category heads (the paper's Exp-I).

Any transformers encoder works (a Hub name, a local path, or the offline aliases ``minilm`` and
``mpnet``). Only the top ``trainable_layers`` blocks train; the frozen bottom is computed once
per argument and cached, which on a CPU is most of the speed-up over a plain Trainer. A saved
detector holds only the trained blocks and heads (the base model comes from its package), so
a MiniLM detector is a few MB.
"""

from __future__ import annotations

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
    threads: int = 0  # torch intra-op threads; 0: all cores
    quantize: bool = False  # int8 dynamic quantization of linear layers for CPU inference
    # Also learn the 54 level-1 values (their labels ship with the data) as 54 more outputs of the
    # head: auxiliary targets for the 20 categories, and level-1 predictions with their own
    # thresholds chosen on dev. Early stopping still reads the categories' F1.
    level1: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
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
        self._build()
        train_ids = self._encode(train.arguments)
        dev_ids = self._encode(dev.arguments) if dev is not None else None
        cache = self.model.frozen_layers > 0
        train_data = EncodedArguments(train_ids, targets,
                                      self._cache_bottom(train_ids, "training") if cache else None)
        dev_data = None
        if dev is not None and dev.labels is not None and dev_ids is not None:
            dev_data = EncodedArguments(dev_ids, None, self._cache_bottom(dev_ids, "dev") if cache else None)
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
        model = self._inference_model()
        with torch.inference_mode():
            return predict_scores(model, EncodedArguments(self._encode(arguments)), 64, self.pad_id)

    def _inference_model(self) -> Any:
        if not self.config.quantize:
            return self.model
        if getattr(self, "_quantized", None) is None:
            import torch

            self._quantized = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        return self._quantized

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
