"""Without ``fcntl`` (Windows) the client imports, and configuring it is one clear ConfigError."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_KEY = "ed25519:uhIT/MMJEKl24xuQ440NefwCbt8ZIJmSkGXOsN/iI/k="

_SCRIPT = textwrap.dedent(
    f"""
    import sys
    sys.modules["fcntl"] = None  # as on a platform without it: importing it raises ImportError
    import anvil_client
    from anvil_client import AnvilClient, ClientConfig
    from anvil_client.errors import ConfigError
    from anvil_client.stores import FileStore
    for build in (
        lambda: ClientConfig(store="file:///nowhere", project_id="p1", trusted_keys=({_KEY!r},)),
        lambda: AnvilClient(store="file:///nowhere", project_id="p1", trusted_keys=[{_KEY!r}]),
    ):
        try:
            build()
        except ConfigError as e:
            print("ConfigError:", e)
        else:
            print("configured")
    """
)


def test_missing_fcntl_is_a_config_error_at_configuration_not_at_import() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("ConfigError: ")
        assert "Linux, macOS and other POSIX systems" in line
