"""The storage hierarchy (unit > rack > box) and each item's box and position.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 17:56:11.953515
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('storage_unit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('unit_type', sa.Enum('ln2_tank', 'freezer', 'fridge', 'cabinet', name='unit_type', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('temperature_class', sa.Enum('ln2_vapour', 'minus_150', 'minus_80', 'minus_20', 'fridge', 'room', name='temperature_class', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_storage_unit_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storage_unit')),
    sa.UniqueConstraint('code', name=op.f('uq_storage_unit_code'))
    )
    with op.batch_alter_table('storage_unit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_storage_unit_site_id'), ['site_id'], unique=False)

    op.create_table('storage_rack',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.Enum('rack', 'tower', 'shelf', 'drawer', name='rack_kind', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['unit_id'], ['storage_unit.id'], name=op.f('fk_storage_rack_unit_id_storage_unit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storage_rack')),
    sa.UniqueConstraint('code', name=op.f('uq_storage_rack_code'))
    )
    with op.batch_alter_table('storage_rack', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_storage_rack_unit_id'), ['unit_id'], unique=False)

    op.create_table('storage_box',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('box_type', sa.String(length=20), nullable=True),
    sa.Column('capacity', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('rack_id', sa.Integer(), nullable=True),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint('(box_type IS NOT NULL AND capacity IS NULL) OR (box_type IS NULL AND capacity IS NOT NULL AND capacity > 0)', name=op.f('ck_storage_box_grid_or_capacity')),
    sa.ForeignKeyConstraint(['rack_id'], ['storage_rack.id'], name=op.f('fk_storage_box_rack_id_storage_rack')),
    sa.ForeignKeyConstraint(['unit_id'], ['storage_unit.id'], name=op.f('fk_storage_box_unit_id_storage_unit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storage_box')),
    sa.UniqueConstraint('code', name=op.f('uq_storage_box_code'))
    )
    with op.batch_alter_table('storage_box', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_storage_box_rack_id'), ['rack_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_storage_box_unit_id'), ['unit_id'], unique=False)

    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('box_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('stored_at', lims.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('checked_out_at', lims.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_item_box_id'), ['box_id'], unique=False)
        batch_op.create_unique_constraint('uq_item_box_position', ['box_id', 'position'])
        batch_op.create_foreign_key(batch_op.f('fk_item_box_id_storage_box'), 'storage_box', ['box_id'], ['id'])
        batch_op.create_check_constraint(
            op.f('ck_item_position_in_a_box'), 'position IS NULL OR box_id IS NOT NULL'
        )

def downgrade() -> None:
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_item_position_in_a_box'), type_='check')
        batch_op.drop_constraint(batch_op.f('fk_item_box_id_storage_box'), type_='foreignkey')
        batch_op.drop_constraint('uq_item_box_position', type_='unique')
        batch_op.drop_index(batch_op.f('ix_item_box_id'))
        batch_op.drop_column('checked_out_at')
        batch_op.drop_column('stored_at')
        batch_op.drop_column('position')
        batch_op.drop_column('box_id')

    with op.batch_alter_table('storage_box', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_storage_box_unit_id'))
        batch_op.drop_index(batch_op.f('ix_storage_box_rack_id'))

    op.drop_table('storage_box')
    with op.batch_alter_table('storage_rack', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_storage_rack_unit_id'))

    op.drop_table('storage_rack')
    with op.batch_alter_table('storage_unit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_storage_unit_site_id'))

    op.drop_table('storage_unit')
