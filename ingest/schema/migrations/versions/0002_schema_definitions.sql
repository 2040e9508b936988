-- Migration 0002: the record of the repeatable definitions applied (ingest/schema/migrate.py):
-- each file's name and checksum (of its text and the mart schema's name), and when. The
-- admin's; nobody else reads it.
CREATE TABLE loginvault.schema_definitions (
    name       text        PRIMARY KEY,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL
);
REVOKE ALL ON loginvault.schema_definitions FROM PUBLIC;
