"""Shipments (lines, logger readings) and second-person signatures on events and checks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 16:23:28.555851
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('shipment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('from_site_id', sa.Integer(), nullable=False),
    sa.Column('to_site_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('packing', 'in_transit', 'received', 'cancelled', name='shipment_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('conditions', sa.Enum('fresh', 'ambient', 'dry_ice', 'dry_shipper', 'ln2_vapour', name='shipment_conditions', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('courier', sa.String(length=200), nullable=False),
    sa.Column('tracking_ref', sa.String(length=100), nullable=False),
    sa.Column('logger_ref', sa.String(length=100), nullable=False),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('dispatched_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('dispatched_by_id', sa.Integer(), nullable=True),
    sa.Column('received_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('received_by_id', sa.Integer(), nullable=True),
    sa.Column('receipt_note', sa.Text(), nullable=True),
    sa.Column('logger_file_name', sa.String(length=200), nullable=True),
    sa.Column('logger_uploaded_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('logger_min_c', sa.Numeric(precision=7, scale=2), nullable=True),
    sa.Column('logger_max_c', sa.Numeric(precision=7, scale=2), nullable=True),
    sa.Column('logger_excursions', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'], name=op.f('fk_shipment_created_by_id_user_account')),
    sa.ForeignKeyConstraint(['dispatched_by_id'], ['user_account.id'], name=op.f('fk_shipment_dispatched_by_id_user_account')),
    sa.ForeignKeyConstraint(['from_site_id'], ['site.id'], name=op.f('fk_shipment_from_site_id_site')),
    sa.ForeignKeyConstraint(['received_by_id'], ['user_account.id'], name=op.f('fk_shipment_received_by_id_user_account')),
    sa.ForeignKeyConstraint(['to_site_id'], ['site.id'], name=op.f('fk_shipment_to_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shipment')),
    sa.UniqueConstraint('code', name=op.f('uq_shipment_code'))
    )
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipment_from_site_id'), ['from_site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_shipment_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_shipment_to_site_id'), ['to_site_id'], unique=False)

    op.create_table('temperature_reading',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('shipment_id', sa.Integer(), nullable=False),
    sa.Column('at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('celsius', sa.Numeric(precision=7, scale=2), nullable=False),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_temperature_reading_shipment_id_shipment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_temperature_reading'))
    )
    with op.batch_alter_table('temperature_reading', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_temperature_reading_shipment_id'), ['shipment_id'], unique=False)

    op.create_table('shipment_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('shipment_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('scanned_code', sa.String(length=64), nullable=False),
    sa.Column('container', sa.String(length=100), nullable=False),
    sa.Column('status', sa.Enum('expected', 'received', 'missing', 'unexpected', 'removed', name='shipment_line_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('added_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('added_by_id', sa.Integer(), nullable=True),
    sa.Column('scanned_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('scanned_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['added_by_id'], ['user_account.id'], name=op.f('fk_shipment_line_added_by_id_user_account')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_shipment_line_item_id_item')),
    sa.ForeignKeyConstraint(['scanned_by_id'], ['user_account.id'], name=op.f('fk_shipment_line_scanned_by_id_user_account')),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_shipment_line_shipment_id_shipment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shipment_line')),
    sa.UniqueConstraint('shipment_id', 'scanned_code', name=op.f('uq_shipment_line_shipment_id_scanned_code'))
    )
    with op.batch_alter_table('shipment_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipment_line_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_shipment_line_shipment_id'), ['shipment_id'], unique=False)

    with op.batch_alter_table('bedside_check', schema=None) as batch_op:
        batch_op.add_column(sa.Column('witness_signature_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_bedside_check_witness_signature_id_e_signature'), 'e_signature', ['witness_signature_id'], ['id'])

    with op.batch_alter_table('custody_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('witness_signature_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_custody_event_witness_signature_id_e_signature'), 'e_signature', ['witness_signature_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('custody_event', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_custody_event_witness_signature_id_e_signature'), type_='foreignkey')
        batch_op.drop_column('witness_signature_id')

    with op.batch_alter_table('bedside_check', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_bedside_check_witness_signature_id_e_signature'), type_='foreignkey')
        batch_op.drop_column('witness_signature_id')

    with op.batch_alter_table('shipment_line', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shipment_line_shipment_id'))
        batch_op.drop_index(batch_op.f('ix_shipment_line_item_id'))

    op.drop_table('shipment_line')
    with op.batch_alter_table('temperature_reading', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_temperature_reading_shipment_id'))

    op.drop_table('temperature_reading')
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shipment_to_site_id'))
        batch_op.drop_index(batch_op.f('ix_shipment_state'))
        batch_op.drop_index(batch_op.f('ix_shipment_from_site_id'))

    op.drop_table('shipment')
