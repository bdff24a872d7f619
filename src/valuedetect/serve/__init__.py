"""``valuedetect serve``: an HTTP API and web page around one saved detector."""

from __future__ import annotations

from valuedetect.serve.settings import ServeSettings


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Load the detector, then serve until interrupted (uvicorn handles Ctrl-C gracefully)."""
    import uvicorn

    from valuedetect.serve.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


__all__ = ["ServeSettings", "serve"]
