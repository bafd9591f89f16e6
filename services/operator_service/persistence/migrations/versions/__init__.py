"""The revisions (a package only so a wheel ships them; Alembic skips this file)."""
