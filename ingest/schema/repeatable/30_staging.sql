-- Staging.
-- Owned by the transformer and read only by it (and by nobody's session but its own).
REVOKE ALL ON SCHEMA staging FROM PUBLIC;
-- USAGE for raw's owner (retention reads the staged loads and the marts' watermark) and for the
-- erasure functions' owner (it deletes a subject's staged rows).
GRANT USAGE ON SCHEMA staging TO loginvault_owner, loginvault_eraser;
