-- The key registry's grants (its table is the baseline's), the token rule, and the key check.
REVOKE ALL ON pii.key_versions FROM PUBLIC;
-- Only the key administrator writes the registry, through its functions below: a workload
-- that could write it could register a key of its own as active, re-hash the erased subjects
-- under it and put the registry back (their next messages would enter the mart). The
-- transformer reads it (every build checks its keys; the rotations plan their steps) and calls
-- the functions (first build, rotations, retirement).
REVOKE ALL ON pii.key_versions FROM loginvault_transformer;
GRANT SELECT ON pii.key_versions TO loginvault_transformer;
GRANT SELECT, INSERT, UPDATE ON pii.key_versions TO loginvault_key_admin;
-- The recovery functions pick the key of a row's version; the auditor sees the key history;
-- the recovery service checks its keys against it at start (naming both fingerprints when they
-- differ). A privacy officer holds no key, so has nothing to compare.
REVOKE ALL ON pii.key_versions FROM loginvault_pii_admin;
GRANT SELECT ON pii.key_versions TO loginvault_recovery, loginvault_auditor, loginvault_recovery_service;

-- pii.token_map (old token → new token of each HMAC rotation; the baseline's, owned by the
-- transformer) keeps its columns (21_shapes.sql); the recovery functions read it.
SELECT loginvault.ensure_guard('pii.token_map');
GRANT SELECT ON pii.token_map TO loginvault_recovery;

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
-- kind with no version yet gets the session's key as version 1 (the first build, through the
-- key administrator's pii.register_first_key); an HMAC key registered over existing tokens
-- keeps their rule (not kind_separated) until its rotation.
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
            PERFORM pii.register_first_key(k, NOT legacy);
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

