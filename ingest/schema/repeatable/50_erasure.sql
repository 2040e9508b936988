-- Subject erasure (GDPR Art. 17, CCPA deletion): its grants and functions (the tables are the
-- baseline's).
-- pii.erase_subject is a SECURITY DEFINER function owned by loginvault_eraser (NOLOGIN: DELETE
-- on what holds a subject's rows, and nothing else), search_path pinned. Only the recovery
-- service's function (pii.serve_next_request, 65_requests.sql) calls it, for an officer's
-- erasure request: who, when, from where and why come from the request row the officer's
-- session committed; the audit row is written in the transaction of the erasure, and what it
-- reads is checked first. The keys come from the service's session.

REVOKE ALL ON pii.erased_subjects FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON pii.erased_subjects TO loginvault_eraser;
GRANT SELECT (subject_token, hmac_key_version) ON pii.erased_subjects TO loginvault_transformer;
REVOKE ALL ON pii.erasure_audit FROM PUBLIC;
GRANT INSERT ON pii.erasure_audit TO loginvault_eraser;
GRANT SELECT ON pii.erasure_audit TO loginvault_auditor;

-- The eraser's privileges on what the bootstrap owns (dbt grants it those on its models).
GRANT SELECT, DELETE ON raw.login_events TO loginvault_eraser;
GRANT SELECT, DELETE ON pii.token_map TO loginvault_eraser;
GRANT SELECT ON pii.settings, pii.key_versions, pii.recovery_requests, pii.recovery_inputs TO loginvault_eraser;
GRANT USAGE ON SCHEMA raw, pii TO loginvault_eraser;
GRANT EXECUTE ON FUNCTION loginvault.try_jsonb(text),
    loginvault.pii_token(text, text, text, boolean), loginvault.key_fingerprint(text, text), pii.check_keys(boolean),
    pii.encryption_key_of(integer)
    TO loginvault_eraser;

-- Erases the subject `user_id`, per layer and by subject, never through a shared message id:
-- their mart rows (user_id), the raw deliveries and staged payloads whose parsed body names
-- them, the staged message ids and rejections of their staged or mart messages, and the vault
-- values no login of another subject carries (crypto-shred: shared IPs and devices of other
-- subjects stay); adds them to
-- pii.erased_subjects; audits, with the asker of request `request_id`. With `dry_run`, counts
-- and audits only. One transaction.
CREATE OR REPLACE FUNCTION pii.erase_subject(user_id text, reason text, dry_run boolean, request_id bigint)
RETURNS TABLE (raw_rows bigint, staged_rows bigint, logins bigint, rejections bigint, vault_values bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    mart text := (SELECT s.value FROM pii.settings AS s WHERE s.name = 'mart_schema');
    logins_rel regclass;
    rejected_rel regclass;
    messages_rel regclass;
    staged_rel regclass;
    vault_rel regclass;
    subject text;
    shredded bigint := 0;
    staged bigint := 0;
    n bigint;
    request pii.recovery_requests := (SELECT q FROM pii.recovery_requests AS q WHERE q.id = erase_subject.request_id);
BEGIN
    -- Only the erasure an officer asked for: an erasure request still waiting, of this subject
    -- (its input), as a dry run or not as asked.
    IF request IS NULL OR request.kind <> 'erase' OR request.state NOT IN ('pending', 'approved')
        OR request.dry_run IS DISTINCT FROM erase_subject.dry_run
        OR (SELECT i.value FROM pii.recovery_inputs AS i WHERE i.request_id = request.id) IS DISTINCT FROM user_id THEN
        RAISE EXCEPTION 'request % is not a waiting erasure request of this subject', request_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a reason is required: it is written to the erasure audit' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF user_id IS NULL OR user_id = '' THEN
        RAISE EXCEPTION 'a user id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pii.check_keys(false);
    -- What it reads and deletes from: locked (SHARE ROW EXCLUSIVE: no trigger, partition or
    -- write can be added until the end of the transaction) and checked against the declared
    -- shapes; a relation not built yet is NULL and skipped. Raw only in ACCESS SHARE: its owner
    -- is no login's, and a stronger lock would wait for every open insert of the loader (which
    -- could hold one open for ever); a delivery landing meanwhile is kept out of the marts by
    -- pii.erased_subjects, and removed from raw by retention.
    PERFORM loginvault.checked_relation('raw.login_events', 'ACCESS SHARE');
    messages_rel := loginvault.checked_relation('staging.stg_sqs__messages', 'SHARE ROW EXCLUSIVE');
    staged_rel := loginvault.checked_relation('staging.stg_sqs__login_events', 'SHARE ROW EXCLUSIVE');
    logins_rel := loginvault.checked_relation(format('%I.user_logins', mart), 'SHARE ROW EXCLUSIVE');
    rejected_rel := loginvault.checked_relation(format('%I.rejected_login_events', mart), 'SHARE ROW EXCLUSIVE');
    vault_rel := loginvault.checked_relation('pii.vault', 'SHARE ROW EXCLUSIVE');
    PERFORM loginvault.checked_relation('pii.token_map', 'SHARE ROW EXCLUSIVE');
    subject := loginvault.pii_token('user_id', user_id, current_setting('loginvault.hmac_key'),
        (SELECT k.kind_separated FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'active'));

    -- The subject's messages: their mart rows (user_id) and their staged payloads (parsed: a
    -- JSON escape names them too). Never a message id found only in raw: a loader can append a
    -- body naming them under another subject's message id (raw's own rows go by their body).
    DROP TABLE IF EXISTS pg_temp.subject_messages, pg_temp.subject_tokens, pg_temp.subject_deliveries, pg_temp.shred;
    CREATE TEMP TABLE subject_messages (message_id text PRIMARY KEY) ON COMMIT DROP;
    IF logins_rel IS NOT NULL THEN
        EXECUTE format('INSERT INTO subject_messages SELECT message_id FROM %s WHERE user_id = $1 ON CONFLICT DO NOTHING', logins_rel)
            USING user_id;
    END IF;
    IF staged_rel IS NOT NULL THEN
        INSERT INTO subject_messages SELECT s.message_id FROM staging.stg_sqs__login_events AS s
        WHERE s.payload ->> 'user_id' = user_id ON CONFLICT DO NOTHING;
    END IF;

    -- Their tokens (ip and device id) from their own mart rows, to shred the values no login of
    -- another subject carries.
    CREATE TEMP TABLE subject_tokens (token text, kind text) ON COMMIT DROP;
    IF logins_rel IS NOT NULL THEN
        EXECUTE format(
            'INSERT INTO subject_tokens SELECT DISTINCT masked_ip, ''ip'' FROM %1$s WHERE user_id = $1 AND masked_ip IS NOT NULL'
            ' UNION SELECT DISTINCT masked_device_id, ''device_id'' FROM %1$s WHERE user_id = $1 AND masked_device_id IS NOT NULL',
            logins_rel) USING user_id;
    END IF;

    -- raw: the deliveries whose parsed body names them. A body is parsed only when it contains
    -- the id as text or holds a JSON escape (which could spell the id: `\u0061lice`), or when
    -- the id has characters a body may escape otherwise.
    CREATE TEMP TABLE subject_deliveries ON COMMIT DROP AS SELECT r.tableoid AS part, r.ctid AS row_id FROM raw.login_events AS r
    WHERE (user_id !~ '^[A-Za-z0-9 ._@+:-]+$' OR strpos(r.body, user_id) > 0 OR strpos(r.body, '\u') > 0)
      AND loginvault.try_jsonb(r.body) ->> 'user_id' = user_id;
    SELECT count(*) INTO raw_rows FROM subject_deliveries;
    IF messages_rel IS NOT NULL THEN
        SELECT count(*) INTO n FROM staging.stg_sqs__messages AS m WHERE m.message_id IN (SELECT message_id FROM subject_messages);
        staged := staged + n;
    END IF;
    IF staged_rel IS NOT NULL THEN
        SELECT count(*) INTO n FROM staging.stg_sqs__login_events AS s WHERE s.payload ->> 'user_id' = user_id;
        staged := staged + n;
    END IF;
    staged_rows := staged;
    logins := 0;
    rejections := 0;
    IF logins_rel IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE user_id = $1', logins_rel) INTO logins USING user_id;
    END IF;
    IF rejected_rel IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE message_id IN (SELECT message_id FROM subject_messages)', rejected_rel) INTO rejections;
    END IF;
    -- Vault values only the subject's logins carry.
    IF vault_rel IS NOT NULL AND logins_rel IS NOT NULL THEN
        EXECUTE format(
            'CREATE TEMP TABLE shred ON COMMIT DROP AS SELECT v.token, v.kind FROM pii.vault AS v'
            ' JOIN subject_tokens AS t ON t.token = v.token AND t.kind = v.kind'
            ' WHERE NOT EXISTS (SELECT FROM %1$s AS u WHERE u.user_id <> $1'
            '   AND CASE v.kind WHEN ''ip'' THEN u.masked_ip ELSE u.masked_device_id END = v.token)', logins_rel)
            USING user_id;
        SELECT count(*) INTO shredded FROM shred;
    END IF;
    vault_values := shredded;

    IF NOT dry_run THEN
        IF shredded > 0 THEN
            DELETE FROM pii.vault AS v USING shred AS s WHERE v.token = s.token AND v.kind = s.kind;
            DELETE FROM pii.token_map AS m USING shred AS s WHERE m.new_token = s.token AND m.kind = s.kind;
        END IF;
        DELETE FROM raw.login_events AS r USING subject_deliveries AS d WHERE r.tableoid = d.part AND r.ctid = d.row_id;
        IF messages_rel IS NOT NULL THEN
            DELETE FROM staging.stg_sqs__messages AS m WHERE m.message_id IN (SELECT message_id FROM subject_messages);
        END IF;
        IF staged_rel IS NOT NULL THEN
            DELETE FROM staging.stg_sqs__login_events AS s WHERE s.payload ->> 'user_id' = user_id;
        END IF;
        IF logins_rel IS NOT NULL THEN
            EXECUTE format('DELETE FROM %s WHERE user_id = $1', logins_rel) USING user_id;
        END IF;
        IF rejected_rel IS NOT NULL THEN
            EXECUTE format('DELETE FROM %s WHERE message_id IN (SELECT message_id FROM subject_messages)', rejected_rel);
        END IF;
        INSERT INTO pii.erased_subjects (subject_token, hmac_key_version, ciphertext, encryption_key_version)
        VALUES (
            subject,
            (SELECT k.version FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'active'),
            public.pgp_sym_encrypt(user_id, current_setting('loginvault.encryption_key'), 'cipher-algo=aes256, s2k-mode=1'),
            (SELECT k.version FROM pii.key_versions AS k WHERE k.kind = 'encryption' AND k.state = 'active')
        )
        ON CONFLICT (subject_token) DO NOTHING;
    END IF;
    INSERT INTO pii.erasure_audit (
        erased_at, login_user, client_addr, application_name, subject_token, dry_run,
        raw_rows, staged_rows, logins, rejections, vault_values, reason, request_id
    ) VALUES (
        clock_timestamp(), request.login_user, request.client_addr, request.application_name, subject, dry_run,
        raw_rows, staged_rows, logins, rejections, vault_values, reason, request.id
    );
    RETURN NEXT;
