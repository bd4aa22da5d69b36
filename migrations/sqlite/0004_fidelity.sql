-- What Roistat's export, searches and the operator need of a lead, beside its event.
ALTER TABLE leads ADD COLUMN visit        TEXT    NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN title        TEXT    NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN create_time  INTEGER;                    -- created_date, Unix microseconds
ALTER TABLE leads ADD COLUMN receive_time INTEGER NOT NULL DEFAULT 0; -- Unix microseconds
-- The version at which the lead's order id was fixed (answered to Roistat, or a deal
-- id reported), and when: an export walk lists the order from that version on.
ALTER TABLE leads ADD COLUMN order_version INTEGER;
ALTER TABLE leads ADD COLUMN order_time    INTEGER;

UPDATE leads SET
    visit = COALESCE((SELECT json_extract(e.payload, '$.body.visit')
                      FROM events e WHERE e.sequence = leads.sequence), ''),
    title = COALESCE((SELECT json_extract(e.payload, '$.body.title')
                      FROM events e WHERE e.sequence = leads.sequence), ''),
    create_time = (SELECT json_extract(e.payload, '$.body.create_time') * 1000000
                   FROM events e WHERE e.sequence = leads.sequence),
    receive_time = (SELECT e.receive_time FROM events e WHERE e.sequence = leads.sequence);

-- Orders answered before this version enter the export now, so that Roistat's next
-- walk picks them up.
WITH fixed AS (
    SELECT integration, lead_id, ROW_NUMBER() OVER (ORDER BY sequence) AS n
    FROM leads WHERE COALESCE(order_id, deal_id) IS NOT NULL
)
UPDATE leads SET
    order_version = (SELECT last_version FROM version_counter) + fixed.n,
    order_time = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
FROM fixed
WHERE leads.integration = fixed.integration AND leads.lead_id = fixed.lead_id;
UPDATE version_counter SET last_version = last_version
    + (SELECT COUNT(*) FROM leads WHERE order_version IS NOT NULL);

-- A lead is found by its order id when that differs from its Roistat lead id (the
-- CRM's deal id); otherwise by its key.
CREATE INDEX leads_by_order_id ON leads (integration, order_id) WHERE order_id <> lead_id;

-- When the first stored copy of a message or task arrived: an identical one is the
-- same event only within the deduplication window from it.
ALTER TABLE event_identities ADD COLUMN first_time INTEGER NOT NULL DEFAULT 0;
UPDATE event_identities SET first_time = COALESCE(
    (SELECT e.receive_time FROM events e WHERE e.sequence = event_identities.sequence), 0);

-- The lead an event is about: a lead's own id; for a message, task or call the lead
-- whose answered order id (else Roistat lead id) it names; NULL when none matches.
ALTER TABLE events ADD COLUMN lead_ref TEXT;
UPDATE events SET lead_ref = CASE kind
    WHEN 'lead' THEN lead_id
    ELSE (
        WITH named(id) AS (SELECT CASE events.kind
            WHEN 'message' THEN json_extract(events.payload, '$.body.lead_id')
            WHEN 'task' THEN json_extract(events.payload, '$.body.element_id')
            WHEN 'call' THEN json_extract(events.payload, '$.body.order_id')
        END)
        SELECT COALESCE(
            (SELECT l.lead_id FROM leads l, named
             WHERE l.integration = events.integration AND l.order_id = named.id LIMIT 1),
            (SELECT l.lead_id FROM leads l, named
             WHERE l.integration = events.integration AND l.lead_id = named.id))
    )
END;
UPDATE events SET payload = json_set(payload, '$.body.resolved_lead_id', COALESCE(lead_ref, ''))
WHERE kind = 'message';
CREATE INDEX events_by_lead ON events (integration, lead_ref, sequence) WHERE kind <> 'lead';

-- Requests to a configured integration that passed the token check and were then
-- refused, as they came (the token masked); the newest per integration are kept.
CREATE TABLE rejected_requests (
    id          INTEGER PRIMARY KEY,
    integration TEXT    NOT NULL,
    time        INTEGER NOT NULL, -- Unix microseconds
    source      TEXT    NOT NULL, -- the client address
    action      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    status      INTEGER NOT NULL, -- the HTTP status answered
    query       BLOB    NOT NULL,
    body        BLOB    NOT NULL
);
CREATE INDEX rejected_by_integration ON rejected_requests (integration, id);
