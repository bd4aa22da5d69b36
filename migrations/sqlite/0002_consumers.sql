-- Named, durable consumers of the lead stream: where each one stands.
CREATE TABLE consumers (
    name           TEXT    PRIMARY KEY,
    acked_sequence INTEGER NOT NULL, -- every event up to it is acknowledged
    ack_time       INTEGER,          -- Unix microseconds; NULL until the first ack
    create_time    INTEGER NOT NULL
);
