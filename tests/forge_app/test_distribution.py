"""Publishing from the FORGE: channels and their policy, pre-release snapshots, Publish to LIVE,
rollbacks and rollouts, revocation re-encrypting every channel, authorisation and CSRF.

The store is the FORGE's default local directory; every check reads what clients would read:
the signed pointer (verified with the FORGE's public key) and the encrypted bundle object
(decrypted with each ACCESS_TOKEN).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from anvil_client.errors import DecryptionError
from anvil_client.stores import FileStore
from anvil_client.wire import (
    AccessToken as WireToken,
)
from anvil_client.wire import (
    Pointer,
    Release,
    TrustedKey,
    decrypt_bundle,
    recipient_ids,
    sha256_hex,
    verify_envelope,
)
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import (
    AuditEvent,
    Project,
    PromptSet,
    PromptSetVersion,
    Role,
    SetStatus,
    User,
)
from forge_app.models.distribution import AccessToken, Channel, Publication
from forge_app.services import publishing
from forge_app.services.tokens import create_token
from forge_app.services.workflow import approve, submit, unlock
from publisher import Publisher, build_bundle
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version

MAX = 64 * 1024 * 1024
#: The flows that matter most also run on PostgreSQL (integration: a real server via pgserver).
BOTH_BACKENDS = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)


# ------------------------------------------------------------------------------ helpers


@dataclass
class Env:
    """The app, its world and handles on what clients would see in the store."""

    app: Flask
    world: World

    @property
    def pid(self) -> str:
        return str(self.world.project_id)

    def store(self) -> FileStore:
        with self.app.app_context():
            root = publishing.store_root()
        assert root is not None
        return FileStore(root)

    def trusted(self) -> list[TrustedKey]:
        with self.app.app_context():
            return [TrustedKey.parse(publishing.forge_public_key_text())]

    def pointer(self, channel: str) -> Pointer:
        data = self.store().get(f"projects/{self.pid}/channels/{channel}.json").data
        return Pointer.parse(verify_envelope(data, self.trusted()))

    def entry(self, channel: str, set_id: uuid.UUID | None = None) -> Release:
        """The channel's entry of a prompt set (the world's set by default)."""
        found = self.pointer(channel).entry(str(set_id or self.world.set_id))
        assert found is not None, f"{channel} does not serve {set_id or self.world.set_id}"
        return found

    def readers(self, release: Release) -> set[str]:
        return set(recipient_ids(self.store().get(release.object.path).data))

    def decrypt(self, release: Release, token_text: str) -> bytes:
        token = WireToken.parse(token_text)
        data = self.store().get(release.object.path).data
        assert sha256_hex(data) == release.object.sha256
        return decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX)

    def token(self, name: str = "svc") -> str:
        with self.app.app_context():
            project = db.session.get(Project, self.world.project_id)
            owner = db.session.get(User, self.world.users["owner"])
            assert project is not None and owner is not None
            _, text = create_token(project, name, user=owner)
            db.session.commit()
            return text

    def version_url(self, version: str) -> str:
        return f"/projects/{self.pid}/sets/{self.world.set_id}/versions/{version}/publish"

    def channel_url(self, channel: str) -> str:
        return f"/projects/{self.pid}/channels/{channel}"

    def call(self, action: Callable[..., Any], *args: Any, user: str = "owner", **kw: Any) -> Any:
        """Run a publishing service in an app context as ``user``, committing on success."""
        with self.app.app_context():
            actor = db.session.get(User, self.world.users[user])
            loaded = [self._load(a) for a in args]
            result = action(*loaded, user=actor, **kw)
            db.session.commit()
            return result

    def _load(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("channel:"):
            project = db.session.get(Project, self.world.project_id)
            assert project is not None
            publishing.ensure_default_channels(project)
            channel = publishing.get_channel(project, value.removeprefix("channel:"))
            assert channel is not None
            return channel
        if isinstance(value, str) and value.startswith("version:"):
            found = db.session.scalar(
                select(PromptSetVersion).where(
                    PromptSetVersion.prompt_set_id == self.world.set_id,
                    PromptSetVersion.version == value.removeprefix("version:"),
                )
            )
            assert found is not None
            return found
        if isinstance(value, str) and value == "set":
            return db.session.get(PromptSet, self.world.set_id)
        return value

    def set_prompt(self, text: str) -> None:
        prompts = dict(SAMPLE_PROMPTS)
        prompts["welcome.message"] = {"template": text, "metadata": {}}
        add_prompts(self.app, self.world, prompts)

    def release_new_version(self, text: str) -> str:
        """Unlock (if locked), change the welcome prompt and lock a new version."""
        with self.app.app_context():
            prompt_set = db.session.get(PromptSet, self.world.set_id)
            owner = db.session.get(User, self.world.users["owner"])
            assert prompt_set is not None and owner is not None
            if prompt_set.status == SetStatus.LOCKED.value:
                unlock(
                    db.session,
                    prompt_set,
                    owner,
                    role=Role.OWNER,
                    expected_revision=prompt_set.revision,
                )
                db.session.commit()
        self.set_prompt(text)
        return lock_version(self.app, self.world)

    def publications(self) -> list[Publication]:
        with self.app.app_context():
            return list(db.session.scalars(select(Publication).order_by(Publication.id)))

    def actions(self) -> list[str]:
        with self.app.app_context():
            return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.fixture
def env(app: Flask, world: World) -> Env:
    return Env(app, world)


@pytest.fixture
def locked(env: Env) -> str:
    """The world's set with sample prompts, approved as its first version."""
    add_prompts(env.app, env.world, SAMPLE_PROMPTS)
    return lock_version(env.app, env.world)


CHECKOUT: dict[str, dict[str, Any]] = {
    "checkout.upsell": {"template": "Try {{ item }} with it.", "metadata": {}},
}


def add_set(
    env: Env, name: str, prompts: dict[str, dict[str, Any]], *, status: str = "LOCKED"
) -> uuid.UUID:
    """Another prompt set of the project, with ``prompts``: LOCKED as 0.1.0 (default), in
    REVIEW (submitted as 0.1.0) or LIVE."""
    with env.app.app_context():
        prompt_set = PromptSet(
            project_id=env.world.project_id, name=name, description="", status="LIVE"
        )
        db.session.add(prompt_set)
        db.session.commit()
        set_id = prompt_set.id
    other = dataclasses.replace(env.world, set_id=set_id)
    add_prompts(env.app, other, prompts)
    if status == "LOCKED":
        lock_version(env.app, other)
    elif status == "REVIEW":
        with env.app.app_context():
            found = db.session.get(PromptSet, set_id)
            editor = db.session.get(User, env.world.users["editor"])
            assert found is not None and editor is not None
            submit(
                db.session,
                found,
                editor,
                role=Role.EDITOR,
                bump="minor",
                changelog="c",
                expected_revision=found.revision,
            )
            db.session.commit()
    return set_id


