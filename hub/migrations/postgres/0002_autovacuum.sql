-- Tables the hub updates in place get vacuumed by dead rows, not by the default 20 % of the table
-- (BENCHMARKS.md, "Table growth under sustained load"). Under a sustained delivery load the outbox
-- took two updates per delivery (lease, settlement) and reached 26 % dead rows of 181,000 with no
-- autovacuum run in 150 s: at the default scale factor a table of millions of rows would carry
-- hundreds of thousands of dead rows, and every claim's index scan walks past them.
-- Lease and settlement columns are not all indexed; room on each page lets the lease update stay a
-- heap-only (HOT) update that adds no index entries.
ALTER TABLE outbox SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
-- Small tables updated on every acknowledgement, restart or alert attempt: vacuumed after a few
-- hundred dead rows whatever their size.
ALTER TABLE feed_cursor SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200, fillfactor = 50);
ALTER TABLE subscription_state SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200, fillfactor = 50);
ALTER TABLE alerts SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 200);
-- A new version of an existing record updates its row here.
ALTER TABLE latest SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
