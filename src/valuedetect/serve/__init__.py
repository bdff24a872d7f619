"""``valuedetect serve``: an HTTP API and web page around one saved detector."""

from __future__ import annotations

from valuedetect.serve.settings import ServeSettings

WILDCARD_ADDRESSES = ("", "0.0.0.0", "::", "[::]")


def default_allowed_hosts(host: str) -> tuple[str, ...] | None:
    """The Host names a server listening on ``host`` answers to: the loopback names and
    ``host`` itself; None (any name) when it listens on every address, where the names it is
    reached by are unknown (name them with ``--allowed-host``)."""
    from valuedetect.serve.origin import LOOPBACK_HOSTS

    if host.strip() in WILDCARD_ADDRESSES:
        return None
    return tuple(dict.fromkeys((*LOOPBACK_HOSTS, host.strip())))


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Load the detector, then serve until interrupted (uvicorn handles Ctrl-C gracefully)."""
    import uvicorn

    from valuedetect.serve.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


__all__ = ["ServeSettings", "default_allowed_hosts", "serve"]