def rename_set(env: Env, set_id: uuid.UUID, name: str) -> None:
    with env.app.app_context():
        found = db.session.get(PromptSet, set_id)
        assert found is not None
        found.name = name
        db.session.commit()


def publish(env: Env, set_id: uuid.UUID, version: str, channel: str, **kw: Any) -> Publication:
    """Publish ``version`` of any set of the project as the owner."""
    with env.app.app_context():
        found = db.session.scalar(
            select(PromptSetVersion).where(
                PromptSetVersion.prompt_set_id == set_id, PromptSetVersion.version == version
            )
        )
        assert found is not None
        project = db.session.get(Project, env.world.project_id)
        owner = db.session.get(User, env.world.users["owner"])
        assert project is not None and owner is not None
        publishing.ensure_default_channels(project)
        target = publishing.get_channel(project, channel)
        assert target is not None
        publication = publishing.publish_version(found, target, user=owner, **kw)
        db.session.commit()
        db.session.refresh(publication)
        db.session.expunge(publication)
        return publication


def served(pointer: Pointer) -> list[tuple[str, str]]:
    return sorted((r.name, r.version) for r in pointer.releases)


def plan_rows(body: str, table: str) -> dict[str, str]:
    """``{set name: data-change}`` of a confirmation page's per-set table."""
    part = body.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'data-change="(\w+)">\s*<td class="strong">([^<]+)</td>', part)
    return {name: change for change, name in rows}


def flashes(client: FlaskClient) -> list[str]:
    with client.session_transaction() as session:
        return [message for _, message in session.get("_flashes", [])]


# --------------------------------------------------------------------------- channels


def test_default_channels_with_the_design_policy(env: Env, client_as: Any) -> None:
    page = client_as("viewer").get(f"/projects/{env.pid}/channels")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    for name in ("production", "staging", "development"):
        assert f">{name}</a>" in body
    with env.app.app_context():
        channels = {c.name: c.accepts for c in db.session.scalars(select(Channel))}
    assert channels == {
        "production": ("LOCKED",),
        "staging": ("REVIEW", "LOCKED"),
        "development": ("LIVE", "REVIEW", "LOCKED"),
    }


def test_owners_add_and_remove_custom_channels(env: Env, client_as: Any, locked: str) -> None:
    owner = client_as("owner")
    base = f"/projects/{env.pid}/channels"
    assert client_as("reviewer").post(base, data={"name": "canary"}).status_code == 403
    bad = owner.post(base, data={"name": "Not Valid!"})
    assert bad.status_code == 200 and "lowercase letters" in bad.get_data(as_text=True)
    response = owner.post(base, data={"name": "canary"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/channels/canary")
    duplicate = owner.post(base, data={"name": "canary"})
    assert "exists already" in duplicate.get_data(as_text=True)
    with env.app.app_context():
        canary = db.session.scalar(select(Channel).where(Channel.name == "canary"))
        assert canary is not None and canary.accepts == ("LOCKED",)
    # A reviewer may not publish to a LOCKED-only custom channel; an owner may.
    env.token()
    with pytest.raises(ForgeError, match="owner role"):
        env.call(
            publishing.publish_version,
            f"version:{locked}",
            "channel:canary",
            user="reviewer",
            role=Role.REVIEWER,
        )
    # Default channels cannot go; custom ones with releases stay for their history.
    assert owner.post(f"{base}/production/delete").status_code == 302
    assert "cannot be removed" in " ".join(flashes(owner))
    env.call(publishing.publish_version, f"version:{locked}", "channel:canary", role=Role.OWNER)
    owner.post(f"{base}/canary/delete")
    assert "stays so its history is kept" in " ".join(flashes(owner))
    owner.post(base, data={"name": "empty"})
    assert owner.post(f"{base}/empty/delete").status_code == 302
    with env.app.app_context():
        names = set(db.session.scalars(select(Channel.name)))
    assert "empty" not in names and "canary" in names
    assert "channel.create" in env.actions() and "channel.delete" in env.actions()


def test_channel_policy_is_enforced_on_the_server(env: Env, client_as: Any) -> None:
    env.token()
    add_prompts(env.app, env.world, SAMPLE_PROMPTS)  # the set is LIVE
    owner = client_as("owner")
    set_publish = f"/projects/{env.pid}/sets/{env.world.set_id}/publish"
    # The chooser refuses production for a LIVE set, with the reason.
    page = owner.get(f"{set_publish}?channel=production").get_data(as_text=True)
    assert "accepts only LOCKED prompt sets; this one is LIVE" in page
    assert owner.post(set_publish, data={"channel": "production"}).status_code == 403
    assert owner.post(set_publish, data={"channel": "staging"}).status_code == 403
    with env.app.app_context():
        assert db.session.scalar(select(PromptSetVersion.id)) is None, "no snapshot was made"
    assert not env.store().list("projects/")
    # Development takes it, as a -dev pre-release; confirming first makes no snapshot.
    confirm = owner.get(f"{set_publish}?channel=development").get_data(as_text=True)
    assert "a new -dev snapshot of Main" in confirm
    with env.app.app_context():
        assert db.session.scalar(select(PromptSetVersion.id)) is None
    response = owner.post(set_publish, data={"channel": "development"})
    assert response.status_code == 302
    assert env.entry("development").version == "0.0.1-dev.1"
    # A LIVE snapshot version can never reach production, even by its own URL.
    assert (
        owner.post(env.version_url("0.0.1-dev.1"), data={"channel": "production"}).status_code
        == 403
    )

    # REVIEW: staging takes it as -rc, production still not.
    with env.app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        editor = db.session.get(User, env.world.users["editor"])
        assert prompt_set is not None and editor is not None
        submit(
            db.session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="minor",
            changelog="c",
            expected_revision=prompt_set.revision,
        )
        db.session.commit()
    assert owner.post(set_publish, data={"channel": "production"}).status_code == 403
    assert owner.post(set_publish, data={"channel": "staging"}).status_code == 302
    assert env.entry("staging").version == "0.1.0-rc.1"
    with env.app.app_context():
        version = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == "0.1.0-rc.1")
        )
        assert version is not None and publishing.version_status(version) == "REVIEW"


