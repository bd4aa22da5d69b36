-- Event sequences and versions are handed out from one row: a write transaction
-- reads and writes the two numbers together (on SQLite one page a commit less).
ALTER TABLE event_counter ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
UPDATE event_counter SET last_version = (SELECT last_version FROM version_counter);
DROP TABLE version_counter;
