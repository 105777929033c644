"""Prompt files, the "prompts as code" format: YAML or JSON mappings of prompt id to prompt.

    >>> from publisher import dump_prompt_file, parse_prompt_file
    >>> parse_prompt_file(dump_prompt_file({"hi": {"template": "Hi {{ name }}\\n"}}), "a.yaml")
    {'hi': {'template': 'Hi {{ name }}\\n'}}

A directory is read recursively (``*.yaml``, ``*.yml``, ``*.json``; hidden files and folders are
skipped). Each file maps prompt id → ``{template | messages, metadata?}``; ``variables`` are
always derived, never written. Anchors and aliases are refused (an upload must not be able to
expand exponentially), and YAML timestamps stay strings so every value is plain JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from anvil_client.errors import ConfigError, ValidationError
from publisher._validate import PromptFiles, SourceLocation, validate_prompts

__all__ = ["dump_prompt_file", "load_prompt_files", "parse_prompt_file"]

PROMPT_FILE_SUFFIXES = (".yaml", ".yml", ".json")

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML whose timestamps stay strings (metadata must be plain JSON)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def load_prompt_files(directory: str | os.PathLike[str]) -> PromptFiles:
    """Read every prompt file under ``directory`` into one prompt set.

    The result is a ``dict`` of prompt id → prompt as written (validate it with
    :func:`~publisher.validate_prompts`, which ``build_bundle`` does), carrying the file and
    line of each prompt for error messages.

    Raises:
        ConfigError: if ``directory`` is not a readable directory.
        ValidationError: listing every problem at once: YAML/JSON syntax (file and line),
            ids defined twice (naming both files), and, alongside those, every invalid prompt.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"prompt directory {root} does not exist or is not a directory")
    files = sorted(_prompt_files(root))
    if not files:
        raise ValidationError([f"{root} holds no *.yaml, *.yml or *.json prompt files"])
    merged = PromptFiles()
    problems: list[str] = []
    for path in files:
        name = path.relative_to(root).as_posix()
        text = _read_text(path, name, problems)
        if text is None:
            continue
        try:
            loaded = parse_prompt_file(text, name)
        except ValidationError as e:
            problems.extend(e.problems)
            continue
        _merge(merged, loaded, problems)
    if problems:
        try:
            validate_prompts(merged)
        except ValidationError as e:
            problems.extend(e.problems)
        raise ValidationError(problems)
    return merged