def test_prerelease_numbers_grow_per_base_version(env: Env) -> None:
    env.token()
    env.set_prompt("Hello {{ name }}")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.entry("development").version == "0.0.1-dev.1"
    # Same prompts: the snapshot is reused, no dev.2.
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.entry("development").version == "0.0.1-dev.1"
    assert env.pointer("development").sequence == 2
    env.set_prompt("Hello again {{ name }}")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.entry("development").version == "0.0.1-dev.2"

    version = lock_version(env.app, env.world, bump="minor")
    assert version == "0.1.0"
    with env.app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        owner = db.session.get(User, env.world.users["owner"])
        assert prompt_set is not None and owner is not None
        unlock(
            db.session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision
        )
        db.session.commit()
    env.set_prompt("Third {{ name }}")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.entry("development").version == "0.1.1-dev.1"

    with env.app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        editor = db.session.get(User, env.world.users["editor"])
        assert prompt_set is not None and editor is not None
        submit(
            db.session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="major",
            changelog="c",
            expected_revision=prompt_set.revision,
        )
        db.session.commit()
    env.call(publishing.publish_prompt_set, "set", "channel:staging")
    env.set_prompt  # the set is frozen in REVIEW; publishing again reuses rc.1
    env.call(publishing.publish_prompt_set, "set", "channel:staging")
    assert env.entry("staging").version == "1.0.0-rc.1"
    with env.app.app_context():
        versions = set(db.session.scalars(select(PromptSetVersion.version)))
        # Pre-releases never count as releases: the next release is still computed from 0.1.0.
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        reviewer = db.session.get(User, env.world.users["reviewer"])
        assert prompt_set is not None and reviewer is not None
        approved = approve(
            db.session,
            prompt_set,
            reviewer,
            role=Role.REVIEWER,
            expected_revision=prompt_set.revision,
        )
        db.session.commit()
        assert approved.version == "1.0.0"
    assert versions == {"0.0.1-dev.1", "0.0.1-dev.2", "0.1.0", "0.1.1-dev.1", "1.0.0-rc.1"}
    assert env.actions().count("prompt_set.snapshot") == 4


# ------------------------------------------------------------------------------ publish


