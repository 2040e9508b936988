-- loginvault bootstrap: recovery functions.
-- SECURITY DEFINER, owned by loginvault_recovery (NOLOGIN: it has SELECT on the vault and the
-- mart, INSERT on the audit, and nothing else), search_path pinned, row security off (a
-- planted policy makes the read fail instead of running), EXECUTE for the pii-admin role only.
-- Who, when and from where come from the session (session_user, now(), inet_client_addr()),
-- never from the caller. The audit row is written in the transaction of the lookup, before
-- the answer is returned: no audit row, no answer. The keys come from the caller's session
-- (loginvault.encryption_key, loginvault.hmac_key: startup options, never SQL text).

-- Admits one lookup of the session's login against its daily budget; false when over it.
CREATE OR REPLACE FUNCTION pii.recovery_admit() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    allowed integer;
    used bigint;
BEGIN
    -- One lookup at a time per login, so that parallel calls cannot overrun the budget.
    PERFORM pg_advisory_xact_lock(hashtext('loginvault.recovery_budget'), hashtext(session_user));
    SELECT coalesce(
        (SELECT daily_lookups FROM pii.recovery_budget WHERE login = session_user),
        (SELECT daily_lookups FROM pii.recovery_budget WHERE login = '*'),
        0
    ) INTO allowed;
    SELECT count(*) INTO used FROM pii.recovery_audit
    WHERE login_user = session_user
      AND recovered_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
      AND outcome IS DISTINCT FROM 'over_budget';
    RETURN used < allowed;
END
$fn$;

