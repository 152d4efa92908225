CREATE TABLE IF NOT EXISTS records (
    audit_seq INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL, digest TEXT NOT NULL, publisher TEXT NOT NULL,
    received_at TEXT NOT NULL, subjects TEXT NOT NULL, payload TEXT NOT NULL, routes INTEGER, trace TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS records_by_key ON records (type, key, version);
CREATE TABLE IF NOT EXISTS subjects (
    subject_hash TEXT NOT NULL, type TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (subject_hash, type, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    publisher TEXT NOT NULL, idem_key TEXT NOT NULL, request_digest TEXT NOT NULL,
    receipt TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (publisher, idem_key)
) WITHOUT ROWID;
-- Through which audit sequence `subjects` holds the versions' subjects (`subjects.rs`).
CREATE TABLE IF NOT EXISTS subjects_merged (id INTEGER PRIMARY KEY CHECK (id = 1), through INTEGER NOT NULL);
INSERT OR IGNORE INTO subjects_merged (id, through) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    record_type TEXT, record_key TEXT, record_version INTEGER, subjects TEXT NOT NULL,
    purpose TEXT, outcome TEXT NOT NULL, detail TEXT, prev TEXT NOT NULL, digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_record ON audit (record_type, record_key) WHERE record_version IS NOT NULL;
CREATE TABLE IF NOT EXISTS subjects_past (
    subject_hash TEXT NOT NULL, type TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (subject_hash, type, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_subjects (
    subject_hash TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (subject_hash, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY, digest TEXT NOT NULL, signature TEXT NOT NULL, time TEXT NOT NULL, suite TEXT
);
CREATE INDEX IF NOT EXISTS records_by_seq ON records (type, audit_seq, routes);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL, record_type TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
    event_id TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL, created_at INTEGER NOT NULL, last_error TEXT, settled_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (subscription, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_pending_by_record ON outbox (subscription, record_type, key, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_pending_due ON outbox (subscription, next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (subscription, id) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS outbox_dead_by_record ON outbox (subscription, record_type, key, version) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS cursors (
    subscription TEXT PRIMARY KEY, slot INTEGER NOT NULL UNIQUE, position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_state (
    name TEXT PRIMARY KEY, disabled INTEGER NOT NULL, reason TEXT, since TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feed_cursor (
    subscription TEXT PRIMARY KEY, acked INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS check_runs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, started TEXT NOT NULL,
    duration_ms INTEGER NOT NULL, status TEXT NOT NULL, summary TEXT NOT NULL,
    measurements TEXT NOT NULL, trigger TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_runs_by_name ON check_runs (name, started);
CREATE INDEX IF NOT EXISTS check_runs_by_time ON check_runs (started);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, check_name TEXT NOT NULL, from_status TEXT NOT NULL,
    to_status TEXT NOT NULL, summary TEXT NOT NULL, time TEXT NOT NULL, flapping INTEGER NOT NULL,
    delivered_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (time);
CREATE TABLE IF NOT EXISTS schedule_claims (
    check_name TEXT NOT NULL, slot TEXT NOT NULL, claimed_at TEXT NOT NULL,
    PRIMARY KEY (check_name, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY, case_type TEXT NOT NULL, opener TEXT NOT NULL, state TEXT NOT NULL,
    opened_at TEXT NOT NULL, closed_at TEXT, next_sweep TEXT, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cases_by_opener ON cases (opener, state);
CREATE INDEX IF NOT EXISTS cases_to_sweep ON cases (next_sweep) WHERE next_sweep IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_by_time ON cases (opened_at);
CREATE TABLE IF NOT EXISTS case_steps (
    case_id TEXT NOT NULL, step TEXT NOT NULL, department TEXT NOT NULL, state TEXT NOT NULL, due TEXT,
    PRIMARY KEY (case_id, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS case_steps_by_department ON case_steps (department, state, case_id);
PRAGMA user_version = 14;
