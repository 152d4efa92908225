-- Up to schema 13 every publish kept `subjects` up to date itself: it holds every version.
CREATE TABLE subjects_merged (id INTEGER PRIMARY KEY CHECK (id = 1), through INTEGER NOT NULL);
INSERT INTO subjects_merged (id, through) VALUES (1, COALESCE((SELECT MAX(audit_seq) FROM records), 0));
PRAGMA user_version = 14;
