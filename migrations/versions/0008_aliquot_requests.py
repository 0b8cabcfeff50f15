"""Aliquot requests, their lines, criteria and signed reviews; opt-out register checks;
the in-app notification inbox (issue 8).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 21:52:20.950695
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('aliquot_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('state', sa.Enum('draft', 'submitted', 'under_review', 'approved', 'partly_approved', 'rejected', 'picking', 'handed_over', 'shipped', 'received', 'closed', 'cancelled', name='request_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('researcher_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('principal_investigator', sa.String(length=120), nullable=False),
    sa.Column('ethics_ref', sa.String(length=60), nullable=False),
    sa.Column('dpa_ref', sa.String(length=60), nullable=False),
    sa.Column('external', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('recipient_institution', sa.String(length=200), nullable=False),
    sa.Column('mta_ref', sa.String(length=60), nullable=False),
    sa.Column('intended_analyses', sa.Text(), nullable=False),
    sa.Column('genetic', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('delivery', sa.Enum('pick_up', 'shipment', name='request_delivery', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('delivery_details', sa.Text(), nullable=False),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decided_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ready_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('courier', sa.String(length=200), nullable=False),
    sa.Column('conditions', sa.Enum('fresh', 'ambient', 'dry_ice', 'dry_shipper', 'ln2_vapour', name='request_conditions', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('logger_ref', sa.String(length=100), nullable=False),
    sa.Column('tracking_ref', sa.String(length=100), nullable=False),
    sa.Column('dispatched_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('dispatched_by_id', sa.Integer(), nullable=True),
    sa.Column('received_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('received_by_id', sa.Integer(), nullable=True),
    sa.Column('closed_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['dispatched_by_id'], ['user_account.id'], name=op.f('fk_aliquot_request_dispatched_by_id_user_account')),
    sa.ForeignKeyConstraint(['received_by_id'], ['user_account.id'], name=op.f('fk_aliquot_request_received_by_id_user_account')),
    sa.ForeignKeyConstraint(['researcher_id'], ['user_account.id'], name=op.f('fk_aliquot_request_researcher_id_user_account')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_aliquot_request_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aliquot_request')),
    sa.UniqueConstraint('code', name=op.f('uq_aliquot_request_code'))
    )
    with op.batch_alter_table('aliquot_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aliquot_request_researcher_id'), ['researcher_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_aliquot_request_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_aliquot_request_state'), ['state'], unique=False)

    op.create_table('aliquot_request_criterion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('study', sa.String(length=120), nullable=False),
    sa.Column('material_type', sa.Enum('leukapheresis', 'car_t_product', 'whole_blood', 'pbmc', 'plasma', 'serum', 'dna', 'rna', 'cell_pellet', 'product_retention', name='criterion_material_type', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('timepoints', sa.String(length=200), nullable=False),
    sa.Column('per_subject', sa.Integer(), nullable=False),
    sa.Column('min_quantity', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('max_thaws', sa.Integer(), nullable=True),
    sa.Column('site_code', sa.String(length=16), nullable=False),
    sa.Column('shortfall', sa.Text(), nullable=False),
    sa.CheckConstraint('max_thaws IS NULL OR max_thaws >= 0', name=op.f('ck_aliquot_request_criterion_max_thaws_not_negative')),
    sa.CheckConstraint('per_subject BETWEEN 1 AND 100', name=op.f('ck_aliquot_request_criterion_per_subject_in_range')),
    sa.ForeignKeyConstraint(['request_id'], ['aliquot_request.id'], name=op.f('fk_aliquot_request_criterion_request_id_aliquot_request')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aliquot_request_criterion'))
    )
    with op.batch_alter_table('aliquot_request_criterion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aliquot_request_criterion_request_id'), ['request_id'], unique=False)

    op.create_table('aliquot_request_review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Enum('committee', 'manager', name='review_stage', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('study', sa.String(length=120), nullable=False),
    sa.Column('decision', sa.Enum('approved', 'rejected', name='review_decision', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('approved_count', sa.Integer(), nullable=False),
    sa.Column('at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['aliquot_request.id'], name=op.f('fk_aliquot_request_review_request_id_aliquot_request')),
    sa.ForeignKeyConstraint(['reviewer_id'], ['user_account.id'], name=op.f('fk_aliquot_request_review_reviewer_id_user_account')),
    sa.ForeignKeyConstraint(['signature_id'], ['e_signature.id'], name=op.f('fk_aliquot_request_review_signature_id_e_signature')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aliquot_request_review'))
    )
    with op.batch_alter_table('aliquot_request_review', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aliquot_request_review_request_id'), ['request_id'], unique=False)

    op.create_table('notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.Column('message', sa.String(length=500), nullable=False),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('read_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('mailed_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['aliquot_request.id'], name=op.f('fk_notification_request_id_aliquot_request')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_notification_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification'))
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_request_id'), ['request_id'], unique=False)
        batch_op.create_index('ix_notification_user_unread', ['user_id', 'read_at'], unique=False)

    op.create_table('opt_out_check',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('checked_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('checked_by_id', sa.Integer(), nullable=False),
    sa.Column('registered', sa.Boolean(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['checked_by_id'], ['user_account.id'], name=op.f('fk_opt_out_check_checked_by_id_user_account')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_opt_out_check_patient_id_patient')),
    sa.ForeignKeyConstraint(['request_id'], ['aliquot_request.id'], name=op.f('fk_opt_out_check_request_id_aliquot_request')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_opt_out_check'))
    )
    with op.batch_alter_table('opt_out_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_opt_out_check_patient_id'), ['patient_id'], unique=False)

    op.create_table('aliquot_request_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('criterion_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('requested', 'approved', 'not_approved', 'picked', 'short', 'withdrawn', 'handed_over', 'received', name='request_line_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('short_kind', sa.Enum('missing', 'damaged', name='short_kind', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('picked_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('picked_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("(status = 'short') = (short_kind IS NOT NULL)", name=op.f('ck_aliquot_request_line_short_kind_only_when_short')),
    sa.CheckConstraint("status NOT IN ('not_approved', 'short', 'withdrawn') OR reason <> ''", name=op.f('ck_aliquot_request_line_left_out_says_why')),
    sa.ForeignKeyConstraint(['criterion_id'], ['aliquot_request_criterion.id'], name=op.f('fk_aliquot_request_line_criterion_id_aliquot_request_criterion')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_aliquot_request_line_item_id_item')),
    sa.ForeignKeyConstraint(['picked_by_id'], ['user_account.id'], name=op.f('fk_aliquot_request_line_picked_by_id_user_account')),
    sa.ForeignKeyConstraint(['request_id'], ['aliquot_request.id'], name=op.f('fk_aliquot_request_line_request_id_aliquot_request')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aliquot_request_line')),
    sa.UniqueConstraint('request_id', 'item_id', name='uq_request_line_item')
    )
    with op.batch_alter_table('aliquot_request_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aliquot_request_line_request_id'), ['request_id'], unique=False)
        batch_op.create_index('uq_request_line_active_item', ['item_id'], unique=True, sqlite_where=sa.text("status IN ('approved', 'picked', 'handed_over')"), postgresql_where=sa.text("status IN ('approved', 'picked', 'handed_over')"))



def downgrade() -> None:
    with op.batch_alter_table('aliquot_request_line', schema=None) as batch_op:
        batch_op.drop_index('uq_request_line_active_item', sqlite_where=sa.text("status IN ('approved', 'picked', 'handed_over')"), postgresql_where=sa.text("status IN ('approved', 'picked', 'handed_over')"))
        batch_op.drop_index(batch_op.f('ix_aliquot_request_line_request_id'))

    op.drop_table('aliquot_request_line')
    with op.batch_alter_table('opt_out_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_opt_out_check_patient_id'))

    op.drop_table('opt_out_check')
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_user_unread')
        batch_op.drop_index(batch_op.f('ix_notification_request_id'))

    op.drop_table('notification')
    with op.batch_alter_table('aliquot_request_review', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aliquot_request_review_request_id'))

    op.drop_table('aliquot_request_review')
    with op.batch_alter_table('aliquot_request_criterion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aliquot_request_criterion_request_id'))

    op.drop_table('aliquot_request_criterion')
    with op.batch_alter_table('aliquot_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aliquot_request_state'))
        batch_op.drop_index(batch_op.f('ix_aliquot_request_site_id'))
        batch_op.drop_index(batch_op.f('ix_aliquot_request_researcher_id'))

    op.drop_table('aliquot_request')
