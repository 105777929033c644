"""Authorisation on every route, found by walking ``app.url_map`` (so new routes are covered).

Anonymous users are sent to sign in (or get 401 from the API); a member of another
organisation gets 403 or 404 from every route that names an object; routes without object
arguments never show another organisation's data; admin pages need a site administrator.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.routing import Rule

from forge_app.authz import is_public
from forge_app.extensions import db
from forge_app.models import Membership, Organisation, Project, PromptSetVersion, Role, User
from forge_app.services import publishing
from forge_app.services.heartbeats import parse_heartbeat, record_heartbeat
from forge_app.services.tokens import create_token
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version, login

SKIPPED_METHODS = {"HEAD", "OPTIONS"}


def _protected_rules(app: Flask) -> list[Rule]:
    rules = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or is_public(app.view_functions[rule.endpoint]):
            continue
        rules.append(rule)
    return rules


#: Every URL argument name of the app, so the walk builds real URLs (not placeholders) for
#: every route; a route with a new argument name fails the walk until it is added here.
KNOWN_ARGUMENTS = {
    "project_id",
    "set_id",
    "version",
    "key",
    "org_slug",
    "membership_id",
    "channel",
    "sequence",
    "token_id",
    "instance_id",
    "forge",
    "connection_id",
    "remote_set_id",
    "remote_version",
    "invitation_id",
    "token",
}
#: Arguments that name something of the whole site (a configured peer FORGE), not of an
#: organisation: routes with only these are checked like lists (no other org's data shown).
SITE_ARGUMENTS = {"forge"}
#: The endpoints anyone may call without signing in (each does its own checks, if any).
PUBLIC_ENDPOINTS = {
    "auth.login",
    "auth.logout",
    "healthz",
    "store.object",
    "store.keys",
    "api.heartbeat",
    "rest.openapi",
    "orgs.join",
    "hints.hints",  # bearer ACCESS_TOKEN (checked by the view: 401/403)
    "metrics.metrics",  # FORGE_METRICS_TOKEN bearer, else 404 (issue 14)
}
#: The bearer-token APIs: anonymous callers get 401, never the sign-in page.
API_PREFIXES = ("api.", "rest.")


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """A configured peer FORGE that is down (nothing listens on port 9), with short deadlines,
    so the Forges routes have a real ``forge`` argument."""
    return {
        **app_config,
        "FORGE_KNOWN_FORGES": [
            {"name": "Partner", "url": "http://127.0.0.1:9", "bearer_token_env": "PARTNER_TOKEN"}
        ],
        "FORGE_PEER_TOTAL_TIMEOUT": 1.0,
    }


@dataclass
class Objects:
    """Real objects of acme's project for every URL argument: a locked version, an
    ACCESS_TOKEN, a publication on production and a LIVE instance that reported."""

    version: str
    token_id: str
    sequence: int
    instance_id: str
    connection_id: int
    api_tokens: dict[str, str]

    def headers(self, endpoint: str, who: str) -> dict[str, str]:
        """The API is reached with the user's personal API token (it ignores sessions)."""
        if not endpoint.startswith("rest."):
            return {}
        return {"Authorization": f"Bearer {self.api_tokens[who]}"}


def _arguments(app: Flask, world: World, objects: Objects) -> dict[str, Any]:
    with app.app_context():
        membership_id = db.session.scalar(
            select(Membership.id).where(Membership.user_id == world.users["editor"])
        )
    from forge_app.presentation import confirm_token
    from forge_app.services.invitations import create_invitation

    with app.app_context():
        org = db.session.get(Organisation, world.org_id)
        owner = db.session.get(User, world.users["owner"])
        assert org is not None and owner is not None
        invitation, _ = create_invitation(db.session, org, Role.VIEWER, owner, days=1)
        invitation_id = invitation.id
        db.session.commit()
        # A confirmation page is made for one user: the walk's owner.
        token = confirm_token(
            f"/orgs/{world.org_slug}/invitations/{invitation_id}/revoke",
            "Withdraw?",
            "Withdraw",
            None,
            "button",
            back="/",
            user_id=owner.id,
        )
    return {
        "invitation_id": invitation_id,
        "token": token,
        "project_id": world.project_id,
        "set_id": world.set_id,
        "version": objects.version,
        "key": "welcome.message",
        "org_slug": world.org_slug,
        "membership_id": membership_id,
        "channel": "production",
        "sequence": objects.sequence,
        "token_id": objects.token_id,
        "instance_id": objects.instance_id,
        "forge": "partner",
        "connection_id": objects.connection_id,
        "remote_set_id": str(uuid.UUID(int=1)),
        "remote_version": "1.0.0",
    }


