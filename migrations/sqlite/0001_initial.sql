-- The event log: every lead and message, in commit order. `payload` is the
-- event body as JSON; `sequence` is the stream's cursor.
CREATE TABLE events (
    sequence     INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL,
    integration  TEXT    NOT NULL,
    lead_id      TEXT    NOT NULL,
    receive_time INTEGER NOT NULL, -- Unix microseconds
    payload      TEXT    NOT NULL
);
CREATE INDEX events_by_kind ON events (kind, sequence);

-- The last sequence allocated; incremented by the transaction that appends an event.
CREATE TABLE event_counter (
    last_sequence INTEGER NOT NULL
);
INSERT INTO event_counter (last_sequence) VALUES (0);

-- One row per lead: the key that makes Roistat's retries idempotent, and the deal.
CREATE TABLE leads (
    integration      TEXT    NOT NULL,
    lead_id          TEXT    NOT NULL,
    sequence         INTEGER NOT NULL, -- the event that announced it (written in the same transaction)
    deal_id          TEXT,
    order_id         TEXT,    -- what Roistat was answered; never changes once set
    deal_update_time INTEGER NOT NULL,
    PRIMARY KEY (integration, lead_id)
);

-- One row per distinct message, task or call: a retry finds its first delivery here.
CREATE TABLE event_identities (
    integration TEXT    NOT NULL,
    identity    TEXT    NOT NULL,
    sequence    INTEGER NOT NULL, -- the event that announced it (written in the same transaction)
    PRIMARY KEY (integration, identity)
);
