"""Label print jobs and their labels; the scan-back time of an item's label (issue 7).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 20:24:21.190843
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('print_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('printed_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('printed_by_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=80), nullable=False),
    sa.Column('format', sa.Enum('pdf', 'zpl', name='print_format', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('destination', sa.String(length=80), nullable=False),
    sa.Column('printer_host', sa.String(length=255), nullable=True),
    sa.Column('printer_port', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('sent', 'downloaded', name='print_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('reprint', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('label_count', sa.Integer(), nullable=False),
    sa.CheckConstraint("(status = 'sent' AND destination <> 'download' AND printer_host IS NOT NULL AND printer_port IS NOT NULL) OR (status = 'downloaded' AND destination = 'download' AND printer_host IS NULL AND printer_port IS NULL)", name=op.f('ck_print_job_destination_matches_status')),
    sa.CheckConstraint("status <> 'sent' OR format = 'zpl'", name=op.f('ck_print_job_printers_take_zpl')),
    sa.CheckConstraint('NOT reprint OR reason IS NOT NULL', name=op.f('ck_print_job_reprint_has_reason')),
    sa.CheckConstraint('label_count > 0', name=op.f('ck_print_job_label_count_positive')),
    sa.ForeignKeyConstraint(['printed_by_id'], ['user_account.id'], name=op.f('fk_print_job_printed_by_id_user_account')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_print_job_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_print_job'))
    )
    with op.batch_alter_table('print_job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_print_job_printed_at'), ['printed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_print_job_site_id'), ['site_id'], unique=False)

    op.create_table('printed_label',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('box_id', sa.Integer(), nullable=True),
    sa.Column('shipment_id', sa.Integer(), nullable=True),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.CheckConstraint('(item_id IS NOT NULL AND box_id IS NULL AND shipment_id IS NULL) OR (item_id IS NULL AND box_id IS NOT NULL AND shipment_id IS NULL) OR (item_id IS NULL AND box_id IS NULL AND shipment_id IS NOT NULL)', name=op.f('ck_printed_label_names_one_thing')),
    sa.CheckConstraint('number BETWEEN 1 AND total', name=op.f('ck_printed_label_number_of_total')),
    sa.ForeignKeyConstraint(['box_id'], ['storage_box.id'], name=op.f('fk_printed_label_box_id_storage_box')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_printed_label_item_id_item')),
    sa.ForeignKeyConstraint(['job_id'], ['print_job.id'], name=op.f('fk_printed_label_job_id_print_job')),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_printed_label_shipment_id_shipment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_printed_label'))
    )
    with op.batch_alter_table('printed_label', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_printed_label_box_id'), ['box_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_printed_label_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_printed_label_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_printed_label_shipment_id'), ['shipment_id'], unique=False)

    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('label_verified_at', lims.db.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.drop_column('label_verified_at')

    with op.batch_alter_table('printed_label', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_printed_label_shipment_id'))
        batch_op.drop_index(batch_op.f('ix_printed_label_job_id'))
        batch_op.drop_index(batch_op.f('ix_printed_label_item_id'))
        batch_op.drop_index(batch_op.f('ix_printed_label_box_id'))

    op.drop_table('printed_label')
    with op.batch_alter_table('print_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_print_job_site_id'))
        batch_op.drop_index(batch_op.f('ix_print_job_printed_at'))

    op.drop_table('print_job')
