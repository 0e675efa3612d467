"""The shared experimental state: tables, the `Store` facade, journal-mode choice, migrations, and the
records' owners: `lifecycle` (status enums, one lifecycle table per record kind) and one module of verbs
per record kind (`proposals`, `trials`, `champions`, `campaigns`, `teams`, `agents`, `forum`). Code
outside this package moves a record only through those verbs."""

from .lifecycle import IllegalTransition
from .models import SCHEMA_VERSION
from .store import Store, StoreError, emit

__all__ = ["Store", "StoreError", "emit", "SCHEMA_VERSION", "IllegalTransition"]
