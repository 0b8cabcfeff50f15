"""Rack-scanner verifications of a box and their findings (issue 6).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 19:49:04.670217
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rack_verification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('box_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('rack_id', sa.String(length=40), nullable=True),
    sa.Column('uploaded_by_id', sa.Integer(), nullable=False),
    sa.Column('uploaded_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Enum('pending', 'clean', 'accepted', 'superseded', name='verification_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('accepted_by_id', sa.Integer(), nullable=True),
    sa.Column('accepted_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('signature_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("(status = 'accepted' AND accepted_by_id IS NOT NULL AND accepted_at IS NOT NULL AND signature_id IS NOT NULL) OR (status <> 'accepted' AND accepted_by_id IS NULL AND accepted_at IS NULL AND signature_id IS NULL)", name=op.f('ck_rack_verification_accepted_is_signed')),
    sa.CheckConstraint('length(sha256) = 64', name=op.f('ck_rack_verification_sha256_length')),
    sa.ForeignKeyConstraint(['accepted_by_id'], ['user_account.id'], name=op.f('fk_rack_verification_accepted_by_id_user_account')),
    sa.ForeignKeyConstraint(['box_id'], ['storage_box.id'], name=op.f('fk_rack_verification_box_id_storage_box')),
    sa.ForeignKeyConstraint(['signature_id'], ['e_signature.id'], name=op.f('fk_rack_verification_signature_id_e_signature')),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['user_account.id'], name=op.f('fk_rack_verification_uploaded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rack_verification'))
    )
    with op.batch_alter_table('rack_verification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rack_verification_box_id'), ['box_id'], unique=False)

    op.create_table('rack_verification_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('verification_id', sa.Integer(), nullable=False),
    sa.Column('finding', sa.Enum('matched', 'missing', 'unexpected', 'misplaced', 'unreadable', 'checked_out', name='rack_finding', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('scanned_code', sa.String(length=40), nullable=True),
    sa.Column('file_line', sa.Integer(), nullable=True),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('recorded_position', sa.Integer(), nullable=True),
    sa.Column('recorded_location', sa.String(length=200), nullable=True),
    sa.Column('recorded_state', sa.String(length=32), nullable=True),
    sa.Column('resolution', sa.String(length=200), nullable=True),
    sa.CheckConstraint("item_id IS NOT NULL OR finding IN ('unexpected', 'unreadable')", name=op.f('ck_rack_verification_line_recorded_has_item')),
    sa.CheckConstraint("position IS NOT NULL OR finding IN ('missing', 'checked_out')", name=op.f('ck_rack_verification_line_read_has_position')),
    sa.CheckConstraint("scanned_code IS NOT NULL OR finding IN ('missing', 'checked_out', 'unreadable')", name=op.f('ck_rack_verification_line_read_has_code')),
    sa.CheckConstraint('position IS NULL OR position > 0', name=op.f('ck_rack_verification_line_position_positive')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_rack_verification_line_item_id_item')),
    sa.ForeignKeyConstraint(['verification_id'], ['rack_verification.id'], name=op.f('fk_rack_verification_line_verification_id_rack_verification')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rack_verification_line'))
    )
    with op.batch_alter_table('rack_verification_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rack_verification_line_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rack_verification_line_verification_id'), ['verification_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rack_verification_line', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rack_verification_line_verification_id'))
        batch_op.drop_index(batch_op.f('ix_rack_verification_line_item_id'))

    op.drop_table('rack_verification_line')
    with op.batch_alter_table('rack_verification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rack_verification_box_id'))

    op.drop_table('rack_verification')