def _read_text(path: Path, name: str, problems: list[str]) -> str | None:
    """The text of one prompt file, or None after adding why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.append(f"{name}: is not UTF-8 text")
    except OSError as e:
        problems.append(f"{name}: cannot be read: {e.strerror}")
    return None


def _merge(merged: PromptFiles, loaded: PromptFiles, problems: list[str]) -> None:
    """Add the prompts of one file to ``merged``; an id already there is a problem."""
    for prompt_id, prompt in loaded.items():
        here = loaded.locations[prompt_id]
        if prompt_id in merged:
            there = merged.locations[prompt_id]
            problems.append(
                f"prompt {prompt_id!r} is defined twice: in {_at(there)} and in {_at(here)}"
            )
            continue
        merged[prompt_id] = prompt
        merged.locations[prompt_id] = here


def _prompt_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if not filename.startswith(".") and filename.endswith(PROMPT_FILE_SUFFIXES):
                yield Path(dirpath, filename)


def _at(location: SourceLocation) -> str:
    return location.where()


def parse_prompt_file(text: str, filename: str) -> PromptFiles:
    """Parse one prompt file (JSON when ``filename`` ends in ``.json``, else YAML).

    An empty file is an empty prompt set. Prompts are returned as written, not validated.

    Raises:
        ValidationError: for a syntax error (with file and line), a file that is not a
            mapping, an id given twice in the file, or anchors/aliases in YAML.
    """
    if filename.endswith(".json"):
        return _parse_json(text, filename)
    return _parse_yaml(text, filename)


def _parse_yaml(text: str, filename: str) -> PromptFiles:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return PromptFiles()
        if not isinstance(root, yaml.MappingNode):
            raise ValidationError(
                [
                    f"{filename}:{root.start_mark.line + 1}: a prompt file must be a mapping of "
                    "prompt id to prompt"
                ]
            )
        _refuse_aliases(root, filename)
        result = PromptFiles()
        problems: list[str] = []
        for key_node, value_node in root.value:
            line = key_node.start_mark.line + 1
            prompt_id = loader.construct_object(key_node, deep=True)
            if not isinstance(prompt_id, str):
                problems.append(
                    f"{filename}:{line}: prompt id {prompt_id!r} must be a string (quote it)"
                )
                continue
            if prompt_id in result:
                first = result.locations[prompt_id].line
                problems.append(
                    f"{filename}:{line}: prompt {prompt_id!r} is defined twice in this file "
                    f"(first at line {first})"
                )
                continue
            result[prompt_id] = loader.construct_object(value_node, deep=True)
            result.locations[prompt_id] = SourceLocation(
                filename, line, _yaml_template_lines(value_node)
            )
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        raise ValidationError([f"{where}: YAML error: {e.problem or e.context}"]) from e
    except yaml.YAMLError as e:
        raise ValidationError([f"{filename}: YAML error: {e}"]) from e
    finally:
        loader.dispose()
    if problems:
        raise ValidationError(problems)
    return result


def _refuse_aliases(root: yaml.Node, filename: str) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise ValidationError(
                [
                    f"{filename}:{node.start_mark.line + 1}: YAML anchors and aliases are not "
                    "supported in prompt files"
                ]
            )
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _yaml_template_lines(prompt_node: yaml.Node) -> dict[str, tuple[int, bool]]:
    """Where each template's text starts: ``(line, True)`` for a literal block (``|``)."""
    out: dict[str, tuple[int, bool]] = {}
    if not isinstance(prompt_node, yaml.MappingNode):
        return out
    for key_node, value_node in prompt_node.value:
        if key_node.value == "template" and isinstance(value_node, yaml.ScalarNode):
            out["template"] = _scalar_start(value_node)
        elif key_node.value == "messages" and isinstance(value_node, yaml.SequenceNode):
            for index, message in enumerate(value_node.value):
                if not isinstance(message, yaml.MappingNode):
                    continue
                for m_key, m_value in message.value:
                    if m_key.value == "template" and isinstance(m_value, yaml.ScalarNode):
                        out[f"messages.{index}"] = _scalar_start(m_value)
    return out


def _scalar_start(node: yaml.ScalarNode) -> tuple[int, bool]:
    if node.style == "|":  # the text starts on the line after the indicator
        return node.start_mark.line + 2, True
    return node.start_mark.line + 1, False


def _parse_json(text: str, filename: str) -> PromptFiles:
    """Parse a JSON prompt file, keeping the line of each top-level id."""
    result = PromptFiles()
    problems: list[str] = []
    try:
        index = _skip_space(text, 0)
        if index == len(text):
            return result
        if text[index] != "{":
            line = text.count("\n", 0, index) + 1
            raise ValidationError(
                [f"{filename}:{line}: a prompt file must be a JSON object of prompt id to prompt"]
            )
        index = _parse_json_members(text, _skip_space(text, index + 1), filename, result, problems)
        if _skip_space(text, index) != len(text):
            raise json.JSONDecodeError("Extra data", text, index)
    except json.JSONDecodeError as e:
        raise ValidationError([f"{filename}:{e.lineno}: JSON error: {e.msg}"]) from e
    except RecursionError as e:
        raise ValidationError([f"{filename}: JSON is nested too deeply"]) from e
    if problems:
        raise ValidationError(problems)
    return result


_DECODER = json.JSONDecoder()


