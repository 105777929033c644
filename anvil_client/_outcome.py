"""The arguments of ``record()``: one model call's outcome, checked before it is counted.

>>> check_outcome("support.reply", input_tokens=12, output_tokens=None,
...               latency_ms=3.5, error=None)
"""

from __future__ import annotations

import math


def check_outcome(
    prompt_id: object,
    input_tokens: object,
    output_tokens: object,
    latency_ms: object,
    error: object,
) -> None:
    """Validate the arguments of ``record()``.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for a negative or non-finite number, or an empty prompt id.
    """
    if not isinstance(prompt_id, str):
        raise TypeError(f"prompt_id must be a string, got {type(prompt_id).__name__}")
    if not prompt_id:
        raise ValueError("prompt_id must not be empty")
    _check_token_count("input_tokens", input_tokens)
    _check_token_count("output_tokens", output_tokens)
    if latency_ms is not None:
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float):
            raise TypeError(f"latency_ms must be a number or None, got {type(latency_ms).__name__}")
        if not math.isfinite(latency_ms) or latency_ms < 0:
            raise ValueError(f"latency_ms must be a finite number >= 0, got {latency_ms!r}")
    if not (error is None or isinstance(error, bool | str | BaseException)):
        raise TypeError(
            f"error must be None, a bool, a string or an exception, got {type(error).__name__}"
        )


def _check_token_count(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
