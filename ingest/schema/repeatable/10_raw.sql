-- raw's grants. raw is owned by loginvault_owner (NOLOGIN, no members but the admin): the
-- loader appends rows and can neither alter a table (row-level security, policies, rules), nor
-- create a trigger, view or function that the transformer's session would run. dlt creates
-- nothing at run time: every table it writes is the baseline's, so the loader needs no CREATE
-- on the schema.
REVOKE ALL ON SCHEMA raw FROM PUBLIC, loginvault_loader, loginvault_transformer;
-- USAGE: to name the tables below (loader: to append; transformer: to read).
GRANT USAGE ON SCHEMA raw TO loginvault_loader, loginvault_transformer;
ALTER DEFAULT PRIVILEGES FOR ROLE loginvault_loader IN SCHEMA raw REVOKE ALL ON TABLES FROM loginvault_transformer;
REVOKE ALL ON ALL TABLES IN SCHEMA raw FROM PUBLIC, loginvault_loader, loginvault_transformer;
-- The loader: append deliveries; record each completed load; look up and store dlt's schema.
GRANT INSERT ON raw.login_events, raw._dlt_loads TO loginvault_loader;
GRANT SELECT, INSERT ON raw._dlt_version TO loginvault_loader;
-- The transformer: read the deliveries of completed loads. Nothing else in raw.
GRANT SELECT ON raw.login_events, raw._dlt_loads TO loginvault_transformer;
-- What `retention apply` removed (read by the transform: a full refresh after it is refused).
GRANT SELECT ON raw.retention_log TO loginvault_transformer;
