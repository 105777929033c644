"""A small IAM policy evaluator for what moto does not check: the ``s3:prefix`` condition.

    >>> allowed([{"Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
    ...            "Resource": "arn:aws:s3:::b/p/*"}]}], "s3:GetObject", "arn:aws:s3:::b/p/x")
    True

It implements exactly the part of IAM's evaluation logic the Anvil policies use: Allow and
Deny statements, ``Action`` and ``Resource`` (strings or lists, ``*`` and ``?`` wildcards,
actions case-insensitive) and the ``StringEquals`` and ``StringLike`` condition operators, all
values of a key ORed, a key absent from the request context failing the condition. Anything
else (``NotAction``, ``NotResource``, other operators, ``Principal``) raises instead of being
guessed, so a policy this cannot read fails the test rather than passing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_SUPPORTED_KEYS = frozenset({"Sid", "Effect", "Action", "Resource", "Condition"})


def allowed(
    documents: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """Whether identity policies ``documents`` allow ``action`` on ``resource``: some Allow
    statement applies and no Deny statement does (IAM's default deny)."""
    verdict = False
    for document in documents:
        statements = document["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            unknown = set(statement) - _SUPPORTED_KEYS
            if unknown:
                raise NotImplementedError(f"policy_sim cannot evaluate {sorted(unknown)}")
            if not _any_match(statement["Action"], action, ignore_case=True):
                continue
            if not _any_match(statement["Resource"], resource, ignore_case=False):
                continue
            if not _conditions_hold(statement.get("Condition", {}), context or {}):
                continue
            if statement["Effect"] == "Deny":
                return False
            verdict = True
    return verdict


def _any_match(patterns: str | list[str], value: str, *, ignore_case: bool) -> bool:
    return any(_like(p, value, ignore_case=ignore_case) for p in _listed(patterns))


def _like(pattern: str, value: str, *, ignore_case: bool) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _conditions_hold(
    conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]
) -> bool:
    for operator, pairs in conditions.items():
        for key, expected in pairs.items():
            if key not in context:
                return False
            actual = context[key]
            if operator == "StringEquals":
                ok = actual in _listed(expected)
            elif operator == "StringLike":
                ok = any(_like(p, actual, ignore_case=False) for p in _listed(expected))
            else:
                raise NotImplementedError(f"policy_sim cannot evaluate condition {operator}")
            if not ok:
                return False
    return True
