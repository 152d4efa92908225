CREATE TABLE records_v7 (
    audit_seq INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL, digest TEXT NOT NULL, publisher TEXT NOT NULL,
    received_at TEXT NOT NULL, subjects TEXT NOT NULL, payload TEXT NOT NULL
);
INSERT INTO records_v7 (audit_seq, type, key, version, schema_version, digest, publisher, received_at, subjects, payload)
    SELECT audit_seq, type, key, version, schema_version, digest, publisher, received_at, subjects, payload
    FROM records ORDER BY audit_seq;
DROP TABLE records;
ALTER TABLE records_v7 RENAME TO records;
CREATE UNIQUE INDEX records_by_key ON records (type, key, version);
CREATE INDEX records_by_seq ON records (type, audit_seq);
DROP TABLE IF EXISTS latest;
DROP INDEX IF EXISTS subjects_by_record;
PRAGMA user_version = 7;