def _url(app: Flask, rule: Rule, known: dict[str, Any]) -> tuple[str, bool]:
    """Build the rule's URL from known values; unknown arguments get placeholders."""
    values: dict[str, Any] = {}
    all_known = True
    for name in rule.arguments:
        if name in known:
            values[name] = known[name]
            continue
        all_known = False
        converter = type(rule._converters[name]).__name__.lower()
        if "uuid" in converter:
            values[name] = uuid.uuid4()
        elif "integer" in converter:
            values[name] = 1
        else:
            values[name] = "x"
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values), all_known


@pytest.fixture
def objects(app: Flask, world: World) -> Objects:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        token, text = create_token(project, "svc", user=owner)
        db.session.commit()
        publishing.ensure_default_channels(project)
        channel = publishing.get_channel(project, "production")
        found = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == version)
        )
        assert channel is not None and found is not None
        publication = publishing.publish_version(found, channel, user=owner)
        db.session.commit()
        token_id, sequence = token.token_id, publication.sequence
    instance_id = str(uuid.uuid4())
    # Recorded as the heartbeat API records it (no request here: the walk adds a route later).
    heartbeat = {
        "instance_id": instance_id,
        "hostname": "web-1",
        "project_id": str(world.project_id),
        "channel": "production",
        "mode": "accepting",
        "sequence": sequence,
        "releases": [
            {"prompt_set_id": str(world.set_id), "version": version, "content_sha256": "a" * 64}
        ],
        "last_error": None,
        "client_version": "0.1.0",
    }
    assert text.startswith(f"anvil_{token_id}_")
    with app.app_context():
        record_heartbeat(
            db.session,
            project_id=world.project_id,
            token_id=token_id,
            body=parse_heartbeat(json.dumps(heartbeat).encode()),
        )
        db.session.commit()
    with app.app_context():
        from forge_app.models.peering import RemoteProject
        from forge_app.services.api_tokens import create_api_token

        reference = RemoteProject(
            org_id=world.org_id,
            forge_name="Partner",
            remote_project_id=str(uuid.UUID(int=2)),
            remote_org_name="Partner org",
            name="Partner project",
        )
        db.session.add(reference)
        api_tokens = {}
        for who in ("owner", "outsider"):
            user = db.session.get(User, world.users[who])
            assert user is not None
            api_tokens[who] = create_api_token(db.session, user, who, scope="write", days=7)[1]
        db.session.commit()
        connection_id = reference.id
    return Objects(version, token_id, sequence, instance_id, connection_id, api_tokens)


def _anonymous_failure(rule: Rule, method: str, url: str, response: Any) -> str | None:
    """Anonymous: 401 on the APIs, a redirect to the sign-in page elsewhere."""
    location = response.headers.get("Location", "")
    if rule.endpoint.startswith(API_PREFIXES):
        denied = response.status_code == 401
    else:
        denied = response.status_code == 302 and "/login" in location
    return None if denied else f"anonymous {method} {url}: {response.status_code}"


def _outsider_failure(rule: Rule, method: str, url: str, response: Any, world: World) -> str | None:
    """Another organisation's member: 403/404 on an object, 403 on admin, never acme's data."""
    if rule.arguments - SITE_ARGUMENTS:
        denied = response.status_code in (403, 404)
    elif rule.endpoint.startswith("admin."):
        denied = response.status_code == 403
    else:  # lists of one's own things: never another organisation's data
        body = response.get_data(as_text=True)
        if "Checkout" in body or str(world.project_id) in body:
            return f"outsider {method} {url}: shows acme's data"
        denied = True
    return None if denied else f"outsider {method} {url}: {response.status_code}"