END
$fn$;

-- After an HMAC rotation (new key active): every erased subject's hash under the new key,
-- from its decrypted user id (the key of its encryption version from the session). The
-- session's HMAC key must be the registry's active one, checked first: hashes under any other
-- key would let the subjects' next messages into the mart.
CREATE OR REPLACE FUNCTION pii.rehash_erased_subjects() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    active_hmac integer := pii.assert_active_key('hmac', 're-hashing the erased subjects');
    separated boolean := (SELECT k.kind_separated FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.version = active_hmac);
    n bigint;
BEGIN
    UPDATE pii.erased_subjects AS e
    SET subject_token = loginvault.pii_token(
            'user_id', public.pgp_sym_decrypt(e.ciphertext, pii.encryption_key_of(e.encryption_key_version)),
            current_setting('loginvault.hmac_key'), separated),
        hmac_key_version = active_hmac
    WHERE e.hmac_key_version <> active_hmac;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

-- During an encryption rotation: the erased subjects' ciphertexts under the new (active) key.
-- The session's encryption key must be the registry's active one, checked first (the key it
-- decrypts with is its version's: pii.encryption_key_of).
CREATE OR REPLACE FUNCTION pii.rewrap_erased_subjects() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    active_enc integer := pii.assert_active_key('encryption', 're-wrapping the erased subjects');
    n bigint;
BEGIN
    UPDATE pii.erased_subjects AS e
    SET ciphertext = public.pgp_sym_encrypt(
            public.pgp_sym_decrypt(e.ciphertext, pii.encryption_key_of(e.encryption_key_version)),
            current_setting('loginvault.encryption_key'), 'cipher-algo=aes256, s2k-mode=1'),
        encryption_key_version = active_enc
    WHERE e.encryption_key_version <> active_enc;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

ALTER FUNCTION pii.erase_subject(text, text, boolean, bigint) OWNER TO loginvault_eraser;
ALTER FUNCTION pii.rehash_erased_subjects() OWNER TO loginvault_eraser;
ALTER FUNCTION pii.rewrap_erased_subjects() OWNER TO loginvault_eraser;
REVOKE ALL ON FUNCTION pii.erase_subject(text, text, boolean, bigint), pii.rehash_erased_subjects(),
    pii.rewrap_erased_subjects() FROM PUBLIC;
-- The recovery functions' owner erases, inside the service's pii.serve_next_request (an
-- officer's request); the key administrator re-hashes and re-wraps the list in the step that
-- activates a key (pii.activate_hmac_key, pii.rotate_encryption_key), and the key rotations (as
-- dbt's login) finish what an earlier run left (both are no-ops when the list is up to date).
GRANT EXECUTE ON FUNCTION pii.erase_subject(text, text, boolean, bigint) TO loginvault_recovery;
GRANT EXECUTE ON FUNCTION pii.rehash_erased_subjects(), pii.rewrap_erased_subjects()
    TO loginvault_transformer, loginvault_key_admin;
