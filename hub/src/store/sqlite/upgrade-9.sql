ALTER TABLE records ADD COLUMN routes INTEGER;
DROP INDEX IF EXISTS records_by_seq;
CREATE INDEX records_by_seq ON records (type, audit_seq, routes);
CREATE INDEX outbox_dead_by_record ON outbox (subscription, record_type, key, version) WHERE state = 'dead';
CREATE TABLE cursors (
    subscription TEXT PRIMARY KEY, slot INTEGER NOT NULL UNIQUE, position INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = 9;
