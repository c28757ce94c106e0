"""Every account has a key named `auto`: alias it to the first key of older accounts.

New accounts get a first key named `auto`. Accounts created before that have a first key named
`default` (or `env-...` for INFERD_ADMIN_KEY); renaming it would break outstanding scoped JWTs,
whose `kid` names it, so it keeps its name and gains the alias `auto`. The alias is a column of
the key's own row: revoking the key deletes the alias with it. (A lookup rule instead, "`auto`
is the oldest key", would pass `auto` on to the next key after a revocation.)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("alias", sa.String(200), nullable=True))
    # NULLs are distinct in SQLite and PostgreSQL alike: only set aliases are unique.
    op.create_index("ux_api_keys_account_alias", "api_keys", ["account_id", "alias"], unique=True)
    # The first key (lowest id: ids follow insertion) of each account with no key named `auto`.
    op.execute(
        """
        UPDATE api_keys SET alias = 'auto' WHERE id IN (
            SELECT MIN(k.id) FROM api_keys k
            WHERE NOT EXISTS (
                SELECT 1 FROM api_keys a WHERE a.account_id = k.account_id AND a.name = 'auto'
            )
            GROUP BY k.account_id
        )
        """
    )


def downgrade() -> None:
    op.drop_index("ux_api_keys_account_alias", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("alias")