def denial_failures(app: Flask, world: World, client_as: Any, objects: Objects) -> list[str]:
    """Every way a protected route fails to deny access, as readable lines."""
    known = _arguments(app, world, objects)
    anonymous = app.test_client()
    outsider = client_as("outsider")
    owner = client_as("owner")
    failures: list[str | None] = []
    checked = 0
    for rule in _protected_rules(app):
        url, all_known = _url(app, rule, known)
        if not all_known:
            failures.append(f"{rule.rule}: an argument the walk does not know")
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            checked += 1
            response = anonymous.open(url, method=method)
            failures.append(_anonymous_failure(rule, method, url, response))
            # Signed in afresh each time: a route like "sign out everywhere" must not turn the
            # rest of the walk into anonymous requests.
            login(outsider, world.users["outsider"])
            headers = objects.headers(rule.endpoint, "outsider")
            response = outsider.open(url, method=method, headers=headers)
            failures.append(_outsider_failure(rule, method, url, response, world))
            if method == "GET" and all_known and rule.arguments:
                # The URL is real: its own organisation's owner can open it.
                status = owner.get(url, headers=objects.headers(rule.endpoint, "owner")).status_code
                if status not in (200, 302):
                    failures.append(f"owner GET {url}: {status} (the walk built a bad URL)")
    assert checked >= 40, "the walk did not cover the app"
    return [failure for failure in failures if failure is not None]


def test_every_protected_route_is_denied_to_anonymous_and_other_orgs(
    app: Flask, world: World, client_as: Any, objects: Objects
) -> None:
    assert denial_failures(app, world, client_as, objects) == []


def test_the_walk_catches_a_route_without_authorisation(
    app: Flask, world: World, client_as: Any, objects: Objects
) -> None:
    @app.get("/projects/<uuid:project_id>/leak")
    def leak(project_id: uuid.UUID) -> str:
        return "secret prompts"

    failures = denial_failures(app, world, client_as, objects)
    assert any(f.startswith("outsider GET") and "/leak" in f for f in failures), failures


def test_the_walk_knows_every_argument_name(app: Flask) -> None:
    names = {name for rule in _protected_rules(app) for name in rule.arguments}
    assert names == KNOWN_ARGUMENTS


def test_only_the_expected_endpoints_are_public(app: Flask) -> None:
    public = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and is_public(app.view_functions[rule.endpoint])
    }
    assert public == PUBLIC_ENDPOINTS


#: Arguments that name one of acme's objects (channel names exist in every project).
_OBJECT_ARGUMENTS = {"set_id", "version", "key", "sequence", "token_id", "instance_id"}


def test_objects_of_one_project_are_unreachable_under_another_on_every_route(
    app: Flask, world: World, client_as: Any, objects: Objects
) -> None:
    """The outsider owns globex's project; acme's set, version, prompt, token, publication and
    instance must not resolve under its URLs, whatever the route and method."""
    known = {**_arguments(app, world, objects), "project_id": world.other_project_id}
    outsider = client_as("outsider")
    failures, checked = [], 0
    for rule in _protected_rules(app):
        if "project_id" not in rule.arguments or not rule.arguments & _OBJECT_ARGUMENTS:
            continue
        url, _ = _url(app, rule, known)
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            checked += 1
            headers = objects.headers(rule.endpoint, "outsider")
            login(outsider, world.users["outsider"])
            status = outsider.open(url, method=method, headers=headers).status_code
            if status not in (403, 404):
                failures.append(f"{method} {url}: {status}")
    assert checked >= 30
    assert failures == []


def test_roles_below_the_minimum_get_403(client_as: Any, world: World, set_url: str) -> None:
    viewer = client_as("viewer")
    editor = client_as("editor")
    assert viewer.get(f"{set_url}/prompts/new").status_code == 403
    assert viewer.post(f"{set_url}/submit", data={"bump": "minor"}).status_code == 403
    assert editor.post(f"{set_url}/approve", data={"revision": "1"}).status_code == 403
    assert editor.get(f"/projects/new/{world.org_slug}").status_code == 403
    assert client_as("reviewer").post(f"{set_url}/delete").status_code == 403
    assert (
        editor.post(f"/orgs/{world.org_slug}/invitations", data={"role": "owner"}).status_code
        == 403
    )
    assert editor.get("/admin/").status_code == 403
    assert client_as("admin").get("/admin/").status_code == 200


def test_objects_of_one_project_are_not_reachable_through_another(
    app: Flask, world: World, client_as: Any
) -> None:
    """The outsider owns project B; A's prompt set id under B's URL must not resolve."""
    outsider = client_as("outsider")
    url = f"/projects/{world.other_project_id}/sets/{world.set_id}"
    assert outsider.get(url).status_code == 404
    assert outsider.get(f"/projects/{world.other_project_id}").status_code == 200
