ALTER TABLE records ADD COLUMN trace TEXT;
PRAGMA user_version = 12;
