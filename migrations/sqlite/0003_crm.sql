-- What the internal CRM reports for Roistat's export. Deal details and clients are
-- kept as versions, numbered from one counter in commit order: an export walk reads
-- the versions as of the number it started at, so its pages stay consistent while
-- the CRM goes on reporting.
CREATE TABLE version_counter (
    last_version INTEGER NOT NULL
);
INSERT INTO version_counter (last_version) VALUES (0);

CREATE TABLE deal_versions (
    integration TEXT NOT NULL,
    lead_id     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    update_time INTEGER NOT NULL, -- Unix microseconds
    payload     TEXT NOT NULL, -- the deal's details as JSON
    PRIMARY KEY (integration, lead_id, version)
);
CREATE INDEX deal_versions_by_version ON deal_versions (integration, version);

CREATE TABLE client_versions (
    integration TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (integration, client_id, version)
);
CREATE INDEX client_versions_by_version ON client_versions (integration, version);

-- The CRM's catalogue of statuses, fields and managers, per integration.
CREATE TABLE schemes (
    integration TEXT PRIMARY KEY,
    payload     TEXT NOT NULL,
    update_time INTEGER NOT NULL
);

-- Export walks under way: the version each started at, by what it asks for.
CREATE TABLE export_walks (
    integration TEXT NOT NULL,
    kind        TEXT NOT NULL,
    since       INTEGER NOT NULL,
    snapshot    INTEGER NOT NULL,
    PRIMARY KEY (integration, kind, since)
);
