"""The FORGE's local store, served read-only, and its public signing keys.

    $ curl -i http://127.0.0.1:5000/store/projects/<project_id>/channels/production.json
    $ curl http://127.0.0.1:5000/.well-known/anvil-keys.json

When ``FORGE_STORE_URL`` is a local directory (the default), clients use
``http(s)://<forge>/store`` as their store URL: a single host needs no bucket. Objects are
served like a bucket would (DESIGN §2): ``application/json``, a content-hash ETag (the one
the FileStore itself uses, so conditional GETs match), ``If-None-Match`` → 304, immutable
caching for bundles and ``no-cache`` for pointers and history. No sign-in: clients need these
objects, which are signed (pointers) or encrypted (bundles). Keys are checked like every
store key (no ``..``, no dot-files), and the resolved path must stay inside the store.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from anvil_client.errors import NotFound, SizeLimitError, StoreError
from anvil_client.stores import FileStore, cache_control_for, check_key
from anvil_client.wire import BUNDLE_MAX_SIZE
from forge_app.authz import public
from forge_app.services.publishing import forge_key_id, forge_public_key_text, store_root

__all__ = ["bp"]

bp = Blueprint("store", __name__)

_MAX_OBJECT = BUNDLE_MAX_SIZE + 1024 * 1024  # the largest bundle plus its JWE overhead


@bp.get("/store/", defaults={"key": ""})
@bp.get("/store/<path:key>")
@public
def object(key: str) -> ResponseReturnValue:
    root = store_root()
    if root is None:
        abort(404, "This FORGE's store is not a local directory; read it from its own URL.")
    try:
        check_key(key)
    except StoreError:
        abort(404)
    path = (root / key).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        abort(404)
    try:
        got = FileStore(root).get(key, max_size=_MAX_OBJECT)
    except (NotFound, SizeLimitError):
        abort(404)
    etag = got.etag or ""
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control_for(key),
        "Vary": "Accept-Encoding",
    }
    if etag and request.if_none_match.contains_weak(etag.strip('"')):
        return Response(status=304, headers=headers)
    response = Response(got.data, status=200, mimetype="application/json", headers=headers)
    # No cookies, no session for clients: this is a static object.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/.well-known/anvil-keys.json")
@public
def keys() -> ResponseReturnValue:
    """The public keys clients trust for this FORGE's pointers: ``[{keyid, public_key}]``."""
    response = jsonify([{"keyid": forge_key_id(), "public_key": forge_public_key_text()}])
    response.headers["Cache-Control"] = "no-cache"
    return response
