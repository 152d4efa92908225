-- Push subscriptions and feeds as cursors over the log (the model of SQLite's schema 9,
-- hub/src/store/cursor.rs): a record names the cursors it is routed to as bits of `routes`,
-- which records_by_seq carries, so a publish writes no outbox row for them and a cursor reads
-- its way from the index. A cursor is served by one node at a time, the holder of its lease
-- (`lease_owner` until `lease_until`); `tenure` counts the hand-overs, so a node that takes a
-- cursor (back) over knows to start again from `position`. Outbox rows written before this stay
-- and are served first: they are older than anything past a new cursor, which starts at the end.
ALTER TABLE records ADD COLUMN routes BIGINT;
DROP INDEX records_by_seq;
CREATE INDEX records_by_seq ON records (type, audit_seq) INCLUDE (routes);
CREATE TABLE cursors (
    subscription TEXT PRIMARY KEY, slot INTEGER NOT NULL UNIQUE, position BIGINT NOT NULL,
    lease_owner TEXT, lease_until BIGINT, tenure BIGINT NOT NULL DEFAULT 0
);