-- ---------------------------------------------------------------- the key administrator
-- loginvault_key_admin (NOLOGIN, never granted to a login) owns the only writers of the
-- registry: the first registration, an HMAC rotation's two steps, an encryption rotation's
-- switch and the retirement. Each takes the fingerprints from the session's keys itself (a
-- caller names no fingerprint), reads the registry only (the admin's table: never the
-- transformer's vault, marts or staging, which could carry code that would run as the definer),
-- and moves a version forward only: pending → active → previous → retired. A key is registered
-- once: an old or retired key never becomes active again. Whether the data is ready for a step
-- (the token map complete, the vault re-encrypted) is the rotation's own check, in Python, on
-- the transformer's own tables (ingest/vault/rotation.py, ingest/vault/keys.py).

-- The fingerprint of the session's key of `key_kind` (loginvault.<kind>_key, or with
-- `previous` loginvault.<kind>_key_previous); raises, naming the variable, when it is missing
-- or shorter than 32 bytes.
CREATE OR REPLACE FUNCTION pii.session_key_fingerprint(key_kind text, previous boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    setting text := key_kind || CASE WHEN previous THEN '_key_previous' ELSE '_key' END;
    key text := current_setting('loginvault.' || setting, true);
BEGIN
    IF key_kind IS NULL OR key_kind NOT IN ('hmac', 'encryption') THEN
        RAISE EXCEPTION 'no such key kind: %', key_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(octet_length(key), 0) < 32 THEN
        RAISE EXCEPTION 'PII key LOGINVAULT_% is missing or shorter than 32 bytes in this session', upper(setting)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN loginvault.key_fingerprint(key_kind, key);
END
$fn$;

-- The active version of `key_kind`, once the session's key of that kind is that version's; else
-- one sentence naming what is refused and the active version (never a key or a fingerprint).
-- For the functions that write with a session key (pii.rehash_erased_subjects, …).
CREATE OR REPLACE FUNCTION pii.assert_active_key(key_kind text, doing text) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    active record;
BEGIN
    SELECT k.version, k.fingerprint INTO active FROM pii.key_versions AS k WHERE k.kind = key_kind AND k.state = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION '% refused: no % key is registered yet', doing, key_kind
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF pii.session_key_fingerprint(key_kind, false) <> active.fingerprint THEN
        RAISE EXCEPTION '% refused: the session''s % key is not the active one (version %) of pii.key_versions',
            doing, key_kind, active.version
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN active.version;
END
$fn$;

-- The first build: the session's key of `key_kind` as its version 1, active, when the kind has
-- no version at all (else nothing: its history stands). `separated`: the token rule of an HMAC
-- key, false only over tokens of an earlier version, which the caller alone can see (the vault
-- is the transformer's); the key's first rotation migrates them. Returns the version registered,
-- or NULL.
CREATE OR REPLACE FUNCTION pii.register_first_key(key_kind text, separated boolean) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    fp text := pii.session_key_fingerprint(key_kind, false);
BEGIN
    LOCK TABLE pii.key_versions IN SHARE ROW EXCLUSIVE MODE;  -- one registry writer at a time
    IF EXISTS (SELECT FROM pii.key_versions AS k WHERE k.kind = key_kind) THEN
        RETURN NULL;
    END IF;
    INSERT INTO pii.key_versions (kind, version, fingerprint, state, kind_separated, activated_at)
    VALUES (key_kind, 1, fp, 'active', key_kind <> 'hmac' OR coalesce(separated, true), now());
    RETURN 1;
END
$fn$;

-- A rotation's next version of `key_kind`, for the session's LOGINVAULT_<KIND>_KEY, once
-- LOGINVAULT_<KIND>_KEY_PREVIOUS is the active key (who rotates holds it) and the new key is
-- one the registry has never seen (the sentence names its version and state), or is pending (a
-- resumed rotation: its version): a key is registered once, so an old one never becomes
-- active again.
CREATE OR REPLACE FUNCTION pii.next_key_version(key_kind text) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    old_fp text := pii.session_key_fingerprint(key_kind, true);
    new_fp text := pii.session_key_fingerprint(key_kind, false);
    seen record;
BEGIN
    IF NOT EXISTS (SELECT FROM pii.key_versions AS k WHERE k.kind = key_kind AND k.state = 'active' AND k.fingerprint = old_fp) THEN
        RAISE EXCEPTION 'an % rotation starts from the active key: LOGINVAULT_%_KEY_PREVIOUS is not it', key_kind, upper(key_kind)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k.version, k.state INTO seen FROM pii.key_versions AS k WHERE k.kind = key_kind AND k.fingerprint = new_fp;
    IF FOUND AND seen.state = 'pending' THEN
        RETURN seen.version;
    ELSIF FOUND THEN
        RAISE EXCEPTION 'LOGINVAULT_%_KEY is % key version % (%): a key is registered once and never becomes active again',
            upper(key_kind), key_kind, seen.version, seen.state
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (SELECT max(k.version) + 1 FROM pii.key_versions AS k WHERE k.kind = key_kind);
END
$fn$;

-- An HMAC rotation's first step: the session's LOGINVAULT_HMAC_KEY as the next version,
-- pending, once LOGINVAULT_HMAC_KEY_PREVIOUS is the active key and no version is in its grace
-- period (pii.next_key_version). Resumed (the same key pending): its version again. Returns the
-- pending version.
CREATE OR REPLACE FUNCTION pii.begin_hmac_rotation() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    new_fp text := pii.session_key_fingerprint('hmac', false);
    other record;
    resumed boolean;
    version_next integer;
BEGIN
    LOCK TABLE pii.key_versions IN SHARE ROW EXCLUSIVE MODE;
    SELECT k.version, k.fingerprint INTO other FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'pending';
    resumed := FOUND;
    IF resumed AND other.fingerprint <> new_fp THEN
        RAISE EXCEPTION 'an HMAC rotation to version % is under way with another key', other.version
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT k.version INTO other FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'previous';
    IF FOUND THEN
        RAISE EXCEPTION 'hmac key version % is still in its grace period: `loginvault keys retire hmac` first', other.version
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    version_next := pii.next_key_version('hmac');
    IF NOT resumed THEN
        INSERT INTO pii.key_versions (kind, version, fingerprint, state, kind_separated)
        VALUES ('hmac', version_next, new_fp, 'pending', true);
    END IF;
    RETURN version_next;
END
$fn$;

-- An HMAC rotation's last step, in the transaction that swaps in the re-tokenized vault and
-- mart (that they are complete is the rotation's check: ingest/vault/rotation.py): the pending
-- version, whose key the session holds, becomes active and the active one previous; the erased
-- subjects are hashed again under it in the same transaction, so that no rotation can leave
-- them under the old key. Returns the version activated.
CREATE OR REPLACE FUNCTION pii.activate_hmac_key() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    fp text := pii.session_key_fingerprint('hmac', false);
    pending record;
BEGIN
    LOCK TABLE pii.key_versions IN SHARE ROW EXCLUSIVE MODE;
    SELECT k.version, k.fingerprint INTO pending FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'pending';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no HMAC rotation is under way: nothing to activate' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF pending.fingerprint <> fp THEN
        RAISE EXCEPTION 'LOGINVAULT_HMAC_KEY is not the key of the HMAC rotation to version %', pending.version
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE pii.key_versions AS k SET state = 'previous' WHERE k.kind = 'hmac' AND k.state = 'active';
    UPDATE pii.key_versions AS k SET state = 'active', activated_at = now() WHERE k.kind = 'hmac' AND k.version = pending.version;
    PERFORM pii.rehash_erased_subjects();
    RETURN pending.version;
END
$fn$;

-- An encryption rotation's switch: the session's LOGINVAULT_ENCRYPTION_KEY becomes the next
-- version, active, and LOGINVAULT_ENCRYPTION_KEY_PREVIOUS, which must be the active key, the
-- previous one (both work meanwhile: rows record their version); refused while an older
-- version is still previous. The erased subjects are re-wrapped under it in the same
-- transaction (the vault's rows, the transformer's, by the rotation in batches). Returns the
-- version activated.
CREATE OR REPLACE FUNCTION pii.rotate_encryption_key() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    version_next integer;
BEGIN
    LOCK TABLE pii.key_versions IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT FROM pii.key_versions AS k WHERE k.kind = 'encryption' AND k.state IN ('previous', 'pending')) THEN
        RAISE EXCEPTION 'an earlier encryption key is still needed: finish and retire it first'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    version_next := pii.next_key_version('encryption');
    UPDATE pii.key_versions AS k SET state = 'previous' WHERE k.kind = 'encryption' AND k.state = 'active';
    INSERT INTO pii.key_versions (kind, version, fingerprint, state, activated_at)
    VALUES ('encryption', version_next, pii.session_key_fingerprint('encryption', false), 'active', now());
    PERFORM pii.rewrap_erased_subjects();
    RETURN version_next;
END
$fn$;

-- `loginvault keys retire KIND`: the previous version of `key_kind` becomes retired. Whether
-- the data still needs it (vault rows under the previous encryption key) is the command's check
-- on the transformer's vault (ingest/vault/keys.py). Returns the version retired.
CREATE OR REPLACE FUNCTION pii.retire_key(key_kind text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    retiring integer;
BEGIN
    LOCK TABLE pii.key_versions IN SHARE ROW EXCLUSIVE MODE;
    SELECT k.version INTO retiring FROM pii.key_versions AS k WHERE k.kind = key_kind AND k.state = 'previous';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no previous % key to retire', key_kind USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE pii.key_versions AS k SET state = 'retired', retired_at = now() WHERE k.kind = key_kind AND k.version = retiring;
    RETURN retiring;
END
$fn$;

ALTER FUNCTION pii.register_first_key(text, boolean) OWNER TO loginvault_key_admin;
ALTER FUNCTION pii.begin_hmac_rotation() OWNER TO loginvault_key_admin;
ALTER FUNCTION pii.activate_hmac_key() OWNER TO loginvault_key_admin;
ALTER FUNCTION pii.rotate_encryption_key() OWNER TO loginvault_key_admin;
ALTER FUNCTION pii.retire_key(text) OWNER TO loginvault_key_admin;
REVOKE ALL ON FUNCTION pii.session_key_fingerprint(text, boolean), pii.assert_active_key(text, text),
    pii.next_key_version(text), pii.register_first_key(text, boolean), pii.begin_hmac_rotation(),
    pii.activate_hmac_key(), pii.rotate_encryption_key(), pii.retire_key(text) FROM PUBLIC;
-- The key administrator's functions run as it: it reads and writes the registry, computes
-- fingerprints, and (50_erasure.sql) re-hashes and re-wraps the erased subjects.
GRANT USAGE ON SCHEMA pii, loginvault TO loginvault_key_admin;
GRANT EXECUTE ON FUNCTION loginvault.key_fingerprint(text, text), pii.session_key_fingerprint(text, boolean),
    pii.next_key_version(text) TO loginvault_key_admin;
-- The eraser's re-hash and re-wrap check the session's key against the active version.
GRANT EXECUTE ON FUNCTION pii.session_key_fingerprint(text, boolean), pii.assert_active_key(text, text)
    TO loginvault_eraser;
-- The transformer calls them: the first build registers the keys (pii.check_keys(true), as
-- dbt's login), `keys rotate` and `keys retire` run as dbt's login too.
GRANT EXECUTE ON FUNCTION pii.register_first_key(text, boolean), pii.begin_hmac_rotation(), pii.activate_hmac_key(),
    pii.rotate_encryption_key(), pii.retire_key(text) TO loginvault_transformer;
