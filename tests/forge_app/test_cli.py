"""``anvil-forge``: db upgrade, create-user, create-org, and the demo (seeded idempotently)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from forge_app import create_app
from forge_app.cli import main
from forge_app.extensions import db
from forge_app.models import Membership, Organisation, Project, PromptSet, PromptSetVersion, User


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("FORGE_DATABASE_URL", "FORGE_ENV", "FORGE_CONFIG", "FORGE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return {"FORGE_INSTANCE_PATH": str(tmp_path / "instance")}


def test_db_upgrade_create_org_and_user(env: dict[str, str]) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert "0001_core" in result.output or "revision" in result.output
    assert runner.invoke(main, ["create-org", "Acme Corp"], env=env).exit_code == 0
    result = runner.invoke(
        main,
        [
            "create-user",
            "ada@example.com",
            "--admin",
            "--org",
            "acme-corp",
            "--role",
            "owner",
            "--password-stdin",
        ],
        input="a long enough password\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        main, ["create-user", "bob@example.com", "--password-stdin"], input="short\n", env=env
    )
    assert result.exit_code != 0 and "at least 10 characters" in result.output
    app = create_app(env)
    with app.app_context():
        user = db.session.query(User).filter_by(email="ada@example.com").one()
        assert user.is_admin
        membership = db.session.query(Membership).one()
        assert membership.role_name == "owner" and membership.org.slug == "acme-corp"
        db.engine.dispose()


def test_demo_seeds_once_and_prints_logins(env: dict[str, str]) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--no-serve"], env=env)
    assert first.exit_code == 0, first.output
    for email in (
        "owner@demo.anvil",
        "reviewer@demo.anvil",
        "editor@demo.anvil",
        "viewer@demo.anvil",
    ):
        assert email in first.output
    assert "anvil-demo-password" in first.output and "/login" in first.output
    second = runner.invoke(main, ["demo", "--no-serve"], env=env)
    assert second.exit_code == 0 and "already seeded" in second.output
    app = create_app(env)
    with app.app_context():
        assert db.session.query(Organisation).count() == 1
        assert db.session.query(Project).count() == 1
        statuses = {s.name: s.status for s in db.session.query(PromptSet)}
        assert statuses == {
            "Support bot": "LOCKED",
            "Onboarding e-mails": "LIVE",
            "Checkout helper": "REVIEW",
        }
        versions = [
            v.version for v in db.session.query(PromptSetVersion).order_by(PromptSetVersion.id)
        ]
        assert versions == ["0.1.0", "0.2.0", "0.1.0"]
        db.engine.dispose()


def test_production_start_names_missing_secrets(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade"], env={**env, "FORGE_ENV": "production"})
    assert result.exit_code != 0
    assert "FORGE_SECRET_KEY" in result.output and "FORGE_SIGNING_KEY" in result.output
    assert "Traceback" not in result.output
