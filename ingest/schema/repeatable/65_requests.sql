-- Recovery and erasure as requests to the recovery service.
--
-- A privacy officer's session holds no key and runs no lookup. It files a request
-- (pii.request_value, pii.request_token, pii.request_erasure): who, when, from where and why
-- are taken from the session, the reason is checked, and the request is committed with the
-- officer's own transaction — or not at all. The recovery service (`loginvault recovery
-- serve`, its own login, a member of loginvault_recovery_service, the keys in its session)
-- takes one request at a time with FOR UPDATE SKIP LOCKED (replicas never take the same one),
-- counts the asker's daily budget under a lock, does the lookup or the erasure, and writes the
-- audit row and the answer in its own transaction: an answer exists only once its audit row
-- has committed with it. The officer then reads the answer once (pii.take_answer); it expires.
-- Rolling back, raising, snapshots, retries or many sessions in the officer's session change
-- none of that: the only thing the officer's transaction can do is file or not file.
--
-- Every function is SECURITY DEFINER, owned by the NOLOGIN loginvault_recovery, search_path
-- pinned to pg_catalog, every name qualified; EXECUTE is granted per function to exactly the
-- role that calls it.

-- Why a reason cannot be audited, or NULL when it can: required, at most 500 characters, no
-- control characters (C0, C1, line and paragraph separators, bidirectional controls: each
-- could forge or hide a line of `loginvault audit`), not blank once Unicode white space,
-- format characters and other invisible fillers are removed, and holding at least one letter
-- or digit of a common script (a reason of combining marks, unassigned or private code points
-- alone would print as nothing). ingest/vault/reasons.py is the same rule in Python
-- (tests/integration/test_recovery_service.py holds them equal, code point by code point).
CREATE OR REPLACE FUNCTION loginvault.reason_problem(reason text) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE
        WHEN reason IS NULL THEN 'a reason is required'
        WHEN char_length(reason) > 500 THEN format('a reason is at most 500 characters (this one has %s)', char_length(reason))
        WHEN reason ~ '[\u0001-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]'
            THEN 'a reason may not contain control characters (tabs, line breaks, bidirectional controls)'
        WHEN regexp_replace(reason,
                '[\u0009-\u000d\u0020\u0085\u00a0\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2'
                '\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f'
                '\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f'
                '\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\U000e0100-\U000e01ef]',
                '', 'g') = ''
            THEN 'a reason must say why: this one is blank'
        WHEN reason !~ ('[0-9A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0386-\u03ce\u0400-\u04ff'
                        '\u05d0-\u05ea\u0620-\u064a\u0660-\u0669\u0904-\u0939\u3041-\u30fa\u4e00-\u9fff\uac00-\ud7a3]')
            THEN 'a reason must say why: it holds no letter or digit'
    END
$fn$;

-- Files a request as the session's login (internal: the three functions below call it).
-- A request that cannot be served (a bad reason, token, kind or value, or 20 of the login's
-- requests waiting already) is recorded as refused, with the refusal as its outcome and without
-- the offending text, and nothing is asked of the service. Returns the request's id, its state
-- and, when refused, why.
CREATE OR REPLACE FUNCTION pii.file_request(
    request_kind text, token text, value_kind text, value text, dry_run boolean, reason text
) RETURNS TABLE (request_id bigint, request_state text, refusal text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    problem text := loginvault.reason_problem(reason);
BEGIN
    refusal := CASE
        WHEN problem IS NOT NULL THEN problem
        WHEN request_kind = 'recover_value' AND (token IS NULL OR token !~ '^[0-9a-f]{64}$')
            THEN 'a token is 64 lowercase hex characters'
        WHEN request_kind = 'recover_token' AND (value_kind IS NULL OR value_kind NOT IN ('ip', 'device_id'))
            THEN 'kind must be ip or device_id'
        WHEN request_kind IN ('recover_token', 'erase') AND (value IS NULL OR value = '' OR char_length(value) > 1024)
            THEN 'the value must be 1 to 1024 characters'
        -- One login cannot fill the service's queue for everyone else.
        WHEN (SELECT count(*) FROM pii.recovery_requests AS q
              WHERE q.login_user = session_user AND q.state IN ('pending', 'awaiting_approval', 'approved')) >= 20
            THEN 'this login has 20 requests waiting already: wait for their answers (`loginvault recover pending`)'
    END;
    -- clock_timestamp(), not now(): the time of the request, not of the start of the asker's transaction.
    INSERT INTO pii.recovery_requests (
        requested_at, login_user, client_addr, application_name, kind, token, value_kind, dry_run, reason, state,
        outcome, finished_at
    ) VALUES (
        clock_timestamp(), session_user, inet_client_addr(), current_setting('application_name'), request_kind,
        CASE WHEN refusal IS NULL THEN token END,
        CASE WHEN value_kind IN ('ip', 'device_id') THEN value_kind END,
        coalesce(dry_run, false),
        CASE WHEN problem IS NULL THEN reason ELSE '(refused: ' || problem || ')' END,
        CASE WHEN refusal IS NULL THEN 'pending' ELSE 'refused' END,
        CASE WHEN problem IS NOT NULL THEN 'invalid_reason' WHEN refusal IS NOT NULL THEN 'invalid_request' END,
        CASE WHEN refusal IS NOT NULL THEN clock_timestamp() END
    ) RETURNING pii.recovery_requests.id INTO request_id;
    IF refusal IS NULL THEN
        IF request_kind <> 'recover_value' THEN
            INSERT INTO pii.recovery_inputs (request_id, value) VALUES (file_request.request_id, value);
        END IF;
        PERFORM pg_catalog.pg_notify('loginvault_recovery_requests', '');
    END IF;
    request_state := CASE WHEN refusal IS NULL THEN 'pending' ELSE 'refused' END;
    RETURN NEXT;
END
$fn$;

-- The officer's three requests: token → value, (kind, value) → token, erase a subject.
CREATE OR REPLACE FUNCTION pii.request_value(token text, reason text)
RETURNS TABLE (request_id bigint, request_state text, refusal text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT * FROM pii.file_request('recover_value', token, NULL, NULL, false, reason)
$fn$;

CREATE OR REPLACE FUNCTION pii.request_token(kind text, value text, reason text)
RETURNS TABLE (request_id bigint, request_state text, refusal text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT * FROM pii.file_request('recover_token', NULL, kind, value, false, reason)
$fn$;

CREATE OR REPLACE FUNCTION pii.request_erasure(user_id text, reason text, dry_run boolean)
RETURNS TABLE (request_id bigint, request_state text, refusal text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT * FROM pii.file_request('erase', NULL, NULL, user_id, dry_run, reason)
$fn$;

-- The state of one of the session's own requests (no row for another login's).
DROP FUNCTION IF EXISTS pii.request_status(bigint);
CREATE FUNCTION pii.request_status(request_id bigint)
RETURNS TABLE (request_state text, outcome text, answered boolean, request_kind text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT q.state, q.outcome,
           EXISTS (SELECT FROM pii.recovery_answers AS a WHERE a.request_id = q.id AND a.expires_at >= pg_catalog.clock_timestamp()),
           q.kind
    FROM pii.recovery_requests AS q
    WHERE q.id = request_status.request_id AND q.login_user = session_user
$fn$;

-- The answer to one of the session's own requests, once: it is deleted as it is read (a read
-- that is rolled back leaves it until it expires; every answer stands for one audited lookup).
-- NULL when there is none (not answered yet, another login's, read already, or expired).
CREATE OR REPLACE FUNCTION pii.take_answer(request_id bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    taken jsonb;
BEGIN
    DELETE FROM pii.recovery_answers AS a
    USING pii.recovery_requests AS q
    WHERE a.request_id = take_answer.request_id AND q.id = a.request_id AND q.login_user = session_user
      AND a.expires_at >= pg_catalog.clock_timestamp()
    RETURNING a.answer INTO taken;
    RETURN taken;
END
$fn$;

-- Withdraws one of the session's own requests that the service has not taken: its state
-- after (cancelled, or what the service made of it meanwhile).
CREATE OR REPLACE FUNCTION pii.cancel_request(request_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    after text;
BEGIN
    -- Waits for a service that holds the row (serving it) and then sees what it made of it.
    UPDATE pii.recovery_requests AS q SET state = 'cancelled', finished_at = clock_timestamp()
    WHERE q.id = cancel_request.request_id AND q.login_user = session_user
      AND q.state IN ('pending', 'awaiting_approval', 'approved');
    DELETE FROM pii.recovery_inputs AS i
    WHERE i.request_id = cancel_request.request_id
      AND EXISTS (SELECT FROM pii.recovery_requests AS q WHERE q.id = i.request_id AND q.state = 'cancelled');
    SELECT q.state INTO after FROM pii.recovery_requests AS q
    WHERE q.id = cancel_request.request_id AND q.login_user = session_user;
    RETURN after;
END
$fn$;

-- Four eyes: another officer approves or rejects a request the service set aside for approval
-- (only the service does that, with LOGINVAULT_RECOVERY_APPROVALS=1: without four eyes there is
-- nothing to decide on). Audited, with a reason. Returns the new state, or why not: not_found,
-- own_request, not_waiting, or a reason problem.
CREATE OR REPLACE FUNCTION pii.decide_request(request_id bigint, approve boolean, reason text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    problem text := loginvault.reason_problem(reason);
    asker text;
    waiting text;
    decision text := CASE WHEN approve THEN 'approved' ELSE 'rejected' END;
BEGIN
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;
    SELECT q.login_user, q.state INTO asker, waiting FROM pii.recovery_requests AS q
    WHERE q.id = decide_request.request_id AND q.state = 'awaiting_approval' FOR UPDATE;
    IF NOT FOUND THEN
        SELECT q.login_user, q.state INTO asker, waiting FROM pii.recovery_requests AS q WHERE q.id = decide_request.request_id;
    END IF;
    IF NOT FOUND THEN
        RETURN 'not_found';
    ELSIF asker = session_user THEN
        RETURN 'own_request';
    ELSIF waiting <> 'awaiting_approval' THEN
        RETURN 'not_waiting';
    END IF;
    INSERT INTO pii.recovery_approvals (decided_at, request_id, login_user, client_addr, application_name, decision, reason)
    VALUES (clock_timestamp(), decide_request.request_id, session_user, inet_client_addr(),
            current_setting('application_name'), decision, reason);
    UPDATE pii.recovery_requests AS q SET state = decision, finished_at = CASE WHEN approve THEN NULL ELSE clock_timestamp() END
    WHERE q.id = decide_request.request_id;
    IF NOT approve THEN
        DELETE FROM pii.recovery_inputs AS i WHERE i.request_id = decide_request.request_id;
    END IF;
    PERFORM pg_catalog.pg_notify('loginvault_recovery_requests', '');
    RETURN decision;
END
$fn$;

-- What waits, for officers deciding on others' requests (no cleartext: the value of a
-- value → token request and the user id of an erasure stay in pii.recovery_inputs).
CREATE OR REPLACE FUNCTION pii.waiting_requests()
RETURNS TABLE (request_id bigint, requested_at timestamptz, login_user text, kind text, value_kind text,
               token text, dry_run boolean, request_state text, reason text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT q.id, q.requested_at, q.login_user, q.kind, q.value_kind, q.token, q.dry_run, q.state, q.reason
    FROM pii.recovery_requests AS q
    WHERE q.state IN ('pending', 'awaiting_approval', 'approved')
    ORDER BY q.id
$fn$;

-- The recovery service's step: takes the oldest waiting request that no other replica holds
-- (and that is not in `skip`), serves it, and leaves the audit row and the answer to the
-- caller's commit. No row when nothing waits. Outcomes: awaiting_approval (with `approvals` >
-- 0, a request no other officer approved yet: marked, not served), busy (an erasure while a
-- transform, rotation or retention run holds the transform lock: left for later), and the
-- outcome of the lookup or erasure. The service's transactions are READ COMMITTED, so that the
-- count of the budget, taken under the login's lock, sees every committed lookup.
CREATE OR REPLACE FUNCTION pii.serve_next_request(skip bigint[], answer_ttl_seconds integer, approvals integer)
RETURNS TABLE (request_id bigint, request_kind text, outcome text, waited_seconds double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    req pii.recovery_requests;
    input text;
    answer jsonb;
    verdict text;
    budget record;
    direction text;
    computed text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the recovery service serves in READ COMMITTED transactions only' USING ERRCODE = 'invalid_transaction_state';
    END IF;
    SELECT * INTO req FROM pii.recovery_requests AS q
    WHERE q.state IN ('pending', 'approved') AND q.id <> ALL (coalesce(skip, '{}'))
    ORDER BY q.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    request_id := req.id;
    request_kind := req.kind;
    waited_seconds := extract(epoch FROM clock_timestamp() - req.requested_at);
    IF approvals > 0 AND req.state = 'pending' THEN
        UPDATE pii.recovery_requests AS q SET state = 'awaiting_approval' WHERE q.id = req.id;
        outcome := 'awaiting_approval';
        RETURN NEXT;
        RETURN;
    END IF;
    input := (SELECT i.value FROM pii.recovery_inputs AS i WHERE i.request_id = req.id);
    IF req.kind = 'erase' THEN
        -- The transform lock (ingest/vault/keys.py, TRANSFORM_LOCK): no build re-stages the subject's
        -- rows while they go, and no rotation re-keys under the erasure.
        IF NOT pg_try_advisory_xact_lock(1280726098) THEN
            outcome := 'busy';
            RETURN NEXT;
            RETURN;
        END IF;
        BEGIN
            SELECT jsonb_build_object(
                       'outcome', CASE WHEN req.dry_run THEN 'dry_run' ELSE 'erased' END,
                       'raw_rows', e.raw_rows, 'staged_rows', e.staged_rows, 'logins', e.logins,
                       'rejections', e.rejections, 'vault_values', e.vault_values)
            INTO answer
            FROM pii.erase_subject(input, req.reason, req.dry_run, req.id) AS e;
            verdict := answer ->> 'outcome';
        EXCEPTION WHEN others THEN
            verdict := 'failed';
            answer := jsonb_build_object('outcome', 'failed', 'error', split_part(SQLERRM, E'\n', 1));
        END;
    ELSE
        direction := CASE req.kind WHEN 'recover_value' THEN 'token_to_value' ELSE 'value_to_token' END;
        BEGIN
            verdict := pii.recovery_prepare();
        EXCEPTION WHEN others THEN
            verdict := 'refused';
            answer := jsonb_build_object('outcome', 'refused', 'error', split_part(SQLERRM, E'\n', 1));
        END;
        IF verdict IS NULL THEN
            INSERT INTO pii.recovery_budget_locks (login) VALUES (req.login_user) ON CONFLICT DO NOTHING;
            PERFORM FROM pii.recovery_budget_locks AS b WHERE b.login = req.login_user FOR UPDATE;
            SELECT * INTO budget FROM pii.recovery_admit(req.login_user);
            IF NOT budget.admitted THEN
                verdict := 'over_budget';
                answer := jsonb_build_object('outcome', verdict, 'limit', budget.daily_limit, 'used', budget.used,
                                             'resets_at', budget.resets_at);
            END IF;
        END IF;
        IF verdict IS NULL AND req.kind = 'recover_value' THEN
            SELECT min(l.outcome), min(l.kind),
                   coalesce(jsonb_agg(jsonb_build_object('kind', l.kind, 'value', l.value, 'current_token', l.current_token))
                            FILTER (WHERE l.value IS NOT NULL), '[]')
            INTO verdict, computed, answer
            FROM pii.lookup_value(req.token) AS l;
            answer := jsonb_build_object('outcome', verdict, 'kind', computed, 'values', answer);
            computed := req.token;
        ELSIF verdict IS NULL THEN
            SELECT l.outcome, l.token, jsonb_build_object('outcome', l.outcome, 'token', l.token, 'logins', l.logins)
            INTO verdict, computed, answer
            FROM pii.lookup_token(req.value_kind, input) AS l;
            UPDATE pii.recovery_requests AS q SET token = computed WHERE q.id = req.id;
        ELSE
            computed := req.token;
            answer := coalesce(answer, jsonb_build_object('outcome', verdict));
        END IF;
        PERFORM pii.recovery_write_audit(req, direction, coalesce(req.value_kind, answer ->> 'kind'), computed, verdict);
    END IF;
    DELETE FROM pii.recovery_inputs AS i WHERE i.request_id = req.id;
    INSERT INTO pii.recovery_answers (request_id, answer, expires_at)
    VALUES (req.id, answer, clock_timestamp() + make_interval(secs => answer_ttl_seconds));
    UPDATE pii.recovery_requests AS q
    SET state = CASE WHEN verdict IN ('over_budget', 'wrong_key', 'refused') THEN 'refused'
                     WHEN verdict IN ('failed', 'decrypt_failed', 'tampered') THEN 'failed'
                     ELSE 'answered' END,
        outcome = verdict, finished_at = clock_timestamp()
    WHERE q.id = req.id;
    PERFORM pg_catalog.pg_notify('loginvault_recovery_answers', req.id::text);
    outcome := verdict;
    RETURN NEXT;
END
$fn$;

-- The service's upkeep: answers past their time go (unread), requests waiting longer than
-- `max_wait_seconds` expire (their cleartext input with them). Rows another replica holds are
-- left for the next round. Returns how many requests expired.
CREATE OR REPLACE FUNCTION pii.expire_requests(max_wait_seconds integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    n bigint;
BEGIN
    -- An answer its asker holds (reading it in an open transaction) is left for the next round.
    DELETE FROM pii.recovery_answers AS a WHERE a.request_id IN (
        SELECT x.request_id FROM pii.recovery_answers AS x WHERE x.expires_at < clock_timestamp() FOR UPDATE SKIP LOCKED
    );
    UPDATE pii.recovery_requests AS q SET state = 'expired', finished_at = clock_timestamp()
    WHERE q.id IN (
        SELECT w.id FROM pii.recovery_requests AS w
        WHERE w.state IN ('pending', 'awaiting_approval', 'approved')
          AND w.requested_at < clock_timestamp() - make_interval(secs => max_wait_seconds)
        FOR UPDATE SKIP LOCKED
    );
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM pii.recovery_inputs AS i
    WHERE NOT EXISTS (SELECT FROM pii.recovery_requests AS q
                      WHERE q.id = i.request_id AND q.state IN ('pending', 'awaiting_approval', 'approved'));
    RETURN n;
END
$fn$;

-- For the service's metrics: requests the service has yet to take (not those waiting for an
-- approval), the oldest one's age, and the requests their askers cancelled unanswered in the
-- last 10 minutes (an officer's command cancels at its timeout: a service too slow, or down,
-- shows there even when no request waits for long).
DROP FUNCTION IF EXISTS pii.recovery_queue();
CREATE FUNCTION pii.recovery_queue()
RETURNS TABLE (waiting bigint, oldest_seconds double precision, timed_out bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT count(*) FILTER (WHERE q.state IN ('pending', 'approved')),
           coalesce(extract(epoch FROM clock_timestamp() - min(q.requested_at) FILTER (WHERE q.state IN ('pending', 'approved'))), 0)::double precision,
           count(*) FILTER (WHERE q.state = 'cancelled' AND q.finished_at > clock_timestamp() - interval '10 minutes')
    FROM pii.recovery_requests AS q
    WHERE q.state IN ('pending', 'approved') OR (q.state = 'cancelled' AND q.finished_at > clock_timestamp() - interval '10 minutes')
$fn$;

-- Everything an auditor reads, one row per event, oldest first by `at`: each lookup and each
-- erasure (with the request it answered), each approval or rejection, and each request that
-- never reached a lookup or an erasure (refused when filed, cancelled, expired, still waiting).
-- Its UNION branches are laid out alike, the columns named once, in the first (sqlfluff's
-- layout and aliasing rules would break that up).
-- noqa: disable=LT05,LT09,LT14,AL03
CREATE OR REPLACE VIEW pii.audit_events AS
SELECT a.recovered_at AS at, 'lookup'::text AS event, a.request_id, a.login_user, a.client_addr,
       a.direction AS kind, a.kind AS value_kind, a.token AS subject,
       coalesce(a.outcome, CASE WHEN a.found THEN 'found' ELSE 'not_found' END) AS outcome, a.reason
FROM pii.recovery_audit AS a
UNION ALL
SELECT e.erased_at, 'erasure', e.request_id, e.login_user, e.client_addr,
       CASE WHEN e.dry_run THEN 'erase_dry_run' ELSE 'erase' END, NULL, e.subject_token,
       format('raw=%s staged=%s logins=%s rejections=%s vault=%s', e.raw_rows, e.staged_rows, e.logins, e.rejections, e.vault_values),
       e.reason
FROM pii.erasure_audit AS e
UNION ALL
SELECT p.decided_at, 'approval', p.request_id, p.login_user, p.client_addr, q.kind, q.value_kind, q.token, p.decision, p.reason
FROM pii.recovery_approvals AS p INNER JOIN pii.recovery_requests AS q ON p.request_id = q.id
UNION ALL
SELECT q.requested_at, 'request', q.id, q.login_user, q.client_addr, q.kind, q.value_kind, q.token,
       coalesce(q.outcome, q.state), q.reason
FROM pii.recovery_requests AS q
WHERE NOT EXISTS (SELECT FROM pii.recovery_audit AS a WHERE a.request_id = q.id)
  AND NOT EXISTS (SELECT FROM pii.erasure_audit AS e WHERE e.request_id = q.id);
-- noqa: enable=all
ALTER VIEW pii.audit_events OWNER TO CURRENT_USER;
REVOKE ALL ON pii.audit_events FROM PUBLIC;
GRANT SELECT ON pii.audit_events TO loginvault_auditor;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'pii.recovery_admit(text)', 'pii.recovery_write_audit(pii.recovery_requests, text, text, text, text)',
        'pii.recovery_prepare()', 'pii.lookup_value(text)', 'pii.lookup_token(text, text)',
        'pii.file_request(text, text, text, text, boolean, text)', 'pii.request_value(text, text)',
        'pii.request_token(text, text, text)', 'pii.request_erasure(text, text, boolean)',
        'pii.request_status(bigint)', 'pii.take_answer(bigint)', 'pii.cancel_request(bigint)',
        'pii.decide_request(bigint, boolean, text)', 'pii.waiting_requests()',
        'pii.serve_next_request(bigint[], integer, integer)', 'pii.expire_requests(integer)', 'pii.recovery_queue()'
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO loginvault_recovery', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION loginvault.reason_problem(text) FROM PUBLIC;
-- The functions' owner checks reasons.
GRANT EXECUTE ON FUNCTION loginvault.reason_problem(text) TO loginvault_recovery;
-- A privacy officer files requests, follows and reads its own, and decides on others'.
GRANT EXECUTE ON FUNCTION pii.request_value(text, text), pii.request_token(text, text, text),
    pii.request_erasure(text, text, boolean), pii.request_status(bigint), pii.take_answer(bigint),
    pii.cancel_request(bigint), pii.decide_request(bigint, boolean, text), pii.waiting_requests()
    TO loginvault_pii_admin;
-- The recovery service serves, keeps the queue clean and reports its depth.
GRANT EXECUTE ON FUNCTION pii.serve_next_request(bigint[], integer, integer), pii.expire_requests(integer),
    pii.recovery_queue()
    TO loginvault_recovery_service;
