"""product lot sources

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 15:51:19

Links a product lot to the apheresis collections it was made from, so a bag's lineage reaches
the starting material (a lot may pool several collections, which a parent column cannot hold).
Lots made before this revision keep that link only in their 'consume' custody events.
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('product_lot_source',
    sa.Column('lot_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_product_lot_source_item_id_item')),
    sa.ForeignKeyConstraint(['lot_id'], ['product_lot.id'], name=op.f('fk_product_lot_source_lot_id_product_lot')),
    sa.PrimaryKeyConstraint('lot_id', 'item_id', name=op.f('pk_product_lot_source'))
    )


def downgrade() -> None:
    op.drop_table('product_lot_source')
