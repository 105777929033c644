"""Racing publishers of different prompt sets on one channel both land (real processes)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import FileStore
from anvil_client.wire import AccessToken
from publisher import Publisher
from tests.publisher.conftest import client_apply
from tests.publisher.racing import SETS, check_race, race_two_sets


def test_two_processes_publishing_different_sets_to_a_file_store_both_land(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    rounds = 8
    file_store.root.mkdir(parents=True, exist_ok=True)
    outcomes = race_two_sets(
        file_store.root.as_uri(), project_id, signing_key, rounds, [token_a.text]
    )
    pub = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    check_race(outcomes, pub.history("production"), rounds)
    final = pub.current("production")
    assert final is not None and [r.prompt_set_id for r in final.releases] == list(SETS)
    applied = client_apply(file_store, project_id, "production", signing_key, token_a)
    assert applied.render("alpha.who", x="!") == f"alpha {rounds - 1} !"
    assert applied.render("beta.who", x="?") == f"beta {rounds - 1} ?"