@BOTH_BACKENDS
def test_publish_to_live_choose_confirm_publish(env: Env, client_as: Any, locked: str) -> None:
    token_a, token_b = env.token("a"), env.token("b")
    owner = client_as("owner")
    url = env.version_url(locked)

    version_page = owner.get(f"/projects/{env.pid}/sets/{env.world.set_id}/versions/{locked}")
    assert url in version_page.get_data(as_text=True), "the version page links Publish to LIVE"

    choose = owner.get(url).get_data(as_text=True)
    assert 'name="channel" value="production"' in choose

    _add_instance(env, "production", hostname="web-1.internal", version="0.0.9")
    confirm = owner.get(f"{url}?channel=production&rollout=")
    body = confirm.get_data(as_text=True)
    assert confirm.status_code == 200
    assert "web-1.internal" in body and "0.0.9" in body, "lists the instances and what they serve"
    assert "serves nothing yet" in body
    assert plan_rows(body, "publish-plan") == {"Main": "added"}
    assert not env.store().list("projects/"), "confirming wrote nothing"

    response = owner.post(url, data={"channel": "production"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(
        f"/projects/{env.pid}/channels/production/publications/1"
    )
    pointer = env.pointer("production")
    [release] = pointer.releases
    assert (pointer.sequence, release.version, release.name, pointer.rollout) == (
        1,
        locked,
        "Main",
        None,
    )
    assert env.readers(release) == {
        WireToken.parse(token_a).token_id,
        WireToken.parse(token_b).token_id,
    }
    with env.app.app_context():
        version = db.session.scalar(select(PromptSetVersion))
        assert version is not None
        bundle = version.bundle_bytes
    assert env.decrypt(release, token_a) == bundle
    assert env.decrypt(release, token_b) == bundle
    assert release.content_sha256 == sha256_hex(bundle)

    [publication] = env.publications()
    assert (publication.kind, publication.sequence, publication.version) == ("publish", 1, locked)
    assert publication.published_by_id == env.world.users["owner"]
    assert publication.content_sha256 == release.content_sha256
    assert publication.summary == "Main added"
    assert [e["version"] for e in publication.releases] == [locked]
    assert publication.releases[0]["object_path"] == release.object.path
    assert publication.previous_releases is None
    assert "channel.publish" in env.actions()

    status = owner.get(response.headers["Location"])
    assert status.status_code == 200 and locked in status.get_data(as_text=True)
    channel_page = owner.get(env.channel_url("production")).get_data(as_text=True)
    assert locked in channel_page and "Owner" in channel_page


def _add_instance(env: Env, channel: str, *, hostname: str, version: str) -> None:
    from forge_app.models.instances import LiveInstance

    with env.app.app_context():
        db.session.add(
            LiveInstance(
                project_id=env.world.project_id,
                instance_id=str(uuid.uuid4()),
                token_id="abcdefghijkl",
                hostname=hostname,
                channel=channel,
                mode="accepting",
                sequence=7,
                releases=[
                    {
                        "prompt_set_id": str(env.world.set_id),
                        "version": version,
                        "content_sha256": "0" * 64,
                    }
                ],
                last_error=None,
                client_version="test",
            )
        )
        db.session.commit()


def test_publishing_needs_a_token(env: Env, client_as: Any, locked: str) -> None:
    owner = client_as("owner")
    page = owner.get(env.version_url(locked)).get_data(as_text=True)
    assert "no ACCESS_TOKEN yet" in page
    response = owner.post(env.version_url(locked), data={"channel": "production"})
    assert response.status_code == 302
    assert any("generate one in Tokens first" in m for m in flashes(owner))
    assert env.publications() == []
    assert not env.store().list("projects/")


def test_an_unreachable_store_is_one_sentence_and_changes_nothing(
    app_config: dict[str, Any], tmp_path: Any, password_hash: str
) -> None:
    from forge_app import create_app
    from tests.forge_app.conftest import login

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store should be")
    app = create_app({**app_config, "FORGE_STORE_URL": blocker.as_uri()})
    try:
        world = _tiny_world(app, password_hash)
        env = Env(app, world)
        add_prompts(app, world, SAMPLE_PROMPTS)
        version = lock_version(app, world)
        env.token()
        owner = login(app.test_client(), world.users["owner"])
        response = owner.post(env.version_url(version), data={"channel": "production"})
        assert response.status_code == 302
        messages = flashes(owner)
        assert len(messages) == 1
        assert messages[0].startswith("The store cannot be reached, so nothing was published")
        assert env.publications() == []
        assert "channel.publish" not in env.actions()
        # The channel page says so too, instead of failing.
        page = owner.get(env.channel_url("production"))
        assert page.status_code == 200
        assert "The store cannot be reached" in page.get_data(as_text=True)
    finally:
        with app.app_context():
            db.engine.dispose()


def _tiny_world(app: Flask, password_hash: str) -> World:
    from forge_app.services.users import add_member, create_org, create_user

    with app.app_context():
        org = create_org(db.session, "Acme", "acme")
        owner = create_user(db.session, "o@example.com", name="Owner", password_hash=password_hash)
        editor = create_user(db.session, "e@example.com", name="Ed", password_hash=password_hash)
        reviewer = create_user(db.session, "r@example.com", name="Rev", password_hash=password_hash)
        add_member(db.session, org, owner, Role.OWNER)
        add_member(db.session, org, editor, Role.EDITOR)
        add_member(db.session, org, reviewer, Role.REVIEWER)
        project = Project(org_id=org.id, name="P", description="")
        db.session.add(project)
        db.session.flush()
        prompt_set = PromptSet(project_id=project.id, name="S", description="", status="LIVE")
        db.session.add(prompt_set)
        db.session.commit()
        users = {"owner": owner.id, "editor": editor.id, "reviewer": reviewer.id}
        return World(
            org_id=org.id,
            org_slug="acme",
            project_id=project.id,
            set_id=prompt_set.id,
            other_org_slug="",
            other_project_id=uuid.uuid4(),
            users=users,
            emails={},
        )


# -------------------------------------------------------------------- revoke, rollback


@BOTH_BACKENDS
def test_revoke_reencrypts_every_channel_for_the_remaining_tokens(
    env: Env, client_as: Any, locked: str
) -> None:
    keep_a, revoked, keep_c = env.token("a"), env.token("b"), env.token("c")
    revoked_id = WireToken.parse(revoked).token_id
    for channel in ("production", "staging", "development"):
        env.call(publishing.publish_version, f"version:{locked}", f"channel:{channel}")
    checkout = add_set(env, "Checkout helper", CHECKOUT)
    publish(env, checkout, "0.1.0", "production")
    second = env.release_new_version("Second {{ name }}")
    env.call(
        publishing.publish_version, f"version:{second}", "channel:production", rollout_percent=30
    )
    # A channel published outside the FORGE (CI with anvil-publish) is re-encrypted too.
    with env.app.app_context():
        key = publishing.forge_signing_key()
        version = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == locked)
        )
        assert version is not None
        ci_bundle = build_bundle(
            {"ci.only": {"template": "From CI"}},
            project_id=env.pid,
            version="1.0.0",
            prompt_set_id="ci-set",
        )
        with Publisher(env.store(), project_id=env.pid, signing_key=key) as pub:
            pub.publish(version.bundle_bytes, channel="ci-only", recipients=[keep_a, revoked])
            # An entry the FORGE has no version of: re-encrypted by decrypting it.
            pub.publish(ci_bundle, channel="ci-only", name="CI set", recipients=[keep_a, revoked])
    before = {c: env.pointer(c) for c in ("production", "staging", "development", "ci-only")}
    for pointer in before.values():
        for release in pointer.all_releases():
            assert env.decrypt(release, revoked)

    owner = client_as("owner")
    confirm = owner.get(f"/projects/{env.pid}/tokens/{revoked_id}/revoke").get_data(as_text=True)
    assert "re-encrypted for the 2 remaining tokens" in confirm
    assert "production" in confirm and "staging" in confirm
    assert owner.post(f"/projects/{env.pid}/tokens/{revoked_id}/revoke").status_code == 302
    message = " ".join(flashes(owner))
    assert "is revoked" in message and "Re-encrypted and re-published" in message
    for name in ("production", "staging", "development", "ci-only"):
        assert name in message

    remaining = {WireToken.parse(keep_a).token_id, WireToken.parse(keep_c).token_id}
    for name, old in before.items():
        new = env.pointer(name)
        assert new.sequence == old.sequence + 1
        assert [r.content_sha256 for r in new.all_releases()] == [
            r.content_sha256 for r in old.all_releases()
        ]
        assert [r.version for r in new.releases] == [r.version for r in old.releases]
        for release in new.all_releases():
            assert env.readers(release) == remaining
            with pytest.raises(DecryptionError):
                env.decrypt(release, revoked)
            plain = env.decrypt(release, keep_a)
            assert env.decrypt(release, keep_c) == plain
            assert sha256_hex(plain) == release.content_sha256
    rollout = env.pointer("production").rollout
    assert rollout is not None and rollout.percent == 30
    assert len(env.pointer("production").releases) == 2 and len(rollout.previous) == 2
    assert len(env.pointer("ci-only").releases) == 2
    old_rollout = before["production"].rollout
    assert old_rollout is not None
    assert [r.content_sha256 for r in rollout.previous] == [
        r.content_sha256 for r in old_rollout.previous
    ]

    kinds = [(p.kind, p.channel.name if p.channel else None) for p in _with_channels(env)]
    assert kinds.count(("reencrypt", "production")) == 1
    assert sum(1 for k, _ in kinds if k == "reencrypt") == 4
    actions = env.actions()
    assert actions.count("channel.reencrypt") == 4 and "token.revoke" in actions
    # A second revocation of the same token is refused, and nothing moves.
    assert owner.post(f"/projects/{env.pid}/tokens/{revoked_id}/revoke").status_code == 302
    assert env.pointer("production").sequence == before["production"].sequence + 1
    # Entries CI wrote say what they changed too, computed from the signed history.
    history = owner.get(env.channel_url("ci-only")).get_data(as_text=True)
    rows = history.split('id="channel-history"', 1)[1]
    assert "CI set added" in rows and "Main added" in rows
    assert rows.count("(published outside the FORGE)") == 2


def _with_channels(env: Env) -> list[Publication]:
    with env.app.app_context():
        rows = list(db.session.scalars(select(Publication).order_by(Publication.id)))
        for row in rows:
            _ = row.channel.name
        return rows


def test_a_new_token_can_read_what_is_already_published(
    env: Env, client_as: Any, locked: str
) -> None:
    first = env.token("first")
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    owner = client_as("owner")
    response = owner.post(f"/projects/{env.pid}/tokens", data={"name": "second"})
    body = response.get_data(as_text=True)
    second = re.findall(r"anvil_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", body)[0]
    assert "Re-encrypted and re-published: production" in body
    pointer = env.pointer("production")
    assert pointer.sequence == 2
    [release] = pointer.releases
    assert env.decrypt(release, second) == env.decrypt(release, first)


