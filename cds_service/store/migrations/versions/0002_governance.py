"""Rule governance: shadow cards, rule versions, one row per hook call.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cds_card", sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("cds_card", sa.Column("rule_version", sa.String(16), nullable=True))

    op.create_table(
        "cds_hook_call",
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("called_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("cards_critical", sa.Integer(), nullable=False),
        sa.Column("cards_warning", sa.Integer(), nullable=False),
        sa.Column("cards_info", sa.Integer(), nullable=False),
        sa.Column("shadow_cards", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("ladder_orders", sa.Integer(), nullable=False),
        sa.Column("ig_orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_cds_hook_call"),
    )
    op.create_index("ix_cds_hook_call_called_at", "cds_hook_call", ["called_at"])

    op.create_table(
        "cds_rule_version",
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "version", name="pk_cds_rule_version"),
    )


def downgrade() -> None:
    op.drop_table("cds_rule_version")
    op.drop_index("ix_cds_hook_call_called_at", table_name="cds_hook_call")
    op.drop_table("cds_hook_call")
    with op.batch_alter_table("cds_card") as batch:
        batch.drop_column("rule_version")
        batch.drop_column("shadow")
