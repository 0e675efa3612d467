"""The shared experimental state: tables, the `Store` facade, journal-mode choice, migrations."""

from .models import SCHEMA_VERSION
from .store import Store, StoreError, emit

__all__ = ["Store", "StoreError", "emit", "SCHEMA_VERSION"]
