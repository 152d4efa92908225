-- An audit entry about a stored record version (a publish, a delivery, a read) is found for a
-- person through the record rather than by one audit_subjects row per subject (the same model as
-- SQLite's schema 10, hub/src/store/sqlite/upgrade-10.sql): the subject index, and subjects_past
-- for the people later versions removed, never deleted, lead to the record, and audit_by_record
-- to its entries. subjects_past starts with everyone earlier versions named and the index no
-- longer does; entries written before this keep their audit_subjects rows.
CREATE TABLE subjects_past (
    subject_hash TEXT NOT NULL, type TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (subject_hash, type, key)
);
INSERT INTO subjects_past (subject_hash, type, key)
    SELECT DISTINCT j.h, r.type, r.key FROM records r, json_array_elements_text(r.subjects::json) AS j(h)
    WHERE NOT EXISTS (SELECT 1 FROM subjects s WHERE s.subject_hash = j.h AND s.type = r.type AND s.key = r.key)
ON CONFLICT DO NOTHING;
CREATE INDEX audit_by_record ON audit (record_type, record_key) WHERE record_version IS NOT NULL;