def test_the_last_token_cannot_be_revoked_while_channels_serve_releases(
    env: Env, client_as: Any, locked: str
) -> None:
    only = env.token("only")
    env.call(publishing.publish_version, f"version:{locked}", "channel:staging")
    owner = client_as("owner")
    token_id = WireToken.parse(only).token_id
    page = owner.get(f"/projects/{env.pid}/tokens/{token_id}/revoke").get_data(as_text=True)
    assert "last active token" in page
    owner.post(f"/projects/{env.pid}/tokens/{token_id}/revoke")
    assert any("Generate the replacement token first" in m for m in flashes(owner))
    with env.app.app_context():
        assert db.session.scalar(select(AccessToken.revoked_at)) is None
    assert env.pointer("staging").sequence == 1


@BOTH_BACKENDS
def test_rollback_reencrypts_the_old_content_for_the_current_tokens(
    env: Env, client_as: Any, locked: str
) -> None:
    keep, gone = env.token("keep"), env.token("gone")
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    first = env.pointer("production")
    second = env.release_new_version("Second {{ name }}")
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    gone_id = WireToken.parse(gone).token_id
    owner = client_as("owner")
    owner.post(f"/projects/{env.pid}/tokens/{gone_id}/revoke")
    assert env.pointer("production").sequence == 3

    page = owner.get(env.channel_url("production")).get_data(as_text=True)
    assert "Roll back to this" in page and "data-confirm" not in page.split("History")[-1]
    confirm = owner.get(f"{env.channel_url('production')}/rollback?sequence=1")
    body = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "Roll back production" in body
    assert second in body and locked in body, "what it serves now and after"
    assert env.pointer("production").sequence == 3, "the confirmation wrote nothing"
    response = owner.post(f"{env.channel_url('production')}/rollback", data={"sequence": "1"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/channels/production/publications/4")
    pointer = env.pointer("production")
    assert pointer.sequence == 4
    [release], [old] = pointer.releases, first.releases
    assert release.version == locked
    assert release.content_sha256 == old.content_sha256
    assert release.object.path != old.object.path, "a new object, not the old"
    assert env.readers(release) == {WireToken.parse(keep).token_id}
    with pytest.raises(DecryptionError):
        env.decrypt(release, gone)
    assert sha256_hex(env.decrypt(release, keep)) == old.content_sha256
    last = env.publications()[-1]
    assert (last.kind, last.sequence, last.version) == ("rollback", 4, None)
    assert [e["version"] for e in last.releases] == [locked]
    assert last.summary == f"Rolled back to sequence 1: Main {second} → {locked}"
    assert "channel.rollback" in env.actions()

    # An unknown history entry is one sentence, nothing moves.
    owner.post(f"{env.channel_url('production')}/rollback", data={"sequence": "99"})
    assert env.pointer("production").sequence == 4


def test_rollout_controls(env: Env, client_as: Any, locked: str) -> None:
    env.token()
    owner = client_as("owner")
    url = f"{env.channel_url('production')}/rollout"
    # No release yet: a rollout has nothing to roll out from.
    owner.post(env.version_url(locked), data={"channel": "production", "rollout": "20"})
    assert any("nothing to roll out from" in m for m in flashes(owner))
    assert env.publications() == []

    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    second = env.release_new_version("Second {{ name }}")
    owner.post(env.version_url(second), data={"channel": "production", "rollout": "20"})
    pointer = env.pointer("production")
    assert pointer.releases[0].version == second
    assert pointer.rollout is not None and pointer.rollout.percent == 20
    assert pointer.rollout.previous[0].version == locked

    page = owner.get(env.channel_url("production")).get_data(as_text=True)
    assert "Complete rollout" in page and "Abort rollout" in page and "20%" in page

    owner.post(url, data={"action": "set", "percent": "50"})
    pointer = env.pointer("production")
    assert pointer.rollout is not None and pointer.rollout.percent == 50
    assert pointer.releases[0].version == second
    owner.post(url, data={"action": "set", "percent": "0"})
    assert any("from 1 to 100" in m for m in flashes(owner))
    owner.post(url, data={"action": "complete"})
    pointer = env.pointer("production")
    assert pointer.rollout is None and pointer.releases[0].version == second
    owner.post(url, data={"action": "complete"})
    assert any("no rollout in progress" in m for m in flashes(owner))

    third = env.release_new_version("Third {{ name }}")
    env.call(
        publishing.publish_version, f"version:{third}", "channel:production", rollout_percent=10
    )
    owner.post(url, data={"action": "abort"})
    pointer = env.pointer("production")
    assert pointer.rollout is None and pointer.releases[0].version == second

    kinds = [(p.kind, p.rollout_percent) for p in env.publications()]
    assert kinds == [
        ("publish", None),
        ("publish", 20),
        ("rollout", 50),
        ("rollout", None),
        ("publish", 10),
        ("rollout", None),
    ]
    actions = env.actions()
    for action in ("rollout.update", "rollout.complete", "rollout.abort"):
        assert action in actions


def test_channel_history_shows_who_published_what(env: Env, client_as: Any, locked: str) -> None:
    env.token()
    env.call(
        publishing.publish_version,
        f"version:{locked}",
        "channel:staging",
        user="reviewer",
        role=Role.REVIEWER,
    )
    env.call(publishing.publish_version, f"version:{locked}", "channel:staging")
    page = client_as("viewer").get(env.channel_url("staging")).get_data(as_text=True)
    assert "Reviewer" in page and "Owner" in page
    assert page.count(locked) >= 3
    assert "Roll back to this" not in page, "viewers see no publishing controls"


# --------------------------------------------------------------------- authorisation


def test_who_may_publish_where(env: Env, client_as: Any, locked: str) -> None:
    env.token()
    url = env.version_url(locked)
    for role in ("viewer", "editor"):
        client = client_as(role)
        assert client.get(url).status_code == 403
        assert client.post(url, data={"channel": "production"}).status_code == 403
        assert client.post(url, data={"channel": "development"}).status_code == 403
    reviewer = client_as("reviewer")
    assert reviewer.post(url, data={"channel": "production"}).status_code == 403
    assert "needs the owner role" in reviewer.get(url).get_data(as_text=True)
    assert reviewer.post(url, data={"channel": "staging"}).status_code == 302
    assert reviewer.post(url, data={"channel": "development"}).status_code == 302
    assert client_as("owner").post(url, data={"channel": "production"}).status_code == 302
    # Channel actions follow the same rule.
    production = env.channel_url("production")
    for role in ("viewer", "editor", "reviewer"):
        client = client_as(role)
        assert client.post(f"{production}/rollback", data={"sequence": "1"}).status_code == 403
        assert client.get(f"{production}/rollback?sequence=1").status_code == 403
        assert client.post(f"{production}/rollout", data={"action": "abort"}).status_code == 403
        assert client.post(f"{production}/reencrypt").status_code == 403
    for role in ("viewer", "editor"):
        staging = env.channel_url("staging")
        assert (
            client_as(role).post(f"{staging}/rollback", data={"sequence": "1"}).status_code == 403
        )
    assert [p.sequence for p in env.publications()] == [1, 1, 1]


def test_members_of_another_organisation_can_do_nothing(
    env: Env, client_as: Any, locked: str
) -> None:
    env.token()
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    outsider = client_as("outsider")
    pid, sid = env.pid, env.world.set_id
    for method, url, data in [
        ("GET", f"/projects/{pid}/channels", None),
        ("POST", f"/projects/{pid}/channels", {"name": "evil"}),
        ("GET", f"/projects/{pid}/channels/production", None),
        ("GET", f"/projects/{pid}/channels/production/publications/1", None),
        ("POST", f"/projects/{pid}/channels/production/rollback", {"sequence": "1"}),
        ("POST", f"/projects/{pid}/channels/production/rollout", {"action": "abort"}),
        ("POST", f"/projects/{pid}/channels/production/reencrypt", None),
        ("POST", f"/projects/{pid}/channels/production/delete", None),
        ("GET", f"/projects/{pid}/channels/production/rollback?sequence=1", None),
        ("GET", f"/projects/{pid}/channels/production/remove?set={sid}", None),
        ("POST", f"/projects/{pid}/channels/production/remove", {"set": str(sid)}),
        ("GET", f"/projects/{pid}/sets/{sid}/versions/{locked}/publish", None),
        (
            "POST",
            f"/projects/{pid}/sets/{sid}/versions/{locked}/publish",
            {"channel": "production"},
        ),
        ("GET", f"/projects/{pid}/sets/{sid}/publish", None),
        ("POST", f"/projects/{pid}/sets/{sid}/publish", {"channel": "development"}),
        # Through the outsider's own project: another project's set is not found.
        (
            "POST",
            f"/projects/{env.world.other_project_id}/sets/{sid}/versions/{locked}/publish",
            {"channel": "production"},
        ),
    ]:
        response = outsider.open(url, method=method, data=data)
        assert response.status_code == 404, (method, url, response.status_code)
    assert env.pointer("production").sequence == 1
    assert len(env.publications()) == 1


# ------------------------------------------------------------------------------- CSRF


@pytest.fixture
def csrf_app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "WTF_CSRF_ENABLED": True}


def test_every_distribution_form_needs_csrf(
    csrf_app_config: dict[str, Any], password_hash: str
) -> None:
    from forge_app import create_app
    from tests.forge_app.conftest import login

    app = create_app(csrf_app_config)
    try:
        world = _tiny_world(app, password_hash)
        env = Env(app, world)
        add_prompts(app, world, SAMPLE_PROMPTS)
        version = lock_version(app, world)
        text = env.token()
        token_id = WireToken.parse(text).token_id
        env.call(publishing.publish_version, f"version:{version}", "channel:production")
        owner = login(app.test_client(), world.users["owner"])

        # Every form on every distribution page carries the token...
        pages = [
            f"/projects/{env.pid}/tokens",
            f"/projects/{env.pid}/tokens/{token_id}/revoke",
            f"/projects/{env.pid}/channels",
            f"/projects/{env.pid}/channels/production",
            f"{env.version_url(version)}?channel=staging",
            f"/projects/{env.pid}/settings",
            f"/projects/{env.pid}/channels/production/remove?set={world.set_id}",
            f"/projects/{env.pid}/channels/production/rollback?sequence=1",
        ]
        forms = 0
        for page in pages:
            body = owner.get(page).get_data(as_text=True)
            for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", body, re.S):
                forms += 1
                assert 'name="csrf_token"' in form, (page, form[:200])
        assert forms >= 10
        # ...and every POST without it is refused before anything happens.
        base = f"/projects/{env.pid}"
        posts = [
            (f"{base}/tokens", {"name": "x"}),
            (f"{base}/tokens/{token_id}/reveal", {}),
            (f"{base}/tokens/{token_id}/revoke", {}),
            (f"{base}/tokens/reencrypt", {}),
            (f"{base}/channels", {"name": "canary"}),
            (f"{base}/channels/production/delete", {}),
            (f"{base}/channels/production/rollback", {"sequence": "1"}),
            (f"{base}/channels/production/remove", {"set": str(world.set_id)}),
            (f"{base}/channels/production/rollout", {"action": "abort"}),
            (f"{base}/channels/production/reencrypt", {}),
            (env.version_url(version), {"channel": "staging"}),
            (f"{base}/sets/{world.set_id}/publish", {"channel": "staging"}),
        ]
        for url, data in posts:
            response = owner.post(url, data=data)
            assert response.status_code == 400, url
            assert "security token" in response.get_data(as_text=True)
        with app.app_context():
            assert db.session.scalar(select(AccessToken.revoked_at)) is None
            assert len(db.session.scalars(select(AccessToken)).all()) == 1
        assert env.pointer("production").sequence == 1
        assert len(env.publications()) == 1
    finally:
        with app.app_context():
            db.engine.dispose()


def test_project_settings_show_the_signing_key_and_store(env: Env, client_as: Any) -> None:
    page = client_as("viewer").get(f"/projects/{env.pid}/settings").get_data(as_text=True)
    with env.app.app_context():
        public = publishing.forge_public_key_text()
        keyid = publishing.forge_key_id()
    assert public.startswith("ed25519:") and public in page
    assert keyid in page
    assert "http://localhost/store" in page
    assert "/.well-known/anvil-keys.json" in page


# ------------------------------------------------------------- several sets per channel


def test_publishing_checkout_helper_to_staging_keeps_support_bot(
    env: Env, client_as: Any, locked: str
) -> None:
    """The bug report of issue 8: staging served Support bot 0.3.0; publishing Checkout helper
    to it silently replaced it. Now the channel serves both, Support bot's entry untouched."""
    token = env.token()
    rename_set(env, env.world.set_id, "Support bot")
    env.release_new_version("Second {{ name }}")
    support = env.release_new_version("Third {{ name }}")
    assert support == "0.3.0"
    env.call(
        publishing.publish_version,
        f"version:{support}",
        "channel:staging",
        user="reviewer",
        role=Role.REVIEWER,
    )
    before = env.entry("staging")
    checkout = add_set(env, "Checkout helper", CHECKOUT, status="REVIEW")

    reviewer = client_as("reviewer")
    set_publish = f"/projects/{env.pid}/sets/{checkout}/publish"
    confirm = reviewer.get(f"{set_publish}?channel=staging").get_data(as_text=True)
    assert plan_rows(confirm, "publish-plan") == {
        "Support bot": "unchanged",
        "Checkout helper": "added",
    }
    response = reviewer.post(set_publish, data={"channel": "staging"})
    assert response.status_code == 302
    assert any("Checkout helper added" in m for m in flashes(reviewer))

    pointer = env.pointer("staging")
    assert served(pointer) == [("Checkout helper", "0.1.0-rc.1"), ("Support bot", "0.3.0")]
    assert env.entry("staging") == before, "Support bot's entry is carried over byte-identical"
    for release in pointer.releases:
        assert sha256_hex(env.decrypt(release, token)) == release.content_sha256
    last = env.publications()[-1]
    assert (last.kind, last.version, last.prompt_set_id) == ("publish", "0.1.0-rc.1", str(checkout))
    assert last.summary == "Checkout helper added"
    assert sorted(e["name"] for e in last.releases) == ["Checkout helper", "Support bot"]

    page = client_as("viewer").get(env.channel_url("staging")).get_data(as_text=True)
    sets = page.split('id="channel-sets"', 1)[1].split("</table>", 1)[0]
    assert "Support bot" in sets and "0.3.0" in sets
    assert "Checkout helper" in sets and "0.1.0-rc.1" in sets
    assert "Reviewer" in sets, "published by whom"
    assert "Checkout helper added" in page.split('id="channel-history"', 1)[1]


def test_publish_confirmation_shows_each_set_before_and_after(
    env: Env, client_as: Any, locked: str
) -> None:
    env.token()
    checkout = add_set(env, "Checkout helper", CHECKOUT)
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    publish(env, checkout, "0.1.0", "production")
    kept = env.entry("production", checkout)
    second = env.release_new_version("Second {{ name }}")
    owner = client_as("owner")
    body = owner.get(f"{env.version_url(second)}?channel=production").get_data(as_text=True)
    assert plan_rows(body, "publish-plan") == {"Main": "updated", "Checkout helper": "unchanged"}
    plan = body.split('id="publish-plan"', 1)[1].split("</table>", 1)[0]
    assert locked in plan and second in plan
    assert 'id="prompt-clash"' not in body and "data-publish disabled" not in body

    owner.post(env.version_url(second), data={"channel": "production"})
    assert served(env.pointer("production")) == [("Checkout helper", "0.1.0"), ("Main", second)]
    assert env.entry("production", checkout) == kept
    assert env.publications()[-1].summary == f"Main {locked} → {second}"


def test_a_prompt_id_clash_is_shown_before_publishing_and_refused(
    env: Env, client_as: Any, locked: str
) -> None:
    env.token()
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    clashing = add_set(
        env,
        "Checkout helper",
        {**CHECKOUT, "welcome.message": {"template": "Hi {{ name }}", "metadata": {}}},
    )
    url = f"/projects/{env.pid}/sets/{clashing}/versions/0.1.0/publish"
    owner = client_as("owner")
    body = owner.get(f"{url}?channel=production").get_data(as_text=True)
    clash = body.split('id="prompt-clash"', 1)[1].split("</div>", 1)[0]
    assert "&#39;welcome.message&#39;" in clash or "'welcome.message'" in clash
    assert f"Main {locked}" in clash and "Checkout helper 0.1.0" in clash
    assert "data-publish disabled" in body, "the button is disabled"

    # The server refuses it too (a POST without the page), naming the id and both sets.
    response = owner.post(url, data={"channel": "production"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"{url}?channel=production")
    [message] = flashes(owner)
    assert "'welcome.message'" in message and f"Main {locked}" in message
    assert message.endswith("nothing was published.")
    pointer = env.pointer("production")
    assert pointer.sequence == 1 and served(pointer) == [("Main", locked)]
    assert len(env.publications()) == 1
    assert env.actions().count("channel.publish") == 1


def test_owners_remove_one_set_from_a_channel(env: Env, client_as: Any, locked: str) -> None:
    token = env.token()
    checkout = add_set(env, "Checkout helper", CHECKOUT)
    env.call(publishing.publish_version, f"version:{locked}", "channel:staging")
    publish(env, checkout, "0.1.0", "staging")
    main = env.entry("staging")
    remove = f"{env.channel_url('staging')}/remove"

    # Reviewers publish to staging but do not remove sets; viewers neither.
    for role in ("viewer", "reviewer"):
        client = client_as(role)
        assert client.get(f"{remove}?set={checkout}").status_code == 403
        assert client.post(remove, data={"set": str(checkout)}).status_code == 403
        assert "Remove…" not in client.get(env.channel_url("staging")).get_data(as_text=True)
    owner = client_as("owner")
    assert f"remove?set={checkout}" in owner.get(env.channel_url("staging")).get_data(as_text=True)

    confirm = owner.get(f"{remove}?set={checkout}")
    body = confirm.get_data(as_text=True)
    assert confirm.status_code == 200
    assert "Remove Checkout helper from staging" in body
    assert "data-confirm" not in body, "a confirmation page, not window.confirm"
    plan = body.split('id="remove-plan"', 1)[1].split("</table>", 1)[0]
    main_row = plan.split(f'data-set="{env.world.set_id}"', 1)[1].split("</tr>", 1)[0]
    checkout_row = plan.split(f'data-set="{checkout}"', 1)[1].split("</tr>", 1)[0]
    assert "unchanged" in main_row and "removed" in checkout_row
    assert env.pointer("staging").sequence == 2, "the confirmation wrote nothing"

    response = owner.post(remove, data={"set": str(checkout)})
    assert response.status_code == 302
    assert any("Checkout helper removed" in m for m in flashes(owner))
    pointer = env.pointer("staging")
    assert pointer.sequence == 3 and pointer.releases == [main]
    assert sha256_hex(env.decrypt(main, token)) == main.content_sha256
    last = env.publications()[-1]
    assert (last.kind, last.version, last.prompt_set_id) == ("remove", None, None)
    assert last.summary == "Checkout helper removed"
    assert [e["prompt_set_id"] for e in last.releases] == [str(env.world.set_id)]
    assert "channel.remove_set" in env.actions()
    history = owner.get(env.channel_url("staging")).get_data(as_text=True)
    assert "Checkout helper removed" in history.split('id="channel-history"', 1)[1]

    # The last set cannot go; an unknown set is not found; neither changes anything.
    last_one = owner.get(f"{remove}?set={env.world.set_id}").get_data(as_text=True)
    assert "the only prompt set on staging" in last_one and "data-remove disabled" in last_one
    owner.post(remove, data={"set": str(env.world.set_id)})
    assert any("only prompt set" in m for m in flashes(owner))
    assert owner.get(f"{remove}?set={checkout}").status_code == 404
    assert owner.post(remove, data={"set": str(checkout)}).status_code == 404
    assert env.pointer("staging").sequence == 3
    assert [p.kind for p in env.publications()].count("remove") == 1


def test_rollback_restores_the_whole_list_reencrypted(
    env: Env, client_as: Any, locked: str
) -> None:
    first_token = env.token("first")
    checkout = add_set(env, "Checkout helper", CHECKOUT)
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    publish(env, checkout, "0.1.0", "production")
    both = env.pointer("production")  # sequence 2: Main 0.1.0 + Checkout helper 0.1.0
    second = env.release_new_version("Second {{ name }}")
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    env.call(publishing.remove_from_channel, "channel:production", str(checkout))
    assert served(env.pointer("production")) == [("Main", second)]
    owner = client_as("owner")
    later = env.token("later")  # the rollback encrypts for it too

    body = owner.get(f"{env.channel_url('production')}/rollback?sequence=2").get_data(as_text=True)
    assert plan_rows(body, "rollback-plan") == {"Main": "updated", "Checkout helper": "added"}
    response = owner.post(f"{env.channel_url('production')}/rollback", data={"sequence": "2"})
    assert response.status_code == 302
    pointer = env.pointer("production")
    assert served(pointer) == served(both)
    assert [r.content_sha256 for r in pointer.releases] == [r.content_sha256 for r in both.releases]
    later_id = WireToken.parse(later).token_id
    for release, old in zip(pointer.releases, both.releases, strict=True):
        assert release.object.path != old.object.path, "re-encrypted, not the old object"
        assert later_id in env.readers(release)
        assert env.decrypt(release, later) == env.decrypt(release, first_token)
    last = env.publications()[-1]
    assert last.kind == "rollback" and len(last.releases) == 2
    assert (
        last.summary
        == f"Rolled back to sequence 2: Main {second} → {locked}; Checkout helper added"
    )


def test_prerelease_snapshots_per_set_share_a_channel(env: Env) -> None:
    env.token()
    env.set_prompt("Hello {{ name }}")
    other = add_set(env, "Checkout helper", CHECKOUT, status="LIVE")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    with env.app.app_context():
        checkout = db.session.get(PromptSet, other)
        owner = db.session.get(User, env.world.users["owner"])
        project = db.session.get(Project, env.world.project_id)
        assert checkout is not None and owner is not None and project is not None
        development = publishing.get_channel(project, "development")
        assert development is not None
        publishing.publish_prompt_set(checkout, development, user=owner)
        db.session.commit()
    assert served(env.pointer("development")) == [
        ("Checkout helper", "0.0.1-dev.1"),
        ("Main", "0.0.1-dev.1"),
    ]
    kept = env.entry("development", other)
    env.set_prompt("Hello again {{ name }}")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.entry("development").version == "0.0.1-dev.2"
    assert env.entry("development", other) == kept


def test_project_overview_shows_what_each_channel_serves(
    env: Env, client_as: Any, locked: str
) -> None:
    env.token()
    checkout = add_set(env, "Checkout helper", CHECKOUT)
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    publish(env, checkout, "0.1.0", "production")
    page = client_as("viewer").get(f"/projects/{env.pid}").get_data(as_text=True)
    overview = page.split('id="channel-overview"', 1)[1].split("</table>", 1)[0]
    production = overview.split('data-channel="production"', 1)[1].split("</tr>", 1)[0]
    assert "Main" in production and "Checkout helper" in production and locked in production
    assert "Checkout helper added" in production
    staging = overview.split('data-channel="staging"', 1)[1].split("</tr>", 1)[0]
    assert "nothing published" in staging
    channels = client_as("viewer").get(f"/projects/{env.pid}/channels").get_data(as_text=True)
    assert "Checkout helper" in channels and "Main" in channels


def test_a_clash_of_a_set_being_edited_is_shown_for_its_snapshot(
    env: Env, client_as: Any, locked: str
) -> None:
    """A LIVE set has no version yet: the check uses its current prompts (no snapshot is made
    by looking), and the POST is refused without a snapshot reaching the channel."""
    env.token()
    env.call(publishing.publish_version, f"version:{locked}", "channel:development")
    draft = add_set(
        env,
        "Checkout helper",
        {"support.chat": {"template": "Mine {{ x }}", "metadata": {}}},
        status="LIVE",
    )
    owner = client_as("owner")
    url = f"/projects/{env.pid}/sets/{draft}/publish"
    body = owner.get(f"{url}?channel=development").get_data(as_text=True)
    clash = body.split('id="prompt-clash"', 1)[1].split("</div>", 1)[0]
    assert "support.chat" in clash and f"Main {locked}" in clash
    assert "Checkout helper (its current prompts)" in clash
    assert "data-publish disabled" in body
    owner.post(url, data={"channel": "development"})
    assert any("'support.chat'" in m for m in flashes(owner))
    assert served(env.pointer("development")) == [("Main", locked)]
    with env.app.app_context():
        snapshots = db.session.scalars(
            select(PromptSetVersion.version).where(PromptSetVersion.prompt_set_id == draft)
        ).all()
    assert snapshots == [], "the refused publish left no snapshot behind"


def test_no_set_is_removed_during_a_rollout(env: Env, client_as: Any, locked: str) -> None:
    env.token()
    checkout = add_set(env, "Checkout helper", CHECKOUT)
    env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    publish(env, checkout, "0.1.0", "production")
    second = env.release_new_version("Second {{ name }}")
    env.call(
        publishing.publish_version, f"version:{second}", "channel:production", rollout_percent=20
    )
    owner = client_as("owner")
    remove = f"{env.channel_url('production')}/remove"
    page = owner.get(f"{remove}?set={checkout}").get_data(as_text=True)
    assert "rollout in progress" in page and "data-remove disabled" in page
    with pytest.raises(ForgeError, match="complete or abort it"):
        env.call(publishing.remove_from_channel, "channel:production", str(checkout))
    assert owner.post(remove, data={"set": str(checkout)}).status_code == 302
    assert (
        "Channel production has a rollout in progress; complete or abort it before removing a "
        "prompt set."
    ) in flashes(owner)
    assert env.pointer("production").sequence == 3
    assert "remove" not in [p.kind for p in env.publications()]
    assert "channel.remove_set" not in env.actions()
    # The channel page says what the rollout's other instances keep.
    channel = owner.get(env.channel_url("production")).get_data(as_text=True)
    assert f"Main {locked}" in channel.split("rollout-note", 1)[1].split("</p>", 1)[0]
