DROP INDEX IF EXISTS outbox_queue;
DROP INDEX IF EXISTS outbox_by_record;
DROP INDEX IF EXISTS outbox_due;
CREATE INDEX outbox_pending ON outbox (subscription, id) WHERE state = 'pending';
CREATE INDEX outbox_pending_by_record ON outbox (subscription, record_type, key, id) WHERE state = 'pending';
CREATE INDEX outbox_pending_due ON outbox (subscription, next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_dead ON outbox (subscription, id) WHERE state = 'dead';
PRAGMA user_version = 8;
