"""Publishing from the FORGE: channels and their policy, pre-release snapshots, Publish to LIVE,
rollbacks and rollouts, revocation re-encrypting every channel, authorisation and CSRF.

The store is the FORGE's default local directory; every check reads what clients would read:
the signed pointer (verified with the FORGE's public key) and the encrypted bundle object
(decrypted with each ACCESS_TOKEN).
"""

from __future__ import annotations

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
from forge_app.services.publishing import PublishError
from forge_app.services.tokens import create_token
from forge_app.workflow import approve, submit, unlock
from publisher import Publisher
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
    with pytest.raises(PublishError, match="owner role"):
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
    assert env.pointer("development").release.version == "0.0.1-dev.1"
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
    assert env.pointer("staging").release.version == "0.1.0-rc.1"
    with env.app.app_context():
        version = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == "0.1.0-rc.1")
        )
        assert version is not None and publishing.version_status(version) == "REVIEW"


def test_prerelease_numbers_grow_per_base_version(env: Env) -> None:
    env.token()
    env.set_prompt("Hello {{ name }}")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.pointer("development").release.version == "0.0.1-dev.1"
    # Same prompts: the snapshot is reused, no dev.2.
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.pointer("development").release.version == "0.0.1-dev.1"
    assert env.pointer("development").sequence == 2
    env.set_prompt("Hello again {{ name }}")
    env.call(publishing.publish_prompt_set, "set", "channel:development")
    assert env.pointer("development").release.version == "0.0.1-dev.2"

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
    assert env.pointer("development").release.version == "0.1.1-dev.1"

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
    assert env.pointer("staging").release.version == "1.0.0-rc.1"
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
    assert "nothing yet" in body
    assert not env.store().list("projects/"), "confirming wrote nothing"

    response = owner.post(url, data={"channel": "production"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(
        f"/projects/{env.pid}/channels/production/publications/1"
    )
    pointer = env.pointer("production")
    assert (pointer.sequence, pointer.release.version, pointer.rollout) == (1, locked, None)
    assert env.readers(pointer.release) == {
        WireToken.parse(token_a).token_id,
        WireToken.parse(token_b).token_id,
    }
    with env.app.app_context():
        version = db.session.scalar(select(PromptSetVersion))
        assert version is not None
        bundle = version.bundle_bytes
    assert env.decrypt(pointer.release, token_a) == bundle
    assert env.decrypt(pointer.release, token_b) == bundle
    assert pointer.release.content_sha256 == sha256_hex(bundle)

    [publication] = env.publications()
    assert (publication.kind, publication.sequence, publication.version) == ("publish", 1, locked)
    assert publication.published_by_id == env.world.users["owner"]
    assert publication.content_sha256 == pointer.release.content_sha256
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
                version=version,
                content_sha256="0" * 64,
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
    from forge_app.users import add_member, create_org, create_user

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
        with Publisher(env.store(), project_id=env.pid, signing_key=key) as pub:
            pub.publish(version.bundle_bytes, channel="ci-only", recipients=[keep_a, revoked])
    before = {c: env.pointer(c) for c in ("production", "staging", "development", "ci-only")}
    for pointer in before.values():
        assert env.decrypt(pointer.release, revoked)

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
        assert new.release.content_sha256 == old.release.content_sha256
        assert new.release.version == old.release.version
        releases = [new.release] + ([new.rollout.previous] if new.rollout else [])
        for release in releases:
            assert env.readers(release) == remaining
            with pytest.raises(DecryptionError):
                env.decrypt(release, revoked)
            plain = env.decrypt(release, keep_a)
            assert env.decrypt(release, keep_c) == plain
            assert sha256_hex(plain) == release.content_sha256
    rollout = env.pointer("production").rollout
    assert rollout is not None and rollout.percent == 30
    assert rollout.previous.content_sha256 == before["production"].rollout.previous.content_sha256  # type: ignore[union-attr]

    kinds = [(p.kind, p.channel.name if p.channel else None) for p in _with_channels(env)]
    assert kinds.count(("reencrypt", "production")) == 1
    assert sum(1 for k, _ in kinds if k == "reencrypt") == 4
    actions = env.actions()
    assert actions.count("channel.reencrypt") == 4 and "token.revoke" in actions
    # A second revocation of the same token is refused, and nothing moves.
    assert owner.post(f"/projects/{env.pid}/tokens/{revoked_id}/revoke").status_code == 302
    assert env.pointer("production").sequence == before["production"].sequence + 1


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
    assert env.decrypt(pointer.release, second) == env.decrypt(pointer.release, first)


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
    assert "Roll back to this" in page
    response = owner.post(f"{env.channel_url('production')}/rollback", data={"sequence": "1"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/channels/production/publications/4")
    pointer = env.pointer("production")
    assert pointer.sequence == 4
    assert pointer.release.version == locked
    assert pointer.release.content_sha256 == first.release.content_sha256
    assert pointer.release.object.path != first.release.object.path, "a new object, not the old"
    assert env.readers(pointer.release) == {WireToken.parse(keep).token_id}
    with pytest.raises(DecryptionError):
        env.decrypt(pointer.release, gone)
    assert sha256_hex(env.decrypt(pointer.release, keep)) == first.release.content_sha256
    last = env.publications()[-1]
    assert (last.kind, last.sequence, last.version) == ("rollback", 4, locked)
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
    assert pointer.release.version == second
    assert pointer.rollout is not None and pointer.rollout.percent == 20
    assert pointer.rollout.previous.version == locked

    page = owner.get(env.channel_url("production")).get_data(as_text=True)
    assert "Complete rollout" in page and "Abort rollout" in page and "20%" in page

    owner.post(url, data={"action": "set", "percent": "50"})
    pointer = env.pointer("production")
    assert pointer.rollout is not None and pointer.rollout.percent == 50
    assert pointer.release.version == second
    owner.post(url, data={"action": "set", "percent": "0"})
    assert any("from 1 to 100" in m for m in flashes(owner))
    owner.post(url, data={"action": "complete"})
    pointer = env.pointer("production")
    assert pointer.rollout is None and pointer.release.version == second
    owner.post(url, data={"action": "complete"})
    assert any("no rollout in progress" in m for m in flashes(owner))

    third = env.release_new_version("Third {{ name }}")
    env.call(
        publishing.publish_version, f"version:{third}", "channel:production", rollout_percent=10
    )
    owner.post(url, data={"action": "abort"})
    pointer = env.pointer("production")
    assert pointer.rollout is None and pointer.release.version == second

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
        ]
        forms = 0
        for page in pages:
            body = owner.get(page).get_data(as_text=True)
            for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", body, re.S):
                forms += 1
                assert 'name="csrf_token"' in form, (page, form[:200])
        assert forms >= 8
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
