"""Prompt sets: their prompts, the review workflow, versions, diffs, import and export.

The views live in one module per domain on the one blueprint of :mod:`._shared` (so endpoint
names stay ``prompt_sets.<view>``): :mod:`.sets`, :mod:`.review`, :mod:`.versions` and
:mod:`.transfer`.
"""

from forge_app.blueprints.prompt_sets import review, sets, transfer, versions
from forge_app.blueprints.prompt_sets._shared import bp

__all__ = ["bp", "review", "sets", "transfer", "versions"]
