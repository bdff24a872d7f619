"""Which sites may use the server: a ``Host`` check for every request and an ``Origin`` check
for the state-changing ones.

Without them any web page a user visits could POST a form to ``127.0.0.1:8000/v1/jobs`` (a
"simple" request, so the browser sends it without asking first) and start jobs, and a DNS
rebinding page (``evil.example`` resolving to 127.0.0.1) could even read the answers. Browsers
always send ``Origin`` on cross-site POSTs and put the name the page used in ``Host``; clients
that are not browsers (curl, pyvalues, scripts) send no ``Origin`` and are not affected.

- ``Host`` must be one of ``allowed_hosts`` (``None``: any host; ``valuedetect serve`` allows the
  loopback names and the address it listens on).
- A POST (PUT, PATCH, DELETE) with an ``Origin`` must come from the page itself (the origin
  whose host is the request's ``Host``) or from one of ``allowed_origins``; ``Origin: null``
  (sandboxed frames, local files) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from valuedetect.serve.limits import APIError

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(host: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``; lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def normalise_origin(origin: str) -> str:
    """``HTTP://Example.org:80/`` -> ``http://example.org``: scheme, host and a non-default port."""
    parts = urlsplit(origin.strip())
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None and port != default else "")


class OriginCheck:
    """ASGI middleware: refuses, with 403 and the usual error body, before the app reads a byte."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None, allowed_origins: Iterable[str] = ()):
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {host_name(h) for h in allowed_hosts}
        self.any_host = self.allowed_hosts is not None and "*" in self.allowed_hosts
        origins = list(allowed_origins)
        self.any_origin = "*" in origins
        self.allowed_origins = {normalise_origin(o) for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        error = self.problem(scope.get("method", "GET"), host, headers.get("origin"))
        if error is None:
            await self.app(scope, receive, send)
            return
        payload = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def problem(self, method: str, host: str, origin: str | None) -> APIError | None:
        if self.allowed_hosts is not None and not self.any_host and host_name(host) not in self.allowed_hosts:
            return APIError(403, "host_not_allowed",
                            f"this server does not answer to Host {host[:100]!r}; allowed: "
                            f"{', '.join(sorted(self.allowed_hosts))} (serve --allowed-host adds names)")
        if method.upper() not in STATE_CHANGING or origin is None or self.any_origin:
            return None
        if origin.strip().lower() != "null":
            normal = normalise_origin(origin)
            if normal in self.allowed_origins:
                return None
            # The page itself: its origin names the host (and port) the request was sent to.
            scheme = urlsplit(normal).scheme
            if host and scheme and normalise_origin(f"{scheme}://{host.strip()}") == normal:
                return None
        return APIError(403, "origin_not_allowed",
                        f"a {method.upper()} from the web page at {origin[:100]!r} is not allowed: only this server's "
                        "own page may send one (serve --allowed-origin adds sites)")
