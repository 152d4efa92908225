-- A checkpoint names the crypto suite it was signed with (NULL on those signed before suites
-- existed: SHA-256 and Ed25519), and the database the suite its chain is sealed with, so a node
-- configured with another one is refused at start.
ALTER TABLE checkpoints ADD COLUMN suite TEXT;
ALTER TABLE hub_identity ADD COLUMN suite TEXT;
-- Every database before this migration was sealed with the only suite there was.
UPDATE hub_identity SET suite = 'sha256-ed25519';