def _parse_json_members(
    text: str, index: int, filename: str, result: PromptFiles, problems: list[str]
) -> int:
    """Read the members of the top-level object from ``index`` (just after ``{``) into
    ``result``, up to and including its ``}``; return the index after it.

    Raises:
        json.JSONDecodeError: for a syntax error.
    """
    if text.startswith("}", index):
        return index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("Expecting property name", text, index)
        line = text.count("\n", 0, index) + 1
        prompt_id, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
        index = _skip_space(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        value, index = _DECODER.raw_decode(text, _skip_space(text, index + 1))
        if prompt_id in result:
            first = result.locations[prompt_id].line
            problems.append(
                f"{filename}:{line}: prompt {prompt_id!r} is defined twice in this file "
                f"(first at line {first})"
            )
        else:
            result[prompt_id] = value
            result.locations[prompt_id] = SourceLocation(filename, line)
        index = _skip_space(text, index)
        if text.startswith(",", index):
            index = _skip_space(text, index + 1)
            continue
        if text.startswith("}", index):
            return index + 1
        raise json.JSONDecodeError("Expecting ',' delimiter", text, index)


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Block scalars (``|``) for multi-line text that a literal block carries exactly."""


class _WideDumper(yaml.SafeDumper):
    """The same, on PyYAML's pure-Python emitter: libyaml escapes every character beyond U+FFFF
    (emoji become ``\\U0001F44B``) even with ``allow_unicode``; this one writes them as they are.
    Slower, so only used for documents that hold such characters."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        style = "|" if _literal_safe(value) else '"'
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)
    if any(ch in "\x85\u2028\u2029" for ch in value):
        # YAML 1.1 line breaks: the pure-Python emitter would fold them in a quoted string.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_str(value)


def _literal_safe(value: str) -> bool:
    """True when a literal block reproduces ``value`` exactly when read back.

    Literal blocks cannot carry trailing spaces on a line, tabs or other control characters,
    carriage returns or the Unicode line separators YAML 1.1 folds; the emitter would quietly
    switch style for some of these, so they get double quotes explicitly.
    """
    for line in value.split("\n"):
        if line != line.rstrip(" "):
            return False
    return not any(
        (ch < " " and ch != "\n") or ch in "\x7f\x85\u2028\u2029\ufeff" or "\x80" <= ch < "\xa0"
        for ch in value
    )


_Dumper.add_representer(str, _represent_str)
_WideDumper.add_representer(str, _represent_str)


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted_keys(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted_keys(item) for item in value]
    return value


def dump_prompt_file(prompts: Mapping[str, Mapping[str, Any]]) -> str:
    """Write prompts as a YAML prompt file: ids sorted, templates as ``|`` blocks when multi-line.

    ``variables`` are dropped (they are derived when read); empty ``metadata`` is omitted.
    Text is written as it reads (accents, CJK, right-to-left scripts, emoji); only control
    characters and the like are escaped, in a double-quoted string, which is also the only
    place an emoji is escaped (YAML's double-quoted escapes). The output parses back to exactly
    the same prompts with :func:`parse_prompt_file`.

    Raises:
        ValueError: if a prompt is not a mapping, or a text holds a lone surrogate (not
            Unicode text: neither YAML nor UTF-8 can carry it).
    """
    document: dict[str, dict[str, Any]] = {}
    for prompt_id in sorted(prompts):
        prompt = prompts[prompt_id]
        if not isinstance(prompt, Mapping):
            raise ValueError(f"prompt {prompt_id!r} is not a mapping")
        entry: dict[str, Any] = {}
        for name in ("template", "messages"):
            if prompt.get(name) is not None:
                entry[name] = prompt[name]
        if "messages" in entry:
            entry["messages"] = [
                {"role": m.get("role"), "template": m.get("template")}
                if isinstance(m, Mapping)
                else m
                for m in entry["messages"]
            ]
        if prompt.get("metadata"):
            entry["metadata"] = _sorted_keys(prompt["metadata"])
        document[prompt_id] = entry
    if not document:
        return "{}\n"
    _refuse_surrogates(document)
    text = _dump(document, _Dumper)
    if "\\U" in text:  # libyaml escaped a character beyond U+FFFF (or the text says \U)
        text = _dump(document, _WideDumper)
    return text


def _dump(document: dict[str, dict[str, Any]], dumper: type[yaml.SafeDumper]) -> str:
    text: str = yaml.dump(
        document,
        Dumper=dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1_000_000,
        indent=2,
    )
    return text


def _refuse_surrogates(document: dict[str, dict[str, Any]]) -> None:
    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield from strings(key)
                yield from strings(item)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from strings(item)

    for prompt_id, entry in document.items():
        for text in strings(entry):
            if any("\ud800" <= ch <= "\udfff" for ch in text):
                raise ValueError(
                    f"prompt {prompt_id!r} holds a lone surrogate, which is not Unicode text "
                    "and cannot be written to a YAML file"
                )
