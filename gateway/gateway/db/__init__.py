"""Storage of users, credentials and conversations (SQLAlchemy, migrated by Alembic)."""
