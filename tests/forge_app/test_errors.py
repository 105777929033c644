"""The one error root: services raise kinds, the web layer maps them to HTTP in one place."""

from __future__ import annotations

import publisher
from anvil_client.errors import ConfigError
from forge_app.errors import ForgeError, Kind, NoRolloutInProgress, http_status


def test_every_kind_has_one_http_status() -> None:
    assert {kind: http_status(kind) for kind in Kind} == {
        Kind.NOT_FOUND: 404,
        Kind.FORBIDDEN: 403,
        Kind.CONFLICT: 409,
        Kind.INVALID: 400,
        Kind.UNAVAILABLE: 503,
        Kind.REMOTE: 502,
    }


def test_a_service_error_carries_a_kind_and_nothing_about_http() -> None:
    error = ForgeError("Only owners can publish to prod.", kind=Kind.FORBIDDEN)
    assert error.kind is Kind.FORBIDDEN and str(error) == "Only owners can publish to prod."
    assert not hasattr(error, "status")
    assert ForgeError("Reload and try again.").kind is Kind.CONFLICT


def test_no_rollout_in_progress_is_typed_on_both_sides() -> None:
    raised = publisher.NoRolloutInProgress("prod")
    assert isinstance(raised, ConfigError) and raised.channel == "prod"
    assert str(raised) == "channel 'prod' has no rollout in progress"
    forge = NoRolloutInProgress("prod")
    assert forge.kind is Kind.CONFLICT and str(forge) == "Channel prod has no rollout in progress."
