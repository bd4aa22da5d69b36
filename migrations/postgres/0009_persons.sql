-- Persons: within one integration, leads that share a valid phone (E.164) or an
-- e-mail (folded) are one person, transitively. A person's id is the sequence of
-- the event that made it (its first lead's, or a split's), so ids never collide
-- and an older person has a smaller one. A merge keeps the older person; the
-- other's row stays, pointing at it (`merged_into`), so its id still resolves.
-- A row is written when a person starts and changes only with a merge, a split or
-- the CRM's client: a returning lead writes nothing here (its last seen and count
-- are read from its leads).
CREATE TABLE persons (
    person_id   BIGINT PRIMARY KEY,
    integration TEXT    NOT NULL,
    first_seen  BIGINT NOT NULL, -- Unix microseconds: its first lead's receive time
    merged_into BIGINT,          -- the person it was merged into (and resolves to)
    split_from  BIGINT,          -- the person an operator split it from: never merged again
    client_id   TEXT           -- the CRM's client, once a deal of one of its leads reports one
);
CREATE INDEX persons_by_merged_into ON persons (merged_into) WHERE merged_into IS NOT NULL;

-- A lead's person (now: merges and splits move it), and its valid phone in E.164.
-- Leads are matched by phone through `leads_by_phone` (the E.164 form's last ten
-- digits are `phone_digits`), by e-mail through `leads_by_email`. NULL person:
-- matching is off for the integration, or the lead was stored before persons and
-- the background match has not reached it yet.
ALTER TABLE leads ADD COLUMN person_id BIGINT;
ALTER TABLE leads ADD COLUMN phone_e164 TEXT NOT NULL DEFAULT '';
CREATE INDEX leads_by_person ON leads (person_id, sequence) WHERE person_id IS NOT NULL;
CREATE INDEX leads_unmatched ON leads (sequence) WHERE person_id IS NULL;

-- A lead event's person as it was delivered (or matched): its id, whether the
-- person had a lead before, and when it was first seen.
ALTER TABLE events ADD COLUMN person_id BIGINT;
ALTER TABLE events ADD COLUMN person_returning BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN person_first_seen BIGINT;
