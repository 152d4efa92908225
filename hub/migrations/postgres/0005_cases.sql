-- Joint cases. A case's states are versions of a `hub.case` record; these tables are what
-- worklists, the sweep for late steps and the case report query.
CREATE TABLE cases (
    id TEXT PRIMARY KEY, case_type TEXT NOT NULL, opener TEXT NOT NULL, state TEXT NOT NULL,
    opened_at TEXT NOT NULL, closed_at TEXT, next_sweep TEXT, version BIGINT NOT NULL
);
CREATE INDEX cases_by_opener ON cases (opener, state);
CREATE INDEX cases_to_sweep ON cases (next_sweep) WHERE next_sweep IS NOT NULL;
CREATE INDEX cases_by_time ON cases (opened_at);
CREATE TABLE case_steps (
    case_id TEXT NOT NULL, step TEXT NOT NULL, department TEXT NOT NULL, state TEXT NOT NULL, due TEXT,
    PRIMARY KEY (case_id, step)
);
CREATE INDEX case_steps_by_department ON case_steps (department, state, case_id);
