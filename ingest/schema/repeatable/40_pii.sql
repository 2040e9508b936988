-- pii's grants, the vault's guard. pii is owned by the admin, so that the transformer (which
-- fills pii.vault here) can neither drop nor rewrite the recovery audit or the recovery
-- functions. Nobody creates here: the officers' functions live here, and an overload made
-- here could catch their calls.
REVOKE ALL ON SCHEMA pii FROM PUBLIC, loginvault_pii_admin, loginvault_transformer;
-- USAGE: dbt fills pii.vault and the rotation pii.token_map (transformer), to file and read
-- requests (pii-admin), to serve them (the recovery service), to read the audit (auditor), and
-- for the functions' owner to reach the vault.
GRANT USAGE ON SCHEMA pii TO loginvault_transformer, loginvault_pii_admin, loginvault_auditor, loginvault_recovery,
    loginvault_recovery_service;

-- The vault (the baseline's, of its declared shape, owned by the transformer: dbt fills it)
-- keeps its columns (21_shapes.sql). Grants as the model's +grants: the recovery functions'
-- owner reads it, the erasure's reads and shreds.
SELECT loginvault.ensure_guard('pii.vault');
GRANT SELECT ON pii.vault TO loginvault_recovery, loginvault_eraser;
GRANT DELETE ON pii.vault TO loginvault_eraser;

-- The recovery audit: append-only, only the functions' owner inserts.
REVOKE ALL ON pii.recovery_audit FROM PUBLIC, loginvault_pii_admin;
-- The functions' owner: append the audit row; count a login's lookups of the day (budget).
GRANT INSERT, SELECT ON pii.recovery_audit TO loginvault_recovery;
-- The auditor: read it (`loginvault audit`).
GRANT SELECT ON pii.recovery_audit TO loginvault_auditor;
-- The recovery budget and the marts' schema: written by the admin only.
REVOKE ALL ON pii.recovery_budget FROM PUBLIC;
GRANT SELECT ON pii.recovery_budget TO loginvault_recovery, loginvault_auditor;
REVOKE ALL ON pii.settings FROM PUBLIC;
GRANT SELECT ON pii.settings TO loginvault_recovery;
-- Recovery and erasure requests (65_requests.sql): only the functions' owner
-- (loginvault_recovery) writes them.
REVOKE ALL ON pii.recovery_requests FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON pii.recovery_requests TO loginvault_recovery;
-- The auditor: who asked for what and why (no cleartext is ever in this table).
GRANT SELECT ON pii.recovery_requests TO loginvault_auditor;
REVOKE ALL ON pii.recovery_inputs FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON pii.recovery_inputs TO loginvault_recovery;
REVOKE ALL ON pii.recovery_answers FROM PUBLIC;
-- UPDATE: only to lock an expired answer before deleting it (one its asker holds is left).
GRANT SELECT, INSERT, UPDATE, DELETE ON pii.recovery_answers TO loginvault_recovery;
REVOKE ALL ON pii.recovery_approvals FROM PUBLIC;
GRANT SELECT, INSERT ON pii.recovery_approvals TO loginvault_recovery;
GRANT SELECT ON pii.recovery_approvals TO loginvault_auditor;
REVOKE ALL ON pii.recovery_budget_locks FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON pii.recovery_budget_locks TO loginvault_recovery;
