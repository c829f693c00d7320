"""Alembic's environment for k2e: runs the revisions on the connection that
k2e.migrations.upgrade passes in ``config.attributes``.

Alembic executes this file itself (as module ``env_py``); imported as a k2e module (the
import checks in tests/unit/test_boundaries.py do) it does nothing.
"""

from alembic import context

from k2e.tables import metadata

if __name__ != "k2e.migrations.env":
    context.configure(connection=context.config.attributes["connection"], target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
