"""``tessera apikey``: create, list and revoke the gateway's API keys (stored hashed)."""

from __future__ import annotations

from typing import Annotated

import typer

from tessera_common.settings import Settings

from .apikeys import ApiKeyError, create_key, format_keys, list_keys, revoke_key

apikey_app = typer.Typer(
    help="Manage API keys for the gateway (TESSERA_AUTH_ENABLED=true). Keys are stored as "
    "SHA-256 hashes in DATA_DIR/api-keys.json or TESSERA_API_KEYS_FILE.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    from .cli import load_settings  # the CLI module imports this one

    return load_settings()


@apikey_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who or what the key is for")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="read, write, delete or admin; repeat for several (default: read)"),
    ] = None,
) -> None:
    """Create a key and print it once (it cannot be shown again)."""
    try:
        created = create_key(_settings(), name, scope or ["read"])
    except ApiKeyError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(created.key)
    typer.echo("Store this key now: only its hash is kept.", err=True)


@apikey_app.command("list")
def list_() -> None:
    """List keys (id, name, scopes, created, revoked) — never the keys themselves."""
    for line in format_keys(list_keys(_settings())):
        typer.echo(line)


@apikey_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key id shown by 'list'")]) -> None:
    """Revoke a key; the gateway stops accepting it within a second."""
    try:
        revoke_key(_settings(), key_id)
    except ApiKeyError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"revoked {key_id}")
