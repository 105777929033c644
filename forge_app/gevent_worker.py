"""The FORGE's gunicorn worker class: gevent, with the database driver left blocking.

    gunicorn --worker-class forge_app.gevent_worker.ForgeGeventWorker 'forge_app:create_app()'

gunicorn's stock ``gevent`` worker monkey-patches everything, ``select`` included; psycopg 3
then waits for PostgreSQL through gevent's ``select()``, which measured here at twice the CPU
and four times the wall time of a heartbeat (10.7 ms against 2.3 ms, one client in a row).
This worker patches everything but ``select``, so psycopg keeps its C
wait: one database round trip (a fraction of a millisecond on the same host) briefly holds
the worker's other greenlets, exactly as a ``sync`` worker would, while sockets, sleeps,
locks and threads stay cooperative. That is what the hint streams need: thousands of idle
greenlets, each parked on its socket or an event, none of them waiting on the database.
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
        self.sockets = [
            socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
            for s in self.sockets
        ]
