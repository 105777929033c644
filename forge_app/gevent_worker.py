"""The FORGE's gunicorn worker class: gevent, with the database driver left blocking.

    gunicorn --worker-class forge_app.gevent_worker.ForgeGeventWorker 'forge_app:create_app()'

gunicorn's stock ``gevent`` worker monkey-patches everything, ``select`` included; psycopg 3
then waits for PostgreSQL through gevent's ``select()``. Measured back to back, one heartbeat
at a time on PostgreSQL: 1.5-1.6 ms of worker CPU and 2.7-3.1 ms wall with the stock class,
1.2-1.5 ms and 1.9-2.3 ms with this one. This worker patches everything but ``select``, so
psycopg keeps its C wait: one database round trip (a fraction of a millisecond on the same
host) briefly holds the worker's other greenlets, exactly as a ``sync`` worker would, while
sockets, sleeps, locks and threads stay cooperative. That is what the hint streams need:
thousands of idle greenlets, each parked on its socket or an event, none of them waiting on
the database.
"""

from __future__ import annotations

import socket

from gevent import monkey
from gunicorn.workers.ggevent import GeventWorker

__all__ = ["ForgeGeventWorker"]


class ForgeGeventWorker(GeventWorker):  # type: ignore[misc]
    """:class:`gunicorn.workers.ggevent.GeventWorker` without patching ``select``."""

    def patch(self) -> None:
        monkey.patch_all(select=False)
        # As GeventWorker.patch: the listening sockets become gevent sockets.
        listeners = [
            socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
            for s in self.sockets  # type: ignore[has-type]
        ]
        self.sockets = listeners
