-- A record version keeps the W3C trace context of its publish, which its deliveries carry.
ALTER TABLE records ADD COLUMN trace TEXT;
