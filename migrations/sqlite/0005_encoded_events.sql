-- Events stored in the form they are sent: `body` is the protobuf encoding of the
-- event's Lead, DealMessage, Task or Call (roistat.leads.v1) without the fields
-- only known at commit; `source` is a lead's source, for stream filters. `payload`
-- held the JSON of earlier versions: the service converts those rows when it
-- starts, then `payload` stays empty.
ALTER TABLE events ADD COLUMN body BLOB;
ALTER TABLE events ADD COLUMN source TEXT;
-- Leads are listed by a scan of the log in sequence order (most events are leads).
DROP INDEX events_by_kind;

-- What a lead is searched by: its name and e-mail folded (lowercase, single
-- spaces), its phone as its last ten digits. Filled for earlier leads by the same
-- conversion. Each index pages its matches newest first (a name's, by name first).
ALTER TABLE leads ADD COLUMN name_folded  TEXT NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN phone_digits TEXT NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN email_folded TEXT NOT NULL DEFAULT '';
CREATE INDEX leads_by_phone ON leads (phone_digits, sequence) WHERE phone_digits <> '';
CREATE INDEX leads_by_email ON leads (email_folded, sequence) WHERE email_folded <> '';
CREATE INDEX leads_by_name ON leads (name_folded, sequence DESC) WHERE name_folded <> '';
CREATE INDEX leads_by_visit ON leads (visit, sequence) WHERE visit <> '';
CREATE INDEX leads_by_deal_id ON leads (deal_id) WHERE deal_id IS NOT NULL;