CREATE OR REPLACE FUNCTION pii.recovery_write_audit(
    direction text, kind text, token text, outcome text, reason text
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    INSERT INTO pii.recovery_audit (
        recovered_at, login_user, acting_role, client_addr, application_name,
        direction, kind, token, found, outcome, reason
    ) VALUES (
        now(), session_user,
        CASE current_setting('role') WHEN 'none' THEN session_user ELSE current_setting('role') END,
        inet_client_addr(), current_setting('application_name'),
        direction, kind, token, outcome LIKE 'found%', outcome, btrim(reason)
    )
$fn$;

-- Every lookup starts here: a reason, the session's keys the registered ones (else the refusal
-- is audited: 'wrong_key'), the vault, the mart and the token map untampered (checked, locked,
-- checked again: nothing can be attached until the transaction ends), and the budget (else
-- 'over_budget', audited). NULL when the lookup may go ahead, else the refusal's outcome.
DROP FUNCTION IF EXISTS pii.recovery_begin(text, text, text, text);
CREATE FUNCTION pii.recovery_begin(direction text, kind text, token text, reason text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    mart text := (SELECT value FROM pii.settings WHERE name = 'mart_schema');
    vault regclass := to_regclass('pii.vault');
    logins regclass := to_regclass(format('%I.user_logins', mart));
    refusal text;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a reason is required: it is written to the recovery audit' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF vault IS NULL OR logins IS NULL THEN
        RAISE EXCEPTION 'the vault or the mart does not exist yet: run the transform first' USING ERRCODE = 'undefined_table';
    END IF;
    FOR i IN 1..2 LOOP
        PERFORM loginvault.assert_untampered(vault, 'loginvault_transformer');
        PERFORM loginvault.assert_untampered(logins, 'loginvault_transformer');
        PERFORM loginvault.assert_untampered('pii.token_map', 'loginvault_transformer');
        IF i = 1 THEN
            EXECUTE format('LOCK TABLE %s, %s, pii.token_map IN ACCESS SHARE MODE', vault, logins);
        END IF;
    END LOOP;
    BEGIN
        PERFORM pii.check_keys(false);
    EXCEPTION WHEN invalid_parameter_value THEN
        refusal := 'wrong_key';
    END;
    IF refusal IS NULL AND NOT pii.recovery_admit() THEN
        refusal := 'over_budget';
    END IF;
    IF refusal IS NOT NULL THEN
        PERFORM pii.recovery_write_audit(direction, kind, token, refusal, reason);
    END IF;
    RETURN refusal;
END
$fn$;

-- token → (kind, cleartext, current token): one row per kind the token is known under. A token
-- that an HMAC rotation replaced still resolves until `keys retire hmac` (outcome
-- found_pre_rotation, with the token that replaced it). Outcomes: found, found_pre_rotation,
-- not_found, decrypt_failed (no key of the row's version in the session), wrong_key,
-- over_budget.
DROP FUNCTION IF EXISTS pii.recover_value(text, text);
CREATE FUNCTION pii.recover_value(token text, reason text)
RETURNS TABLE (kind text, value text, outcome text, current_token text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    entry record;
    refusal text := pii.recovery_begin('token_to_value', NULL, token, reason);
    kinds text[] := '{}';
    clears text[] := '{}';
    currents text[] := '{}';
    verdict text := 'not_found';
BEGIN
    IF refusal IS NOT NULL THEN
        RETURN QUERY SELECT NULL::text, NULL::text, refusal, NULL::text;
        RETURN;
    END IF;
    FOR entry IN
        SELECT v.kind::text AS kind, v.token::text AS token, v.ciphertext, v.encryption_key_version, false AS replaced
        FROM pii.vault AS v WHERE v.token = recover_value.token
        UNION ALL
        SELECT v.kind::text, v.token::text, v.ciphertext, v.encryption_key_version, true
        FROM pii.token_map AS m JOIN pii.vault AS v ON v.kind = m.kind AND v.token = m.new_token
        WHERE m.old_token = recover_value.token
        ORDER BY 1
    LOOP
        BEGIN
            clears := clears || public.pgp_sym_decrypt(entry.ciphertext, pii.encryption_key_of(entry.encryption_key_version));
            kinds := kinds || entry.kind;
            currents := currents || entry.token;
            verdict := CASE WHEN entry.replaced THEN 'found_pre_rotation' ELSE 'found' END;
        EXCEPTION WHEN others THEN
            -- No key of the row's version in the session: audited as failed, nothing returned.
            verdict := 'decrypt_failed';
            kinds := ARRAY[entry.kind];
            clears := '{}';
            EXIT;
        END;
    END LOOP;
    PERFORM pii.recovery_write_audit('token_to_value', kinds[1], token, verdict, reason);
    IF verdict LIKE 'found%' THEN
        RETURN QUERY SELECT k, v, verdict, c FROM unnest(kinds, clears, currents) AS u (k, v, c);
    ELSE
        RETURN QUERY SELECT kinds[1], NULL::text, verdict, NULL::text;
    END IF;
END
$fn$;

-- (kind, cleartext) → (token, logins carrying it in user_logins); outcome found (some login
-- carries it), not_found, invalid (not a valid value of kind), wrong_key or over_budget. The
-- token is computed here, with the session's (active) HMAC key: the client never tokenizes.
CREATE OR REPLACE FUNCTION pii.recover_token(kind text, value text, reason text)
RETURNS TABLE (token text, logins bigint, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    canonical text := loginvault.canonical_pii(kind, value);
    computed text;
    carried bigint := 0;
    mart text := (SELECT s.value FROM pii.settings AS s WHERE s.name = 'mart_schema');
    refusal text;
BEGIN
    IF kind IS NULL OR kind NOT IN ('ip', 'device_id') THEN
        RAISE EXCEPTION 'kind must be ip or device_id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    refusal := pii.recovery_begin('value_to_token', kind, NULL, reason);
    IF refusal IS NOT NULL THEN
        RETURN QUERY SELECT NULL::text, NULL::bigint, refusal;
        RETURN;
    END IF;
    IF canonical IS NULL THEN
        PERFORM pii.recovery_write_audit('value_to_token', kind, NULL, 'invalid', reason);
        RETURN QUERY SELECT NULL::text, 0::bigint, 'invalid'::text;
        RETURN;
    END IF;
    computed := loginvault.pii_token(
        kind, canonical, current_setting('loginvault.hmac_key'),
        (SELECT k.kind_separated FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'active')
    );
    EXECUTE format('SELECT count(*) FROM %I.user_logins WHERE %I = $1', mart,
                   CASE kind WHEN 'ip' THEN 'masked_ip' ELSE 'masked_device_id' END)
        INTO carried USING computed;
    PERFORM pii.recovery_write_audit('value_to_token', kind, computed,
                                     CASE WHEN carried > 0 THEN 'found' ELSE 'not_found' END, reason);
    RETURN QUERY SELECT computed, carried, CASE WHEN carried > 0 THEN 'found' ELSE 'not_found' END;
END
$fn$;

ALTER FUNCTION pii.recovery_admit() OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recovery_write_audit(text, text, text, text, text) OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recovery_begin(text, text, text, text) OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recover_value(text, text) OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recover_token(text, text, text) OWNER TO loginvault_recovery;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pii FROM PUBLIC;
-- The pii-admin role: the two lookups, nothing else (the helpers run as their owner).
GRANT EXECUTE ON FUNCTION pii.recover_value(text, text), pii.recover_token(text, text, text)
    TO loginvault_pii_admin;
