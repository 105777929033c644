"""The public front door of ``anvil_client``: a short ``__all__``, everything else private."""

from __future__ import annotations

import inspect
import subprocess
import sys

import anvil_client


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(anvil_client.__all__) == [
        "AnvilClient",
        "AnvilError",
        "ClientConfig",
        "PromptNotFound",
        "Status",
        "__version__",
        "configure",
        "messages",
        "prompt",
        "record",
        "status",
        "template",
    ]
    for name in anvil_client.__all__:
        assert getattr(anvil_client, name) is not None


def test_exported_members_come_from_private_modules() -> None:
    for name in anvil_client.__all__:
        member = getattr(anvil_client, name)
        module = getattr(member, "__module__", None)
        if module is not None:
            assert module == "anvil_client.errors" or module.startswith("anvil_client._"), name


def test_the_module_level_record_has_the_methods_signature() -> None:
    method = inspect.signature(anvil_client.AnvilClient.record)
    front = inspect.signature(anvil_client.record)
    assert next(iter(method.parameters)) == "self"
    assert front == method.replace(parameters=list(method.parameters.values())[1:])
    assert anvil_client.record.__name__ == "record"
    assert "on the default client" in (anvil_client.record.__doc__ or "")


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("anvil_client").joinpath("py.typed").is_file()


def test_importing_the_client_loads_no_heavy_or_server_libraries() -> None:
    code = (
        "import sys, anvil_client, anvil_client.cli; "
        "print(sorted(m for m in ('boto3', 'botocore', 'flask', 'sqlalchemy', 'urllib3', 'yaml')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
