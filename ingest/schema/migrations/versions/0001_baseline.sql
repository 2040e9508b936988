-- Migration 0001, the baseline: the schema of loginvault 0.1.0 (commit c5aed21, the last
-- un-versioned bootstrap) as it creates it on a new database, without the conversions of
-- earlier layouts that it carried. The one-off part only: extension, roles, schemas, tables,
-- partitioned parents, indexes, constraints, owners, table comments. Functions, views, grants,
-- the shape declaration, guards, triggers and the marts are repeatable definitions
-- (ingest/schema/repeatable/*.sql), applied after the migrations.
--
-- Run by the bootstrap as the admin, in its one transaction under its advisory lock
-- (ingest/schema/bootstrap.py). Never edited once applied: a change is a new migration.
-- Ownership rule: nothing that a role's session reads is owned by, or alterable by, a role
-- that should not run code in that session. Every role below is NOLOGIN; each workload logs in
-- with a login of its own that is a member of exactly one of them (docs/architecture.md).

CREATE EXTENSION IF NOT EXISTS pgcrypto;
-- The functions below name pgcrypto's functions in public (with a pinned search_path).
DO $$
DECLARE
    home text := (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto');
BEGIN
    IF home <> 'public' THEN
        RAISE EXCEPTION 'pgcrypto is installed in schema %, loginvault expects public: ALTER EXTENSION pgcrypto SET SCHEMA public', home;
    END IF;
END
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[
        -- workload roles: each login is a member of exactly one of these
        'loginvault_loader', 'loginvault_transformer', 'loginvault_analyst',
        'loginvault_pii_admin', 'loginvault_auditor', 'loginvault_recovery_service',
        -- owner roles: never granted to a login
        'loginvault_owner', 'loginvault_recovery', 'loginvault_eraser',
        -- the key administrator: the only writer of the key registry (45_keys.sql)
        'loginvault_key_admin'
    ] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        -- The admin must be a member to hand objects to the role (ALTER … OWNER TO needs it
        -- on RDS, where the master user is not a superuser). The membership runs one way: the
        -- admin may act as the role, the role never as the admin.
        IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r, current_user);
        END IF;
    END LOOP;
END
$$;

-- raw: owned by loginvault_owner (NOLOGIN, no members but the admin): the loader appends rows and
-- can neither alter a table (row-level security, policies, rules), nor create a trigger, view
-- or function that the transformer's session would run. dlt creates nothing at run time: every
-- table it writes is created here, so the loader needs no CREATE on the schema.
CREATE SCHEMA raw AUTHORIZATION loginvault_owner;

-- The raw contract between ingest and dbt: one row per delivery, body exactly as received.
-- Partitioned by the UTC day of received_at (raw.login_events_pYYYYMMDD, made ahead of time
-- by raw.ensure_partitions; a default partition takes a row of any other day, so that a load
-- never fails for lack of one): retention drops whole days.
CREATE TABLE raw.login_events (
    message_id    text        NOT NULL,
    body          text        NOT NULL,
    sent_at       timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    receive_count integer     NOT NULL,
    queue         text        NOT NULL,
    _dlt_load_id  varchar     NOT NULL,
    _dlt_id       varchar     NOT NULL
) PARTITION BY RANGE (received_at);
CREATE TABLE raw.login_events_default PARTITION OF raw.login_events DEFAULT;
CREATE INDEX login_events_message_id_idx ON raw.login_events (message_id);
CREATE INDEX login_events_dlt_load_id_idx ON raw.login_events (_dlt_load_id);
COMMENT ON TABLE raw.login_events IS
    'Every SQS delivery of a login event, verbatim (loginvault ingest). Contains cleartext PII.';
-- dlt's record of completed loads (dbt reads only rows of completed loads).
CREATE TABLE raw._dlt_loads (
    load_id             varchar     NOT NULL,
    schema_name         varchar,
    status              bigint      NOT NULL,
    inserted_at         timestamptz NOT NULL,
    schema_version_hash varchar
);
-- dlt's stored schema versions (dlt looks its schema up by hash and stores a new version).
CREATE TABLE raw._dlt_version (
    version        bigint      NOT NULL,
    engine_version bigint      NOT NULL,
    inserted_at    timestamptz NOT NULL,
    schema_name    varchar     NOT NULL,
    version_hash   varchar     NOT NULL,
    schema         varchar     NOT NULL
);

-- Databases bootstrapped before: the loader owned raw and its tables (dlt's included). Hand
-- What `retention apply` removed (read by the transform: a full refresh after it is refused).
CREATE TABLE raw.retention_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    login_user      text        NOT NULL DEFAULT session_user,
    cutoff          timestamptz NOT NULL,
    raw_partitions  integer     NOT NULL,
    raw_rows        bigint      NOT NULL
);
ALTER TABLE raw.retention_log OWNER TO loginvault_owner;
-- A record's lookups by load id (raw's load guards, repeatable/15_raw_loads.sql).
CREATE INDEX _dlt_loads_load_id_idx ON raw._dlt_loads (load_id);
ALTER TABLE raw.login_events OWNER TO loginvault_owner;
ALTER TABLE raw._dlt_loads OWNER TO loginvault_owner;
ALTER TABLE raw._dlt_version OWNER TO loginvault_owner;
ALTER TABLE raw.login_events_default OWNER TO loginvault_owner;

-- loginvault: the project's functions, the shape declaration and the schema's version table,
-- owned by the admin (the bootstrap creates it before the migrations: it holds alembic's table).

-- The shapes of the relations that SECURITY DEFINER functions read (the declaration itself is
-- repeatable/21_shapes.sql; the rows are rewritten whenever it changes).
CREATE TABLE loginvault.declared_relations (
    relation text   PRIMARY KEY,  -- schema-qualified, the mart schema resolved
    owner    name   NOT NULL,
    -- p: day-partitioned (partitions: tables of the same owner). "char", the one-byte type of
    -- pg_class.relkind, not char(1).
    kind     "char" NOT NULL CHECK (kind IN ('r', 'p')),  -- noqa: RF06
    -- Its only triggers (raw's load guards): each a statement-level AFTER INSERT trigger whose
    -- function has its name, in the relation's schema, a SECURITY DEFINER function of the
    -- relation's owner, without arguments.
    triggers name[] NOT NULL DEFAULT '{}',
    -- Whether it has a guard: an empty inheritance child in schema loginvault, owned by raw's
    -- owner (loginvault.guard_of()), which keeps its columns as declared.
    guarded  boolean NOT NULL DEFAULT FALSE
);
CREATE TABLE loginvault.declared_columns (
    relation    text    NOT NULL REFERENCES loginvault.declared_relations (relation) ON DELETE CASCADE,
    position    integer NOT NULL,
    column_name name    NOT NULL,
    column_type text    NOT NULL,  -- as format_type() prints it
    not_null    boolean NOT NULL,
    PRIMARY KEY (relation, position)
);

-- staging: owned by the transformer and read only by it (and by nobody's session but its own).
-- dbt builds its tables.
CREATE SCHEMA staging AUTHORIZATION loginvault_transformer;

-- pii: owned by the admin, so that the transformer (which fills pii.vault here) can neither drop
-- nor rewrite the recovery audit or the recovery functions. Nobody creates here: the officers'
-- functions live here, and an overload made here could catch their calls.
CREATE SCHEMA pii;

-- The vault, of its declared shape (repeatable/21_shapes.sql), owned by the transformer: dbt
-- fills it (the loginvault_declared materialization). Each (token, kind) once. The versions of
-- the keys that made each token and ciphertext.
CREATE TABLE pii.vault (
    token                  varchar(64) NOT NULL,
    kind                   varchar(16) NOT NULL,
    ciphertext             bytea       NOT NULL,
    first_seen_at          timestamptz,
    hmac_key_version       integer,
    encryption_key_version integer
);
ALTER TABLE pii.vault ADD CONSTRAINT vault_token_kind_key UNIQUE (token, kind),
    ADD CONSTRAINT vault_kind_check CHECK (kind IN ('ip', 'device_id'));
ALTER TABLE pii.vault OWNER TO loginvault_transformer;

-- Every recovery, written by the recovery functions in the transaction of the lookup. Never
-- holds a cleartext value. Append-only: only the functions' owner inserts, nobody updates or
-- deletes (but the admin).
CREATE TABLE pii.recovery_audit (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recovered_at     timestamptz NOT NULL DEFAULT now(),
    login_user       text        NOT NULL DEFAULT session_user,
    acting_role      text        NOT NULL DEFAULT current_user,
    client_addr      inet                 DEFAULT inet_client_addr(),
    direction        text        NOT NULL CHECK (direction IN ('token_to_value', 'value_to_token')),
    kind             text                 CHECK (kind IN ('ip', 'device_id')),
    token            text,  -- none when refused before the lookup
    found            boolean     NOT NULL,
    reason           text        NOT NULL CHECK (btrim(reason) <> ''),
    outcome          text,  -- found | not_found | decrypt_failed | over_budget
    application_name text,
    request_id       bigint  -- the request the lookup answered
);
CREATE INDEX recovery_audit_login_day_idx ON pii.recovery_audit (login_user, recovered_at);
COMMENT ON TABLE pii.recovery_audit IS
    'Who recovered which token, when, from where and why (loginvault recover): written only by the recovery functions.';

-- Lookups per login per UTC day; the row '*' is the default for logins without a row of
-- their own. Written by the admin only (a pii-admin cannot raise its own budget); the
-- bootstrap sets '*' (LOGINVAULT_RECOVERY_DAILY_BUDGET, 200 on a new database).
CREATE TABLE pii.recovery_budget (
    login         text PRIMARY KEY,
    daily_lookups integer NOT NULL CHECK (daily_lookups >= 0)
);

-- Where the marts are, for the recovery functions (value → token counts logins there); the
-- bootstrap writes it.
CREATE TABLE pii.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Recovery and erasure are requests (65_requests.sql): a privacy officer's session commits
-- one through a SECURITY DEFINER function that records who, when, from where and why from the
-- session; the recovery service (its own login, the keys in its session) takes it, does the
-- lookup or the erasure, and commits the audit row and the answer in one transaction. Nothing
-- the officer's session does to its own transaction can yield an answer without that audit.
-- All owned by the admin; only the functions' owner (loginvault_recovery) writes them.
CREATE TABLE pii.recovery_requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    login_user       text        NOT NULL,
    client_addr      inet,
    application_name text,
    kind             text        NOT NULL CHECK (kind IN ('recover_value', 'recover_token', 'erase')),
    -- recover_value: the token asked about; recover_token: the computed token, once answered.
    token            text,
    value_kind       text        CHECK (value_kind IN ('ip', 'device_id')),
    dry_run          boolean     NOT NULL DEFAULT FALSE,
    reason           text        NOT NULL,
    -- pending → (awaiting_approval → approved | rejected) → answered | refused | failed;
    -- cancelled (by the asker), expired (not taken, or its answer not read, in time); read.
    state            text        NOT NULL CHECK (state IN (
        'pending', 'awaiting_approval', 'approved', 'rejected',
        'answered', 'read', 'refused', 'failed', 'cancelled', 'expired'
    )),
    outcome          text,
    finished_at      timestamptz
);
CREATE INDEX recovery_requests_waiting_idx ON pii.recovery_requests (id)
    WHERE state IN ('pending', 'awaiting_approval', 'approved');
COMMENT ON TABLE pii.recovery_requests IS
    'Recovery and erasure requests: who asked, when, from where, why, and what became of them (no cleartext).';

-- The cleartext a request carries (the value of recover_token, the user id of erase), until
-- the service takes it (or the request ends otherwise): never readable but by the functions.
CREATE TABLE pii.recovery_inputs (
    request_id bigint PRIMARY KEY REFERENCES pii.recovery_requests (id),
    value      text   NOT NULL
);

-- Answers, readable once by the requesting login (pii.take_answer), gone at expires_at.
CREATE TABLE pii.recovery_answers (
    request_id bigint      PRIMARY KEY REFERENCES pii.recovery_requests (id),
    answer     jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Four eyes (the service's LOGINVAULT_RECOVERY_APPROVALS=1): each approval or rejection.
CREATE TABLE pii.recovery_approvals (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at       timestamptz NOT NULL DEFAULT now(),
    request_id       bigint      NOT NULL REFERENCES pii.recovery_requests (id),
    login_user       text        NOT NULL,
    client_addr      inet,
    application_name text,
    decision         text        NOT NULL CHECK (decision IN ('approved', 'rejected')),
    reason           text        NOT NULL
);
COMMENT ON TABLE pii.recovery_approvals IS
    'Four eyes: who approved or rejected which recovery or erasure request, and why.';

-- One row per login that asked: the recovery service locks it (FOR UPDATE) while it counts and
-- uses the login's budget, so that concurrent requests are counted one at a time. A table, not
-- an advisory lock: no other role can take (and hold) this lock.
CREATE TABLE pii.recovery_budget_locks (
    login text PRIMARY KEY
);

-- The registry holds, per kind and version, a fingerprint of each key (one-way, keyed: it
-- tells two keys apart, and nothing about either), its state and when it changed. It never
-- holds a key: keys exist only in the environment and, as session settings, in the sessions
-- that use them.
CREATE TABLE pii.key_versions (
    kind           text        NOT NULL CHECK (kind IN ('hmac', 'encryption')),
    version        integer     NOT NULL CHECK (version > 0),
    fingerprint    text        NOT NULL,
    -- pending: a rotation to it is under way; active: the key in use; previous: the one before
    -- it, still needed (old tokens resolve / rows not yet re-encrypted); retired: gone.
    state          text        NOT NULL CHECK (state IN ('pending', 'active', 'previous', 'retired')),
    -- hmac: whether the token's input is kind || ':' || value (tokens of an IP and a device id
    -- with the same string differ). Only a version registered over existing tokens is not.
    kind_separated boolean     NOT NULL DEFAULT TRUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    activated_at   timestamptz,
    retired_at     timestamptz,
    PRIMARY KEY (kind, version),
    UNIQUE (kind, fingerprint)
);
CREATE UNIQUE INDEX key_versions_one_active ON pii.key_versions (kind) WHERE state = 'active';
CREATE UNIQUE INDEX key_versions_one_previous ON pii.key_versions (kind) WHERE state = 'previous';
CREATE UNIQUE INDEX key_versions_one_pending ON pii.key_versions (kind) WHERE state = 'pending';
COMMENT ON TABLE pii.key_versions IS
    'Versions of the PII keys: fingerprints (never keys), states, times (loginvault keys status).';

-- Old token → new token of each HMAC rotation, kept until `keys retire hmac`: an old token
-- from an analyst's extract still resolves (audited). Written by the rotation (the transformer),
-- read by the recovery functions.
CREATE TABLE pii.token_map (
    kind         text    NOT NULL,
    old_token    text    NOT NULL,
    new_token    text    NOT NULL,
    from_version integer NOT NULL,
    to_version   integer NOT NULL,
    PRIMARY KEY (kind, old_token)
);
ALTER TABLE pii.token_map OWNER TO loginvault_transformer;

-- Erased subjects, so that a redelivery, a DLQ redrive or a replay of their messages never
-- enters the marts again (staging rejects them: erased_subject). subject_token is the keyed
-- hash of the user id (loginvault.pii_token('user_id', …)) under hmac_key_version; the user id
-- itself is kept only encrypted (under encryption_key_version), so that a key rotation can
-- hash it again: nothing else could keep the list working across HMAC rotations. The
-- transform reads the hashes (column grant), never the ciphertext.
CREATE TABLE pii.erased_subjects (
    subject_token          text        PRIMARY KEY,
    hmac_key_version       integer     NOT NULL,
    ciphertext             bytea       NOT NULL,
    encryption_key_version integer     NOT NULL,
    erased_at              timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pii.erased_subjects IS
    'Erased data subjects (keyed hash; the user id only encrypted): staging rejects their messages (erased_subject).';

-- Every erasure (and dry run): the subject's keyed hash, never the user id; the counts; why.
CREATE TABLE pii.erasure_audit (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    erased_at        timestamptz NOT NULL DEFAULT now(),
    login_user       text        NOT NULL,
    client_addr      inet,
    application_name text,
    subject_token    text        NOT NULL,
    dry_run          boolean     NOT NULL,
    raw_rows         bigint      NOT NULL,
    staged_rows      bigint      NOT NULL,
    logins           bigint      NOT NULL,
    rejections       bigint      NOT NULL,
    vault_values     bigint      NOT NULL,
    reason           text        NOT NULL CHECK (btrim(reason) <> ''),
    request_id       bigint
);
COMMENT ON TABLE pii.erasure_audit IS 'Who erased which subject (keyed hash), when, what and why (loginvault erase).';

-- The mart schema and its tables are the repeatable definitions' (repeatable/70_mart.sql): they
-- follow the mart schema named at each bootstrap, and are created from their declared shapes.
