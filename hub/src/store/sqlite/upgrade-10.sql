CREATE TABLE subjects_past (
    subject_hash TEXT NOT NULL, type TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (subject_hash, type, key)
) WITHOUT ROWID;
INSERT OR IGNORE INTO subjects_past (subject_hash, type, key)
    SELECT j.value, r.type, r.key FROM records r, json_each(r.subjects) j
    WHERE NOT EXISTS (SELECT 1 FROM subjects s WHERE s.subject_hash = j.value AND s.type = r.type AND s.key = r.key);
CREATE INDEX audit_by_record ON audit (record_type, record_key) WHERE record_version IS NOT NULL;
PRAGMA user_version = 10;
