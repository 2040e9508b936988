-- The lookups behind recovery.
-- SECURITY DEFINER, owned by loginvault_recovery (NOLOGIN: it has SELECT on the vault and the
-- mart, INSERT on the audit, and nothing else), search_path pinned, row security off (a
-- planted policy makes the read fail instead of running). Nobody is granted EXECUTE on these:
-- they run only inside pii.serve_next_request (65_requests.sql), the recovery service's
-- function, which owns the budget and writes the audit row in the transaction of the lookup,
-- with the requesting officer's login, time, address and reason as the request recorded them.
-- The keys come from the service's session (loginvault.encryption_key, loginvault.hmac_key:
-- startup options, never SQL text): an officer's session holds none.

-- The budget of `login` today (UTC): (admitted, the daily limit, lookups used, when it resets).
-- The caller holds the login's budget lock (pii.serve_next_request locks the login's row of
-- pii.recovery_budget_locks in the service's transaction before calling this, and keeps it
-- until the audit row commits), so concurrent
-- requests of one login, through any number of service replicas, are counted one at a time.
CREATE OR REPLACE FUNCTION pii.recovery_admit(login text)
RETURNS TABLE (admitted boolean, daily_limit integer, used bigint, resets_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    daily_limit := coalesce(
        (SELECT b.daily_lookups FROM pii.recovery_budget AS b WHERE b.login = recovery_admit.login),
        (SELECT b.daily_lookups FROM pii.recovery_budget AS b WHERE b.login = '*'),
        0
    );
    resets_at := (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC';
    SELECT count(*) INTO used FROM pii.recovery_audit AS a
    WHERE a.login_user = recovery_admit.login
      AND a.recovered_at >= resets_at - interval '1 day'
      AND coalesce(a.outcome, 'found') NOT IN ('over_budget', 'wrong_key', 'refused');
    admitted := used < daily_limit;
    RETURN NEXT;
END
$fn$;

-- One lookup's audit row: who asked, from where, why (from the request), what came of it.
CREATE OR REPLACE FUNCTION pii.recovery_write_audit(
    request pii.recovery_requests, direction text, kind text, token text, outcome text
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    INSERT INTO pii.recovery_audit (
        recovered_at, login_user, acting_role, client_addr, application_name,
        direction, kind, token, found, outcome, reason, request_id
    ) VALUES (
        clock_timestamp(), request.login_user, request.login_user, request.client_addr, request.application_name,
        direction, kind, token, outcome LIKE 'found%', outcome, request.reason, request.id
    )
$fn$;

-- Before every lookup: the vault, the mart and the token map locked and checked against
-- their declared shapes (loginvault.checked_relation: a table not as declared raises, naming
-- it, and the service audits the request as refused); then the session's keys are the
-- registered ones (else 'wrong_key'). NULL when the lookup may go ahead.
CREATE OR REPLACE FUNCTION pii.recovery_prepare() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    mart text := (SELECT s.value FROM pii.settings AS s WHERE s.name = 'mart_schema');
    vault regclass := loginvault.checked_relation('pii.vault');
    logins regclass := loginvault.checked_relation(format('%I.user_logins', mart));
    map regclass := loginvault.checked_relation('pii.token_map');
BEGIN
    IF vault IS NULL OR logins IS NULL OR map IS NULL THEN
        RAISE EXCEPTION 'the vault or the mart does not exist yet: run the transform first' USING ERRCODE = 'undefined_table';
    END IF;
    BEGIN
        PERFORM pii.check_keys(false);
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN 'wrong_key';
    END;
    RETURN NULL;
END
$fn$;

-- token → (kind, cleartext, current token): one row per kind the token is known under. A token
-- that an HMAC rotation replaced still resolves until `keys retire hmac` (outcome
-- found_pre_rotation, with the token that replaced it). Outcomes: found, found_pre_rotation,
-- not_found, decrypt_failed (no key of the row's version in the session), tampered (the
-- decrypted value does not make the row's token: the vault was written outside the transform).
CREATE OR REPLACE FUNCTION pii.lookup_value(token text)
RETURNS TABLE (kind text, value text, outcome text, current_token text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    entry record;
    kinds text[] := '{}';
    clears text[] := '{}';
    currents text[] := '{}';
    verdict text := 'not_found';
    clear text;
    separated boolean := (SELECT k.kind_separated FROM pii.key_versions AS k WHERE k.kind = 'hmac' AND k.state = 'active');
BEGIN
    FOR entry IN
        SELECT v.kind::text AS kind, v.token::text AS token, v.ciphertext, v.encryption_key_version, false AS replaced
        FROM pii.vault AS v WHERE v.token = lookup_value.token
        UNION ALL
        SELECT v.kind::text, v.token::text, v.ciphertext, v.encryption_key_version, true
        FROM pii.token_map AS m JOIN pii.vault AS v ON v.kind = m.kind AND v.token = m.new_token
        WHERE m.old_token = lookup_value.token
        ORDER BY 1
    LOOP
        BEGIN
            clear := public.pgp_sym_decrypt(entry.ciphertext, pii.encryption_key_of(entry.encryption_key_version));
        EXCEPTION WHEN others THEN
            verdict := 'decrypt_failed';
            kinds := ARRAY[entry.kind];
            clears := '{}';
            EXIT;
        END;
        -- The value must be the one its token was made from (the session holds the active HMAC
        -- key, the vault's tokens are all of it): a ciphertext written over another's would
        -- otherwise answer with a value the token never stood for.
        IF loginvault.pii_token(entry.kind, clear, current_setting('loginvault.hmac_key'), separated) <> entry.token THEN
            verdict := 'tampered';
            kinds := ARRAY[entry.kind];
            clears := '{}';
            EXIT;
        END IF;
        clears := clears || clear;
        kinds := kinds || entry.kind;
        currents := currents || entry.token;
        verdict := CASE WHEN entry.replaced THEN 'found_pre_rotation' ELSE 'found' END;
    END LOOP;
    IF verdict LIKE 'found%' THEN
        RETURN QUERY SELECT k, v, verdict, c FROM unnest(kinds, clears, currents) AS u (k, v, c);
    ELSE
        RETURN QUERY SELECT kinds[1], NULL::text, verdict, NULL::text;
    END IF;
END
$fn$;

-- (kind, cleartext) → (token, logins carrying it in user_logins); outcome found (some login
-- carries it), not_found, or invalid (not a valid value of kind). The token is computed here,
-- with the session's (active) HMAC key: the asker never tokenizes.
CREATE OR REPLACE FUNCTION pii.lookup_token(kind text, value text)
RETURNS TABLE (token text, logins bigint, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    canonical text := loginvault.canonical_pii(kind, value);
    computed text;
    carried bigint := 0;
    mart text := (SELECT s.value FROM pii.settings AS s WHERE s.name = 'mart_schema');
BEGIN
    IF canonical IS NULL THEN
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
    RETURN QUERY SELECT computed, carried, CASE WHEN carried > 0 THEN 'found' ELSE 'not_found' END;
END
$fn$;
