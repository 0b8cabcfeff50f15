"""An index for the researcher's search over available aliquots (issue 8).

It starts with the state and kind every search asks for and holds every other column the search
reads, in the order it groups by (episode, timepoint, day): the search is an index-only scan in
that order, so it never reads the item table and never sorts its million rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 22:10:00.000000
"""

from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = [
    'state', 'kind', 'episode_id', 'timepoint', 'timepoint_day', 'material_type', 'quantity',
    'thaw_count', 'site_id', 'id',
]


def upgrade() -> None:
    # Not batch mode: SQLite creates an index in place, no copy of the table is needed.
    op.create_index('ix_item_search', 'item', COLUMNS, unique=False)


def downgrade() -> None:
    op.drop_index('ix_item_search', table_name='item')
