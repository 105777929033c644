"""The public front door of ``publisher`` is small and stays stable (the FORGE builds on it)."""

from __future__ import annotations

import subprocess
import sys

import publisher


def test_public_names() -> None:
    assert set(publisher.__all__) == {
        "BuiltBundle",
        "BundleSource",
        "GcReport",
        "HistoryEntry",
        "Inspection",
        "NoRolloutInProgress",
        "PromptFiles",
        "PromptIdClash",
        "PublishResult",
        "Publisher",
        "RemovalRefused",
        "SourceLocation",
        "build_bundle",
        "collect_garbage",
        "dump_prompt_file",
        "export_bootstrap",
        "inspect",
        "load_prompt_files",
        "parse_prompt_file",
        "read_history",
        "release_json",
        "validate_prompts",
    }
    for name in publisher.__all__:
        assert getattr(publisher, name) is not None


def test_the_client_never_imports_yaml_or_the_publisher() -> None:
    code = (
        "import sys, anvil_client, anvil_client.wire, anvil_client.stores;"
        "print(sorted(m for m in ('yaml', 'publisher') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
