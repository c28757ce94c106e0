"""Built-in models live in the deployments tables: a version's config holds a whole catalog
declaration, so it is unbounded text. (SQLite does not enforce VARCHAR lengths.)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("deployment_versions", "config", type_=sa.Text)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("deployment_versions", "config", type_=sa.String(4000))
