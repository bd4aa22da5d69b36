-- Event sequences and versions are handed out from one row: a write transaction
-- reads both under the row lock it takes first anyway, and writes them together
-- (two statements a transaction fewer).
ALTER TABLE event_counter ADD COLUMN last_version BIGINT NOT NULL DEFAULT 0;
UPDATE event_counter SET last_version = (SELECT last_version FROM version_counter);
DROP TABLE version_counter;
