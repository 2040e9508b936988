-- loginvault bootstrap: the key registry, the token rule, and the key check.
-- The registry holds, per kind and version, a fingerprint of each key (one-way, keyed: it
-- tells two keys apart, and nothing about either), its state and when it changed. It never
-- holds a key: keys exist only in the environment and, as session settings, in the sessions
-- that use them.
CREATE TABLE IF NOT EXISTS pii.key_versions (
    kind           text        NOT NULL CHECK (kind IN ('hmac', 'encryption')),
    version        integer     NOT NULL CHECK (version > 0),
    fingerprint    text        NOT NULL,
    -- pending: a rotation to it is under way; active: the key in use; previous: the one before
    -- it, still needed (old tokens resolve / rows not yet re-encrypted); retired: gone.
    state          text        NOT NULL CHECK (state IN ('pending', 'active', 'previous', 'retired')),
    -- hmac: whether the token's input is kind || ':' || value (tokens of an IP and a device id
    -- with the same string differ). Only a version registered over existing tokens is not.
    kind_separated boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    activated_at   timestamptz,
    retired_at     timestamptz,
    PRIMARY KEY (kind, version),
    UNIQUE (kind, fingerprint)
);
CREATE UNIQUE INDEX IF NOT EXISTS key_versions_one_active ON pii.key_versions (kind) WHERE state = 'active';
CREATE UNIQUE INDEX IF NOT EXISTS key_versions_one_previous ON pii.key_versions (kind) WHERE state = 'previous';
CREATE UNIQUE INDEX IF NOT EXISTS key_versions_one_pending ON pii.key_versions (kind) WHERE state = 'pending';
ALTER TABLE pii.key_versions OWNER TO CURRENT_USER;
REVOKE ALL ON pii.key_versions FROM PUBLIC;
-- The transformer registers the keys in use (first build), rotates and retires them (`keys`).
GRANT SELECT, INSERT, UPDATE ON pii.key_versions TO loginvault_transformer;
-- The recovery functions pick the key of a row's version; the auditor sees the key history;
-- the recovery service checks its keys against it at start (naming both fingerprints when they
-- differ). A privacy officer holds no key, so has nothing to compare (earlier versions: it had).
REVOKE ALL ON pii.key_versions FROM loginvault_pii_admin;
GRANT SELECT ON pii.key_versions TO loginvault_recovery, loginvault_auditor, loginvault_recovery_service;
COMMENT ON TABLE pii.key_versions IS
    'Versions of the PII keys: fingerprints (never keys), states, times (loginvault keys status).';

-- Old token → new token of each HMAC rotation, kept until `keys retire hmac`: an old token
-- from an analyst's extract still resolves (audited). Written by the rotation (the transformer),
-- read by the recovery functions.
CREATE TABLE IF NOT EXISTS pii.token_map (
    kind         text    NOT NULL,
    old_token    text    NOT NULL,
    new_token    text    NOT NULL,
    from_version integer NOT NULL,
    to_version   integer NOT NULL,
    PRIMARY KEY (kind, old_token)
);
ALTER TABLE pii.token_map OWNER TO loginvault_transformer;
GRANT SELECT ON pii.token_map TO loginvault_recovery;

-- The vault records the versions of the keys that made each token and ciphertext. A vault of
-- an earlier version has neither column: its rows are version 1 of both.
DO $$
BEGIN
    IF to_regclass('pii.vault') IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_attribute WHERE attrelid = to_regclass('pii.vault') AND attname = 'hmac_key_version'
    ) THEN
        -- As the table's owner, never as the admin: whatever the transformer attached to its
        -- table (a trigger, an index expression) runs with the transformer's rights only.
        SET LOCAL ROLE loginvault_transformer;
        ALTER TABLE pii.vault ADD COLUMN hmac_key_version integer, ADD COLUMN encryption_key_version integer;
        UPDATE pii.vault SET hmac_key_version = 1, encryption_key_version = 1;
        RESET ROLE;
    END IF;
END
$$;

