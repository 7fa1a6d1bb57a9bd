"""`tinyfleet keys generate|rotate|revoke|list` over the REST API (admin token; list: viewer).

Only public parts are ever shown: key ids, raw public keys (hex), certificate validity, the revocation
list's serial. Exit codes: 0 done, 1 refused by the API, 3 server unreachable, 2 bad arguments.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group

from fleet_server.cli.api_client import ApiClient, JsonOpt, ServerOpt, TokenOpt, emit, fail, table_of

keys_app = typer.Typer(
    name="keys", help="Release signing keys: root, release keys, revocation.", no_args_is_help=True
)


def _listing(body: dict[str, Any]) -> Group:
    roots = table_of(
        body["root_keys"], ["key_id", "public_key", "created_at"], title="root keys (devices hold these)"
    )
    releases = table_of(
        body["release_keys"],
        ["key_id", "current", "created_at", "not_after", "revoked_at"],
        title="release keys",
    )
    rev = body.get("revocation")
    revocation = table_of(
        [{"serial": rev["serial"], "issued_at": rev["issued_at"], "revoked": len(rev["revoked_key_ids"])}]
        if rev
        else [],
        ["serial", "issued_at", "revoked"],
        title="revocation list",
    )
    return Group(roots, releases, revocation)


@keys_app.command("generate")
def generate(
    new_trust_anchor: Annotated[
        bool,
        typer.Option(
            "--new-trust-anchor",
            help="Replace existing keys with a new root: devices holding the old root refuse new releases.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before replacing the trust anchor.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the root key and a first release key on the server."""
    if (
        new_trust_anchor
        and not yes
        and not typer.confirm(
            "Replace the root key? Devices provisioned with the old one will refuse updates"
        )
    ):
        raise fail("not confirmed; nothing changed", 1)
    with ApiClient.connect(server, token) as api:
        body = api.post("/api/v1/keys/generate", json={"new_trust_anchor": new_trust_anchor})
    emit(body, as_json, lambda: _listing(body))


@keys_app.command("rotate")
def rotate(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """A new release key certified by root signs from now on (the old one stays valid until revoked)."""
    with ApiClient.connect(server, token) as api:
        body = api.post("/api/v1/keys/rotate")
    emit(
        body,
        as_json,
        lambda: table_of([body], ["key_id", "current", "created_at", "not_after"], title="new key"),
    )


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="Release key id (64 hex characters).")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Root signs a new revocation list naming the key; releases it signed are withdrawn."""
    with ApiClient.connect(server, token) as api:
        body = api.post("/api/v1/keys/revoke", json={"key_id": key_id})

    def render() -> Group:
        rev = body["revocation"]
        summary = table_of(
            [{"serial": rev["serial"], "revoked_keys": len(rev["revoked_key_ids"])}],
            ["serial", "revoked_keys"],
        )
        withdrawn = table_of(
            [{"release": r} for r in body["withdrawn_releases"]], ["release"], title="withdrawn"
        )
        return Group(summary, withdrawn)

    emit(body, as_json, render)


@keys_app.command("list")
def list_keys(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Root and release keys (public parts) and the newest revocation list."""
    with ApiClient.connect(server, token) as api:
        body = api.get("/api/v1/keys")
    emit(body, as_json, lambda: _listing(body))
