-- Named, durable consumers of the lead stream: where each one stands.
CREATE TABLE consumers (
    name           TEXT    PRIMARY KEY,
    acked_sequence BIGINT NOT NULL, -- every event up to it is acknowledged
    ack_time       BIGINT,          -- Unix microseconds; NULL until the first ack
    create_time    BIGINT NOT NULL
);
