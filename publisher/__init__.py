"""Build, validate, sign, encrypt and publish prompt bundles (DESIGN §3-§6).

    >>> from publisher import build_bundle
    >>> build_bundle({"hi": {"template": "Hi {{ name }}"}}, project_id="p", version="1.0.0",
    ...              prompt_set_id="s").document["snapshot"]["hi"]["variables"]
    ['name']

The FORGE's publish button and ``anvil-publish`` (CI) share this library; it is the only
code that writes to a store.
"""

from __future__ import annotations

from publisher._bundle import BuiltBundle, build_bundle
from publisher._entries import BundleSource
from publisher._errors import NoRolloutInProgress, PromptIdClash, RemovalRefused
from publisher._files import dump_prompt_file, load_prompt_files, parse_prompt_file
from publisher._gc import GcReport, collect_garbage
from publisher._history import read_history
from publisher._inspect import Inspection, export_bootstrap, inspect
from publisher._publish import Publisher
from publisher._results import HistoryEntry, PublishResult, release_json
from publisher._validate import PromptFiles, SourceLocation, validate_prompts

__all__ = [
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
]
