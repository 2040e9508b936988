-- loginvault bootstrap: staging.
-- Owned by the transformer and read only by it (and by nobody's session but its own).
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION loginvault_transformer;
REVOKE ALL ON SCHEMA staging FROM PUBLIC;
-- Earlier versions created the parsers in staging, as the transformer, on each dbt run.
DROP FUNCTION IF EXISTS staging.loginvault_try_jsonb(text), staging.loginvault_json_error(text),
    staging.loginvault_try_inet(text);
