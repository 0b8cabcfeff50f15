"""The ``lims`` command line (a Flask CLI group; ``flask --app lims ...`` works the same).

Every command is scriptable: options instead of prompts, exit status non-zero on refusal.
"""

from __future__ import annotations

import os
import shutil
import sys

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from lims import db, migrate
from lims.audit.cli import audit_group
from lims.errors import DomainError
from lims.exports.cli import export_group
from lims.imports.cli import import_group
from lims.labels.cli import labels_group


def _fail(exc: DomainError) -> None:
    raise click.ClickException(exc.message)


@click.group("db", help="Database schema migrations (Alembic).")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Bring the database schema up to REVISION (default: head).")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    migrate.upgrade(db.engine(), revision)
    click.echo(f"Database at revision {migrate.current_revision(db.engine())}.")


@db_group.command("downgrade", help="Take the database schema back to REVISION.")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    migrate.downgrade(db.engine(), revision)
    click.echo(f"Database at revision {migrate.current_revision(db.engine())}.")


@db_group.command("revision", help="Create a new migration script in migrations/versions.")
@click.option("-m", "--message", required=True, help="What the migration changes.")
@click.option(
    "--autogenerate/--empty",
    default=True,
    help="Compare the models with the database and write the difference (default).",
)
@with_appcontext
def db_revision(message: str, autogenerate: bool) -> None:
    migrate.revision(db.engine(), message, autogenerate=autogenerate)


@db_group.command("current", help="Print the database's schema revision.")
@with_appcontext
def db_current() -> None:
    click.echo(migrate.current_revision(db.engine()) or "(empty database)")


@db_group.command("check", help="Exit non-zero when the models and the database schema differ.")
@with_appcontext
def db_check() -> None:
    differences = migrate.schema_differences(db.engine())
    for difference in differences:
        click.echo(repr(difference))
    if differences:
        raise click.ClickException("the schema differs from the models: write a migration")
    click.echo("Schema matches the models.")


@click.command("create-site", help="Create a site of the network.")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--city", default="")
@click.option("--isbt-fin", default=None, help="ISBT 128 facility identification number.")
@with_appcontext
def create_site(code: str, name: str, city: str, isbt_fin: str | None) -> None:
    from lims.auth import services

    try:
        site = services.create_site(
            db.session(), actor=None, code=code, name=name, city=city, isbt_fin=isbt_fin
        )
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Created site {site.code}.")


@click.command("create-user", help="Create a user account.")
@click.argument("username")
@click.option(
    "--role", required=True, type=click.Choice(["technician", "manager", "researcher", "admin"])
)
@click.option("--site", "site_code", required=True, help="Code of the user's site, e.g. RH.")
@click.option("--password", required=True)
@click.option("--full-name", default="")
@click.option("--email", default="")
@with_appcontext
def create_user(
    username: str, role: str, site_code: str, password: str, full_name: str, email: str
) -> None:
    from lims.auth import services

    try:
        user = services.create_user(
            db.session(),
            actor=None,
            username=username,
            full_name=full_name,
            email=email,
            role=role,
            site_code=site_code,
            password=password,
        )
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Created {user.role.value} {user.username} at {user.site.code}.")


@click.command("create-token", help="Create an API token; the token is the last line printed.")
@click.argument("username")
@click.option("--name", default="", help="What the token is for, e.g. 'freezer monitor'.")
@with_appcontext
def create_token(username: str, name: str) -> None:
    from lims.auth import services

    try:
        user = services.user_by_username(db.session(), username)
        record, token = services.create_api_token(db.session(), actor=None, user=user, name=name)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"API token {record.id} for {user.username} (shown once, keep it safe):")
    click.echo(token)


@click.command("list-tokens", help="List a user's API tokens (never the tokens themselves).")
@click.argument("username")
@with_appcontext
def list_tokens(username: str) -> None:
    from lims.auth import services
    from lims.auth.models import ApiToken
    from lims.web import local_time

    try:
        user = services.user_by_username(db.session(), username)
    except DomainError as exc:
        _fail(exc)
    tokens = db.session().scalars(select(ApiToken).where(ApiToken.user_id == user.id))
    for token in tokens:
        state = f"revoked {local_time(token.revoked_at)}" if token.revoked_at else "active"
        click.echo(f"{token.id}\t{token.prefix}…\t{token.name or '-'}\t{state}")


@click.command("revoke-token", help="Revoke an API token by its id (see list-tokens).")
@click.argument("token_id", type=int)
@with_appcontext
def revoke_token(token_id: int) -> None:
    from lims.auth import services

    try:
        record = services.revoke_api_token(db.session(), actor=None, token_id=token_id)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Token {record.id} revoked.")


@click.command("demo", help="Load the demo network (idempotent).")
@click.option("--password", default=None, help="Give every demo user this password.")
@with_appcontext
def demo(password: str | None) -> None:
    from lims.demo import load_demo

    try:
        report = load_demo(db.session(), password=password)
    except DomainError as exc:
        _fail(exc)
    for line in report:
        click.echo(line)


@click.command("serve", help="Run the app under gunicorn (production).")
@click.option("--bind", default=None, help="host:port (default from [server] bind).")
@click.option("--workers", type=int, default=None)
@with_appcontext
def serve(bind: str | None, workers: int | None) -> None:
    server = current_app.config["LIMS"]["server"]
    gunicorn = shutil.which("gunicorn") or os.path.join(os.path.dirname(sys.executable), "gunicorn")
    args = [
        gunicorn,
        "--bind", bind or server["bind"],
        "--workers", str(workers or server["workers"]),
        "--access-logfile", "-",
        "lims:create_served_app()",
    ]  # fmt: skip
    os.execv(gunicorn, args)  # noqa: S606 (replaces this process with gunicorn by design)


def register_commands(app: Flask) -> None:
    for command in (
        db_group,
        audit_group,
        export_group,
        import_group,
        labels_group,
        create_site,
        create_user,
        create_token,
        list_tokens,
        revoke_token,
        demo,
        serve,
    ):
        app.cli.add_command(command)


def _create_app() -> Flask:
    from lims import create_app

    return create_app()


main = FlaskGroup(
    create_app=_create_app,
    help="CAR-T LIMS command line. Configuration: LIMS_CONFIG, LIMS_DATABASE_URL.",
)
