"""Tables of the audit and feedback store (SQLAlchemy Core, portable across SQLite and PostgreSQL).

Only portable types are used; timestamps go through :class:`UTCDateTime` so SQLite (which keeps no time
zone) and PostgreSQL (``timestamptz``) hand back the same aware UTC values. Constraint names are fixed
by a naming convention so Alembic migrations can refer to them on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite stores text; comparing naive UTC strings keeps range queries correct there.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# One row per card returned to an EHR. The patient is only a keyed hash (HMAC-SHA256), never the id.
cards = sa.Table(
    "cds_card",
    metadata,
    sa.Column("card_uuid", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("hook", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(200), nullable=False),
    sa.Column("indicator", sa.String(16), nullable=False),
    sa.Column("hook_instance", sa.String(128), nullable=False),
    sa.Column("issued_at", UTCDateTime(), nullable=False),
    sa.Column("patient_key", sa.String(64), nullable=True),
    # A card of a rule in shadow mode: computed and kept, never returned (cds_service.governance).
    sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The version (digest) of the rule that produced it; NULL for cards stored before versions existed.
    sa.Column("rule_version", sa.String(16), nullable=True),
    sa.Index("ix_cds_card_issued_at_rule", "issued_at", "rule_id"),
    sa.Index("ix_cds_card_patient_key", "patient_key"),
)

# One row per distinct feedback item; (card, outcome, outcome time) makes a repeated POST a no-op.
feedback = sa.Table(
    "cds_feedback",
    metadata,
    sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(64), nullable=False),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("outcome_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("accepted_suggestions", sa.JSON(), nullable=True),
    sa.Column("reason_code", sa.String(200), nullable=True),
    sa.Column("reason_system", sa.String(500), nullable=True),
    sa.Column("reason_display", sa.String(500), nullable=True),
    sa.Column("user_comment", sa.Text(), nullable=True),
    sa.UniqueConstraint("card_uuid", "outcome", "outcome_at", name="uq_cds_feedback_card_outcome_time"),
    sa.Index("ix_cds_feedback_received_at", "received_at"),
)

# One row per hook call (cards or not, errors included): the denominators of the alert-burden report.
# Deliberately no patient key, user or hookInstance: counts only.
hook_calls = sa.Table(
    "cds_hook_call",
    metadata,
    sa.Column("call_id", sa.String(32), primary_key=True),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("hook", sa.String(64), nullable=False),
    sa.Column("called_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("cards_critical", sa.Integer(), nullable=False),
    sa.Column("cards_warning", sa.Integer(), nullable=False),
    sa.Column("cards_info", sa.Integer(), nullable=False),
    sa.Column("shadow_cards", sa.Integer(), nullable=False),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("ladder_orders", sa.Integer(), nullable=False),
    sa.Column("ig_orders", sa.Integer(), nullable=False),
    sa.Index("ix_cds_hook_call_called_at", "called_at"),
)

# Every version of every rule a service has run with, and what it was made of (`cds-service rules`).
rule_versions = sa.Table(
    "cds_rule_version",
    metadata,
    sa.Column("rule_id", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(16), primary_key=True),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("inputs", sa.JSON(), nullable=False),
)