-- A key's fingerprint: the first 16 hex digits of HMAC-SHA256(label, key). One-way and keyed.
CREATE OR REPLACE FUNCTION loginvault.key_fingerprint(kind text, key text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $fn$
    SELECT left(encode(public.hmac('loginvault key fingerprint ' || kind, key, 'sha256'), 'hex'), 16)
$fn$;

-- The token of a canonical value: hex(HMAC-SHA256(input, key)), the input being
-- kind || ':' || value (or the value alone for a version that is not kind_separated). A plain
-- SQL expression, so that the planner inlines it.
CREATE OR REPLACE FUNCTION loginvault.pii_token(kind text, canonical text, key text, kind_separated boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT encode(public.hmac(CASE WHEN kind_separated THEN kind || ':' || canonical ELSE canonical END, key, 'sha256'), 'hex')
$fn$;

-- The session's keys (loginvault.hmac_key, loginvault.encryption_key) are the active versions;
-- loginvault.encryption_key_previous, when set, the previous one. Otherwise it raises one
-- sentence naming the kind and both fingerprints, before anything is written. `register`: a
-- kind with no version yet gets the session's key as version 1 (the first build); an HMAC key
-- registered over existing tokens keeps their rule (not kind_separated) until its rotation.
-- Also refuses while an HMAC rotation is unfinished.
CREATE OR REPLACE FUNCTION pii.check_keys(register boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    k text;
    key text;
    fp text;
    current record;
    legacy boolean;
BEGIN
    FOREACH k IN ARRAY ARRAY['hmac', 'encryption'] LOOP
        key := current_setting('loginvault.' || k || '_key', true);
        IF coalesce(octet_length(key), 0) < 32 THEN
            RAISE EXCEPTION 'PII key LOGINVAULT_%_KEY is missing or shorter than 32 bytes: run it through `loginvault transform`, which puts the keys in the session', upper(k)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        fp := loginvault.key_fingerprint(k, key);
        SELECT version, fingerprint INTO current FROM pii.key_versions WHERE kind = k AND state = 'active';
        IF NOT FOUND AND register THEN
            legacy := k = 'hmac' AND to_regclass('pii.vault') IS NOT NULL;
            IF legacy THEN
                EXECUTE 'SELECT EXISTS (SELECT FROM pii.vault)' INTO legacy;
            END IF;
            INSERT INTO pii.key_versions (kind, version, fingerprint, state, kind_separated, activated_at)
            VALUES (k, 1, fp, 'active', NOT legacy, now())
            ON CONFLICT DO NOTHING;
            SELECT version, fingerprint INTO current FROM pii.key_versions WHERE kind = k AND state = 'active';
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no % key is registered yet: run a transform first', k USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        IF current.fingerprint <> fp THEN
            RAISE EXCEPTION 'LOGINVAULT_%_KEY is not the active % key: its fingerprint is %, the active key (version %) has %',
                upper(k), k, fp, current.version, current.fingerprint
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    key := nullif(current_setting('loginvault.encryption_key_previous', true), '');
    IF key IS NOT NULL THEN
        fp := loginvault.key_fingerprint('encryption', key);
        SELECT version, fingerprint INTO current FROM pii.key_versions WHERE kind = 'encryption' AND state = 'previous';
        IF FOUND AND current.fingerprint <> fp THEN
            RAISE EXCEPTION 'LOGINVAULT_ENCRYPTION_KEY_PREVIOUS is not the previous encryption key: its fingerprint is %, the previous key (version %) has %',
                fp, current.version, current.fingerprint
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT version INTO current FROM pii.key_versions WHERE kind = 'hmac' AND state = 'pending';
    IF FOUND THEN
        RAISE EXCEPTION 'an HMAC key rotation to version % is unfinished: run `loginvault keys rotate hmac` again', current.version
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$fn$;

-- The session's encryption key of version `version`: whichever of loginvault.encryption_key
-- and loginvault.encryption_key_previous has that version's fingerprint; raises when neither.
CREATE OR REPLACE FUNCTION pii.encryption_key_of(version integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    found text;
BEGIN
    SELECT s.key INTO found
    FROM (VALUES (current_setting('loginvault.encryption_key', true)),
                 (current_setting('loginvault.encryption_key_previous', true))) AS s (key)
    JOIN pii.key_versions AS k ON k.kind = 'encryption' AND k.version = encryption_key_of.version
    WHERE s.key <> '' AND loginvault.key_fingerprint('encryption', s.key) = k.fingerprint
    LIMIT 1;
    IF found IS NULL THEN
        RAISE EXCEPTION 'no key of encryption key version % in this session: set it as LOGINVAULT_ENCRYPTION_KEY or LOGINVAULT_ENCRYPTION_KEY_PREVIOUS', version
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN found;
END
$fn$;

REVOKE ALL ON FUNCTION loginvault.key_fingerprint(text, text), loginvault.pii_token(text, text, text, boolean),
    pii.check_keys(boolean), pii.encryption_key_of(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loginvault.key_fingerprint(text, text), loginvault.pii_token(text, text, text, boolean),
    pii.check_keys(boolean), pii.encryption_key_of(integer) TO loginvault_transformer, loginvault_recovery;
