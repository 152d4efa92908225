CREATE TABLE cases (
    id TEXT PRIMARY KEY, case_type TEXT NOT NULL, opener TEXT NOT NULL, state TEXT NOT NULL,
    opened_at TEXT NOT NULL, closed_at TEXT, next_sweep TEXT, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX cases_by_opener ON cases (opener, state);
CREATE INDEX cases_to_sweep ON cases (next_sweep) WHERE next_sweep IS NOT NULL;
CREATE INDEX cases_by_time ON cases (opened_at);
CREATE TABLE case_steps (
    case_id TEXT NOT NULL, step TEXT NOT NULL, department TEXT NOT NULL, state TEXT NOT NULL, due TEXT,
    PRIMARY KEY (case_id, step)
) WITHOUT ROWID;
CREATE INDEX case_steps_by_department ON case_steps (department, state, case_id);
PRAGMA user_version = 11;
