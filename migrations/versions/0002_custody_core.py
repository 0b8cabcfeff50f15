"""custody core: patients, episodes, items, custody events, audit trail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 14:26:23

Patients (pseudonym, encrypted identity), treatment episodes with their Chain of Identity,
material items with lineage and state, append-only custody events, holds, product lots, QC,
bedside checks, identifier counters, the hash-chained audit trail and e-signatures.
On PostgreSQL, triggers refuse UPDATE and DELETE on the append-only tables.
"""

from alembic import op
import sqlalchemy as sa
import lims.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Written out here, not imported: a migration describes the schema as it was at this revision.
APPEND_ONLY_TABLES = ("audit_entry", "custody_event", "e_signature")


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    op.create_table('identifier_counter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=40), nullable=False),
    sa.Column('last_value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identifier_counter')),
    sa.UniqueConstraint('scope', name=op.f('uq_identifier_counter_scope'))
    )
    op.create_table('patient',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=16), nullable=False),
    sa.Column('identifier_kind', sa.Enum('cpr', 'replacement', name='identifier_kind', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('cpr_hmac', sa.String(length=64), nullable=False),
    sa.Column('cpr_ciphertext', sa.Text(), nullable=False),
    sa.Column('name_ciphertext', sa.Text(), nullable=False),
    sa.Column('birth_date_ciphertext', sa.Text(), nullable=False),
    sa.Column('treating_site_id', sa.Integer(), nullable=False),
    sa.Column('consent_biobank', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('consent_genetic', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('consent_withdrawn_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['treating_site_id'], ['site.id'], name=op.f('fk_patient_treating_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patient')),
    sa.UniqueConstraint('cpr_hmac', name=op.f('uq_patient_cpr_hmac')),
    sa.UniqueConstraint('pseudonym', name=op.f('uq_patient_pseudonym'))
    )
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_treating_site_id'), ['treating_site_id'], unique=False)

    op.create_table('audit_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('entity', sa.String(length=40), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=True),
    sa.Column('old_value', sa.Text(), nullable=True),
    sa.Column('new_value', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('row_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_audit_entry_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry')),
    sa.UniqueConstraint('row_hash', name=op.f('uq_audit_entry_row_hash')),
    sa.UniqueConstraint('seq', name=op.f('uq_audit_entry_seq'))
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entry_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_user_id'), ['user_id'], unique=False)

    op.create_table('e_signature',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('printed_name', sa.String(length=200), nullable=False),
    sa.Column('meaning', sa.String(length=40), nullable=False),
    sa.Column('signed_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('entity', sa.String(length=40), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=False),
    sa.Column('record_hash', sa.String(length=64), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_e_signature_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_e_signature'))
    )
    with op.batch_alter_table('e_signature', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_e_signature_entity_id'), ['entity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_e_signature_user_id'), ['user_id'], unique=False)

    op.create_table('episode',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('coi', sa.String(length=15), nullable=False),
    sa.Column('coi_check', sa.String(length=1), nullable=False),
    sa.Column('product_name', sa.String(length=120), nullable=False),
    sa.Column('product_kind', sa.Enum('commercial', 'academic', name='product_kind', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('protocol', sa.String(length=120), nullable=False),
    sa.Column('treating_site_id', sa.Integer(), nullable=False),
    sa.Column('planned_infusion_date', sa.Date(), nullable=True),
    sa.Column('infused_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint('length(coi) = 15', name=op.f('ck_episode_coi_length')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_episode_patient_id_patient')),
    sa.ForeignKeyConstraint(['treating_site_id'], ['site.id'], name=op.f('fk_episode_treating_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_episode')),
    sa.UniqueConstraint('coi', name=op.f('uq_episode_coi'))
    )
    with op.batch_alter_table('episode', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_episode_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_episode_treating_site_id'), ['treating_site_id'], unique=False)

    op.create_table('product_lot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lot_number', sa.String(length=40), nullable=False),
    sa.Column('episode_id', sa.Integer(), nullable=False),
    sa.Column('manufacturing_site_id', sa.Integer(), nullable=False),
    sa.Column('manufactured_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['episode_id'], ['episode.id'], name=op.f('fk_product_lot_episode_id_episode')),
    sa.ForeignKeyConstraint(['manufacturing_site_id'], ['site.id'], name=op.f('fk_product_lot_manufacturing_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_lot')),
    sa.UniqueConstraint('lot_number', name=op.f('uq_product_lot_lot_number'))
    )
    with op.batch_alter_table('product_lot', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_product_lot_episode_id'), ['episode_id'], unique=False)

    op.create_table('item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('check_character', sa.String(length=1), nullable=False),
    sa.Column('kind', sa.Enum('apheresis', 'product_bag', 'aliquot', name='kind', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('material_type', sa.Enum('leukapheresis', 'car_t_product', 'whole_blood', 'pbmc', 'plasma', 'serum', 'dna', 'rna', 'cell_pellet', 'product_retention', name='material_type', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('episode_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('lot_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.Enum('collected', 'packed', 'received_for_manufacturing', 'in_manufacturing', 'consumed', 'manufactured', 'quarantine', 'released', 'received', 'issued', 'thawed', 'identity_verified', 'infused', 'returned', 'registered', 'reserved', 'picked', 'distributed', 'checked_out', 'lost', 'in_transit', 'stored', 'discarded', name='state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('quantity', sa.Numeric(precision=12, scale=3), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('cell_count', sa.BigInteger(), nullable=True),
    sa.Column('timepoint', sa.String(length=16), nullable=True),
    sa.Column('timepoint_day', sa.Integer(), nullable=True),
    sa.Column('aliquot_number', sa.Integer(), nullable=True),
    sa.Column('aliquot_total', sa.Integer(), nullable=True),
    sa.Column('collected_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('thawed_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('thaw_count', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('location', sa.String(length=200), nullable=False),
    sa.Column('custodian', sa.String(length=200), nullable=False),
    sa.Column('label_printed_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("kind <> 'product_bag' OR lot_id IS NOT NULL", name=op.f('ck_item_bag_has_lot')),
    sa.CheckConstraint("kind = 'aliquot' OR parent_id IS NULL", name=op.f('ck_item_only_aliquots_derive')),
    sa.CheckConstraint('(aliquot_number IS NULL AND aliquot_total IS NULL) OR (aliquot_number BETWEEN 1 AND aliquot_total)', name=op.f('ck_item_aliquot_n_of_total')),
    sa.CheckConstraint('quantity >= 0', name=op.f('ck_item_quantity_not_negative')),
    sa.CheckConstraint('thaw_count >= 0', name=op.f('ck_item_thaw_count_not_negative')),
    sa.ForeignKeyConstraint(['episode_id'], ['episode.id'], name=op.f('fk_item_episode_id_episode')),
    sa.ForeignKeyConstraint(['lot_id'], ['product_lot.id'], name=op.f('fk_item_lot_id_product_lot')),
    sa.ForeignKeyConstraint(['parent_id'], ['item.id'], name=op.f('fk_item_parent_id_item')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_item_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_item')),
    sa.UniqueConstraint('code', name=op.f('uq_item_code'))
    )
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_item_episode_id'), ['episode_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_item_lot_id'), ['lot_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_item_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_item_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_item_state'), ['state'], unique=False)

    op.create_table('qc_result',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lot_id', sa.Integer(), nullable=False),
    sa.Column('test', sa.String(length=40), nullable=False),
    sa.Column('value', sa.String(length=60), nullable=False),
    sa.Column('unit', sa.String(length=20), nullable=False),
    sa.Column('specification', sa.String(length=100), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('entered_by_id', sa.Integer(), nullable=True),
    sa.Column('entered_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['entered_by_id'], ['user_account.id'], name=op.f('fk_qc_result_entered_by_id_user_account')),
    sa.ForeignKeyConstraint(['lot_id'], ['product_lot.id'], name=op.f('fk_qc_result_lot_id_product_lot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qc_result'))
    )
    with op.batch_alter_table('qc_result', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_qc_result_lot_id'), ['lot_id'], unique=False)

    op.create_table('bedside_check',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('episode_id', sa.Integer(), nullable=True),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('mismatches', sa.Text(), nullable=False),
    sa.Column('checked_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('checked_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['checked_by_id'], ['user_account.id'], name=op.f('fk_bedside_check_checked_by_id_user_account')),
    sa.ForeignKeyConstraint(['episode_id'], ['episode.id'], name=op.f('fk_bedside_check_episode_id_episode')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_bedside_check_item_id_item')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bedside_check'))
    )
    with op.batch_alter_table('bedside_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bedside_check_item_id'), ['item_id'], unique=False)

    op.create_table('custody_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('from_site_id', sa.Integer(), nullable=True),
    sa.Column('to_site_id', sa.Integer(), nullable=True),
    sa.Column('from_location', sa.String(length=200), nullable=True),
    sa.Column('to_location', sa.String(length=200), nullable=True),
    sa.Column('from_custodian', sa.String(length=200), nullable=True),
    sa.Column('to_custodian', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('temperature_logger_ref', sa.String(length=100), nullable=True),
    sa.Column('signature_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['from_site_id'], ['site.id'], name=op.f('fk_custody_event_from_site_id_site')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_custody_event_item_id_item')),
    sa.ForeignKeyConstraint(['signature_id'], ['e_signature.id'], name=op.f('fk_custody_event_signature_id_e_signature')),
    sa.ForeignKeyConstraint(['to_site_id'], ['site.id'], name=op.f('fk_custody_event_to_site_id_site')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_custody_event_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custody_event'))
    )
    with op.batch_alter_table('custody_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_custody_event_item_id'), ['item_id'], unique=False)

    op.create_table('hold',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Enum('consent_withdrawn', 'qc_out_of_specification', 'temperature_excursion', 'other', name='hold_reason', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('placed_at', lims.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('placed_by_id', sa.Integer(), nullable=True),
    sa.Column('cleared_at', lims.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cleared_by_id', sa.Integer(), nullable=True),
    sa.Column('clear_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['cleared_by_id'], ['user_account.id'], name=op.f('fk_hold_cleared_by_id_user_account')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_hold_item_id_item')),
    sa.ForeignKeyConstraint(['placed_by_id'], ['user_account.id'], name=op.f('fk_hold_placed_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hold'))
    )
    with op.batch_alter_table('hold', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hold_item_id'), ['item_id'], unique=False)



    audit_head = sa.table(
        "audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger),
        sa.column("last_hash", sa.String),
    )
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "last_hash": "0" * 64}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION lims_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END;
            $$
            """
        )
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION lims_refuse_change()"
            )

def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS lims_refuse_change()")
    with op.batch_alter_table('hold', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hold_item_id'))

    op.drop_table('hold')
    with op.batch_alter_table('custody_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_custody_event_item_id'))

    op.drop_table('custody_event')
    with op.batch_alter_table('bedside_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bedside_check_item_id'))

    op.drop_table('bedside_check')
    with op.batch_alter_table('qc_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_qc_result_lot_id'))

    op.drop_table('qc_result')
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_item_state'))
        batch_op.drop_index(batch_op.f('ix_item_site_id'))
        batch_op.drop_index(batch_op.f('ix_item_parent_id'))
        batch_op.drop_index(batch_op.f('ix_item_lot_id'))
        batch_op.drop_index(batch_op.f('ix_item_episode_id'))

    op.drop_table('item')
    with op.batch_alter_table('product_lot', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_product_lot_episode_id'))

    op.drop_table('product_lot')
    with op.batch_alter_table('episode', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_episode_treating_site_id'))
        batch_op.drop_index(batch_op.f('ix_episode_patient_id'))

    op.drop_table('episode')
    with op.batch_alter_table('e_signature', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_e_signature_user_id'))
        batch_op.drop_index(batch_op.f('ix_e_signature_entity_id'))

    op.drop_table('e_signature')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entry_user_id'))
        batch_op.drop_index(batch_op.f('ix_audit_entry_action'))

    op.drop_table('audit_entry')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_treating_site_id'))

    op.drop_table('patient')
    op.drop_table('identifier_counter')
    op.drop_table('audit_head')
