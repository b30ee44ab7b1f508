"""Free-text search over reasons (``reasons__icontains``) on a million events: on PostgreSQL a
trigram GIN index over exactly the expression Django's ``icontains`` compiles to,
``UPPER(reasons::text)``, so ``LIKE '%...%'`` needs no full scan. pg_trgm is a trusted
extension (PostgreSQL 13+): the database owner may create it. SQLite has no such index;
it is the single-machine default and scans."""

from django.db import migrations

CREATE = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS audit_reasons_trgm_idx
    ON audit_auditevent USING gin ((UPPER(reasons::text)) gin_trgm_ops);
"""
DROP = "DROP INDEX IF EXISTS audit_reasons_trgm_idx;"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_search_indexes_and_jobs")]
    operations = [migrations.RunPython(forwards, backwards)]
