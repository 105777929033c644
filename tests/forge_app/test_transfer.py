"""Import and export in the prompt-file format: an exported locked version, built with
``anvil-publish build``, gives the stored snapshot; an import reproduces the set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask import Flask

from forge_app.extensions import db
from forge_app.models import PromptSet, PromptSetVersion
from forge_app.services.drafts import draft_prompts
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version

TRICKY_PROMPTS: dict[str, dict[str, Any]] = {
    **SAMPLE_PROMPTS,
    "unicode.text": {
        "template": "Grüße, {{ name }}! 👋\n  indented line\n\ttab\n\nTrailing spaces   \n",
        "metadata": {"tags": ["a", "b"], "max_tokens": 10, "nested": {"x": [1, 2.5, None, True]}},
    },
    "looks.like.yaml": {
        "template": "key: value\n- item\n# not a comment\n'quoted'",
        "metadata": {},
    },
    "no.newline": {
        "template": "{% for x in items %}{{ x }},{% endfor %}",
        "metadata": {"model": "m"},
    },
}


def test_exported_version_builds_to_the_identical_snapshot(
    app: Flask, world: World, client_as: Any, set_url: str, tmp_path: Path
) -> None:
    add_prompts(app, world, TRICKY_PROMPTS)
    version = lock_version(app, world)
    export = client_as("viewer").get(f"{set_url}/versions/{version}/export")
    assert export.status_code == 200
    assert "attachment" in export.headers["Content-Disposition"]
    prompts_dir = tmp_path / "prompts"
    prompts_dir.mkdir()
    (prompts_dir / "main.yaml").write_bytes(export.data)
    out = tmp_path / "bundle.json"
    anvil_publish = Path(sys.executable).with_name("anvil-publish")
    subprocess.run(
        [
            str(anvil_publish),
            "build",
            str(prompts_dir),
            "--project-id",
            str(world.project_id),
            "--prompt-set-id",
            str(world.set_id),
            "--version",
            version,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    built = json.loads(out.read_bytes())
    with app.app_context():
        stored = json.loads(db.session.query(PromptSetVersion).one().bundle_json)
    assert built["snapshot"] == stored["snapshot"]
    assert json.dumps(built["snapshot"], sort_keys=True) == json.dumps(
        stored["snapshot"], sort_keys=True
    )


def test_import_of_an_export_reproduces_the_set(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, TRICKY_PROMPTS)
    editor = client_as("editor")
    exported = editor.get(f"{set_url}/export").data
    with app.app_context():
        original = draft_prompts(db.session, db.session.get(PromptSet, world.set_id))  # type: ignore[arg-type]
        other = PromptSet(project_id=world.project_id, name="Copy", description="", status="LIVE")
        db.session.add(other)
        db.session.commit()
        other_id = other.id
    other_url = f"/projects/{world.project_id}/sets/{other_id}"
    response = editor.post(f"{other_url}/import", data={"text": exported.decode(), "mode": "merge"})
    assert response.status_code == 302
    with app.app_context():
        copy = draft_prompts(db.session, db.session.get(PromptSet, other_id))  # type: ignore[arg-type]
    assert copy == original


def test_import_modes_and_upload(app: Flask, world: World, client_as: Any, set_url: str) -> None:
    from io import BytesIO

    add_prompts(app, world, SAMPLE_PROMPTS)
    editor = client_as("editor")
    file = BytesIO(b'{"new.prompt": {"template": "New {{ x }}"}}')
    response = editor.post(
        f"{set_url}/import",
        data={"file": (file, "more.json"), "mode": "merge"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    with app.app_context():
        keys = set(draft_prompts(db.session, db.session.get(PromptSet, world.set_id)))  # type: ignore[arg-type]
    assert keys == {"welcome.message", "support.chat", "new.prompt"}
    response = editor.post(
        f"{set_url}/import", data={"text": "only.one:\n  template: hi\n", "mode": "replace"}
    )
    assert response.status_code == 302
    with app.app_context():
        keys = set(draft_prompts(db.session, db.session.get(PromptSet, world.set_id)))  # type: ignore[arg-type]
    assert keys == {"only.one"}


def test_a_broken_import_changes_nothing_and_says_where(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    editor = client_as("editor")
    text = 'ok.prompt:\n  template: fine\nbad.prompt:\n  template: "{% if x %}"\n'
    response = editor.post(f"{set_url}/import", data={"text": text, "mode": "replace"})
    assert response.status_code == 400
    page = response.get_data(True)
    assert "Nothing was imported" in page and "bad.prompt" in page
    response = editor.post(f"{set_url}/import", data={"text": "a: [unclosed", "mode": "merge"})
    assert response.status_code == 400 and "YAML error" in response.get_data(True)
    with app.app_context():
        keys = set(draft_prompts(db.session, db.session.get(PromptSet, world.set_id)))  # type: ignore[arg-type]
    assert keys == {"welcome.message", "support.chat"}


def test_import_into_a_locked_set_is_refused(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    response = client_as("editor").post(f"{set_url}/import", data={"text": "x:\n  template: y\n"})
    assert response.status_code == 302
    with app.app_context():
        keys = set(draft_prompts(db.session, db.session.get(PromptSet, world.set_id)))  # type: ignore[arg-type]
    assert "x" not in keys
