"""int8 inference for the encoder detector through ONNX Runtime.

The fine-tuned encoder is exported to ONNX (torch's TorchScript exporter, eager attention),
its attention, layer norms and GELUs fused by ONNX Runtime's transformer optimizer (BERT-style
models), and its matrix products quantised to int8 (dynamic quantisation: int8 weights with one
scale per output channel, activations quantised per batch at run time). Per-tensor weight scales
cost the shipped MiniLM twice the score error (mean |int8 - fp32| 0.021 against 0.010), and 7-bit
weights (``reduce_range``) four times, with -0.024 F1. Since activation scales are taken per
batch, a score batched with others moves with its neighbours (up to 0.06 for the shipped MiniLM
against the same argument alone), so the int8 path runs each argument on its own (``ROWS = 1``):
its scores are then the argument's alone, whatever else is predicted with it (the server's batches,
a file's chunks), with no padding; measured on 2 loaded cores this is as fast as batches of 64
(40-46 against 43-45 arguments/s). ``bucketed_scores`` (sorted by length, padded per batch, order
restored) serves both, and the fp32 path batches by length as before.

Whether the int8 model may stand in for the fp32 one is measured, not assumed:
``check_int8`` scores a labelled split both ways with the detector's own thresholds and records
in ``detector.info["int8"]`` the two official F1s, the recipe and the digest of the int8 file it
measured. ``inference = "auto"`` (the default) uses int8 only where that record says the F1
stayed within ``F1_BOUND`` and the int8 file at hand is the one measured; otherwise fp32.

The int8 file is built once per machine into ``cache_dir()/int8/`` (about 10 s for MiniLM on
2 cores); a saved detector folder may also carry its own ``int8-model.onnx``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.errors import InputError, ValueDetectError

F1_BOUND = 0.005  # the largest official-F1 loss int8 may cost on the checked split
FILE = "int8-model.onnx"
# Identity of the export + fusion + quantisation steps (the file), and of how it is run (the
# scores): a record made under another recipe is not taken as a check of this one.
FILE_RECIPE = "onnx-opset17-eager/ort-bert-fusion/dynamic-int8-per-channel/v1"
ROWS = 1  # arguments per int8 run: one, so that a score does not depend on its batch neighbours
RECIPE = f"{FILE_RECIPE}/rows-of-{ROWS}"
MAX_BATCH = 64  # rows per batch (bucketed_scores' default)
MAX_TOKENS = 4096  # padded tokens per batch (rows x longest): bounds memory for long texts


def runtime_missing() -> str | None:
    """Why the int8 path cannot run here (a missing package), or None."""
    for module, package in (("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
        try:
            __import__(module)
        except ImportError:
            return f"the int8 path needs {package} (pip install {package})"
    return None


def default_threads() -> int:
    """Intra-op threads: the cores this process may run on (one thread per core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def length_buckets(lengths: Sequence[int], max_batch: int = MAX_BATCH,
                   max_tokens: int = MAX_TOKENS) -> list[np.ndarray]:
    """Indices cut into batches of similar length: sorted by length, each batch at most
    ``max_batch`` rows and ``max_tokens`` padded tokens (always at least one row)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < max_batch and (end + 1 - start) * lengths[order[end]] <= max_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad_batch(input_ids: Sequence[Sequence[int]], rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) for ``rows``, padded to the longest of them."""
    width = max(len(input_ids[i]) for i in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, i in enumerate(rows):
        ids[r, : len(input_ids[i])] = input_ids[i]
        mask[r, : len(input_ids[i])] = 1
    return ids, mask


def bucketed_scores(run_batch: Callable[[np.ndarray, np.ndarray], np.ndarray], input_ids: Sequence[Sequence[int]],
                    pad_id: int, max_batch: int = MAX_BATCH, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Scores of every argument in the input's order, computed in length buckets."""
    out: np.ndarray | None = None
    for rows in length_buckets([len(ids) for ids in input_ids], max_batch, max_tokens):
        scores = run_batch(*pad_batch(input_ids, rows, pad_id))
        if out is None:
            out = np.zeros((len(input_ids), scores.shape[1]), dtype=np.float32)
        out[rows] = scores
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


# -- building the int8 file ------------------------------------------------------------------
def weights_digest(model: Any) -> str:
    """A digest of every weight of the fp32 model: a check is valid for these weights only."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The packages that build the int8 file: a check holds for the file these versions build."""
    import onnx
    import onnxruntime
    import torch

    # torch's local build tag (+cpu, +cu124) does not change what its exporter writes
    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__.split("+")[0]}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Scores:  # a module, so that torch.onnx.export sees (ids, mask) -> sigmoid scores
    @staticmethod
    def wrap(model: Any) -> Any:
        import torch

        class Scores(torch.nn.Module):
            def __init__(self, inner: Any):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                logits, _ = self.inner(attention_mask, input_ids=input_ids)
                return torch.sigmoid(logits)

        return Scores(model).eval()


def export_int8(model: Any, target: Path, log: Callable[[str], None] | None = None) -> Path:
    """Export ``model`` (an ``EncoderClassifier``) as an int8 ONNX file at ``target`` (atomic)."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(target.name + f".{os.getpid()}.tmp")
    fp32, fused = work.with_suffix(".fp32"), work.with_suffix(".fused")
    inner = copy.deepcopy(model).eval()
    backbone = inner.backbone
    if hasattr(backbone, "set_attn_implementation"):
        with contextlib.suppress(ValueError, AttributeError):
            backbone.set_attn_implementation("eager")  # sdpa exports as ops the fusion does not know
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Scores.wrap(inner), (ids, mask), str(fp32), dynamo=False, opset_version=17,
                input_names=["input_ids", "attention_mask"], output_names=["scores"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "scores": {0: "batch"}},
            )
        source = fp32
        config = backbone.config
        if getattr(config, "model_type", "") in ("bert", "roberta", "xlm-roberta", "electra"):
            from onnxruntime.transformers.optimizer import optimize_model

            optimized = optimize_model(str(fp32), model_type="bert", num_heads=config.num_attention_heads,
                                       hidden_size=config.hidden_size, opt_level=1, use_gpu=False)
            optimized.save_model_to_file(str(fused))
            source = fused
        quantize_dynamic(str(source), str(work), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(work, target)
    except Exception as error:
        raise ValueDetectError(f"cannot export the encoder to int8 ONNX ({type(error).__name__}: {error}); "
                               "set inference = 'fp32' to predict without it") from None
    finally:
        for leftover in (fp32, fused, work):
            leftover.unlink(missing_ok=True)
    if log:
        log(f"int8 model written to {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return target


class Int8Session:
    """An ONNX Runtime session over an int8 file: scores in the input's order, bucketed."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads > 0 else default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle threads sleep rather than spin: each batch's products take milliseconds, so waking
        # costs little, and on a shared machine spinning threads take cores from other work
        # (measured under load on 2 cores: 31-43 arguments/s without spinning, 29 with).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a truncated or garbled file
            raise InputError(f"damaged int8 model file ({type(error).__name__}: {str(error)[:200]}); delete it "
                             "and it is built again, or set inference = 'fp32'", self.path) from None
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            raise InputError(f"not an int8 encoder export: inputs {names}, expected input_ids and attention_mask",
                             self.path)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def scores(self, input_ids: Sequence[Sequence[int]], pad_id: int, rows: int = ROWS) -> np.ndarray:
        return bucketed_scores(self.run, input_ids, pad_id, max_batch=rows)


def record_check(folder: str | Path, split: Any, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Check the saved encoder detector in ``folder`` on the labelled ``split`` (``check_int8``)
    and write the record into its ``detector.json``; only ``info.int8`` changes there."""
    import json

    from valuedetect.data import atomic_write_json
    from valuedetect.detectors import load_detector

    folder = Path(folder)
    detector = load_detector(folder)
    if not hasattr(detector, "check_int8"):
        raise InputError(f"holds a {detector.type_name!r} detector; only the encoder detector has an int8 path", folder)
    detector.log = log
    record = detector.check_int8(split)
    meta_path = folder / "detector.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("info", {})["int8"] = record
    atomic_write_json(meta_path, meta)
    return record
