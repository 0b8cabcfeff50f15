"""The migrations produce exactly the models' schema: a model change without one fails here."""

from sqlalchemy import inspect

from lims import db as lims_db
from lims import migrate


def test_migrated_schema_matches_models(app):
    engine = app.extensions["lims_engine"]
    assert migrate.schema_differences(engine) == []
    assert migrate.current_revision(engine) is not None


def test_migrations_go_down_and_up_again(tmp_path):
    engine = lims_db.make_engine(f"sqlite:///{tmp_path / 'roundtrip.sqlite'}")
    migrate.upgrade(engine)
    head = migrate.current_revision(engine)
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == head
    assert migrate.schema_differences(engine) == []
    engine.dispose()


def test_revision_numbers_follow_the_files():
    files = sorted((migrate.MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))
    assert files, "no migrations found"
    assert migrate.next_revision_id() == f"{int(files[-1].name[:4]) + 1:04d}"
