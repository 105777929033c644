"""The public front door of ``publisher`` is small and stays stable (the FORGE builds on it)."""

from __future__ import annotations

import publisher


def test_public_names() -> None:
    assert set(publisher.__all__) == {
        "BuiltBundle",
        "BundleSource",
        "HistoryEntry",
        "Inspection",
        "PromptFiles",
        "PublishResult",
        "Publisher",
        "SourceLocation",
        "build_bundle",
        "dump_prompt_file",
        "export_bootstrap",
        "inspect",
        "load_prompt_files",
        "parse_prompt_file",
        "read_history",
        "validate_prompts",
    }
    for name in publisher.__all__:
        assert getattr(publisher, name) is not None
        assert not name.startswith("_")


def test_yaml_is_imported_only_by_publisher_modules() -> None:
    import sys

    assert "yaml" in sys.modules  # publisher imported it
    import anvil_client.wire

    assert "yaml" not in anvil_client.wire.__dict__
