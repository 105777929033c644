"""Distribution pages: ACCESS_TOKENs, channels, Publish to LIVE, rollbacks and rollouts.

    GET  /projects/<project_id>/tokens                    owners: list, generate, reveal, revoke
    GET  /projects/<project_id>/channels                  members: channels and what they serve
    GET  /projects/<project_id>/channels/<channel>        the sets it serves, history, actions
    GET  /projects/<project_id>/channels/<channel>/remove?set=<id>     owners: confirm → POST
    GET  /projects/<project_id>/channels/<channel>/rollback?sequence=N confirm → POST
    GET  /projects/<project_id>/sets/<set_id>/versions/<version>/publish   choose → confirm → POST

A channel serves every prompt set of the project at once (pointer v2): publishing a set
replaces its own entry and keeps the others; confirmation pages show, per set, what the
channel serves before and after.

Every store write goes through :mod:`forge_app.services.publishing` (the publisher library);
views only check roles, render, and commit the rows the services added.

The views live in one module per domain on the one blueprint of :mod:`._shared` (so endpoint
names stay ``distribution.<view>``): :mod:`.tokens`, :mod:`.channels` and :mod:`.publish`.
"""

from forge_app.blueprints.distribution import channels, publish, tokens
from forge_app.blueprints.distribution._shared import bp

__all__ = ["bp", "channels", "publish", "tokens"]
