"""Cards issued and clinician feedback.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cds_card",
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("issued_at", _ts(), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("card_uuid", name="pk_cds_card"),
    )
    op.create_index("ix_cds_card_issued_at_rule", "cds_card", ["issued_at", "rule_id"])
    op.create_index("ix_cds_card_patient_key", "cds_card", ["patient_key"])

    op.create_table(
        "cds_feedback",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), autoincrement=True,
                  nullable=False),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_at", _ts(), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=True),
        sa.Column("reason_code", sa.String(200), nullable=True),
        sa.Column("reason_system", sa.String(500), nullable=True),
        sa.Column("reason_display", sa.String(500), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cds_feedback"),
        sa.UniqueConstraint("card_uuid", "outcome", "outcome_at", name="uq_cds_feedback_card_outcome_time"),
    )
    op.create_index("ix_cds_feedback_received_at", "cds_feedback", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_cds_feedback_received_at", table_name="cds_feedback")
    op.drop_table("cds_feedback")
    op.drop_index("ix_cds_card_patient_key", table_name="cds_card")
    op.drop_index("ix_cds_card_issued_at_rule", table_name="cds_card")
    op.drop_table("cds_card")
