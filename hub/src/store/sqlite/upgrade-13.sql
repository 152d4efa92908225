ALTER TABLE checkpoints ADD COLUMN suite TEXT;
PRAGMA user_version = 13;
