-- Events still in the JSON form of versions before 0005: none once the conversion at
-- start has run, but those it could not read. The conversion finds them through this
-- index, so a start no longer reads the whole log to learn that nothing is left.
CREATE INDEX events_unconverted ON events (sequence) WHERE body IS NULL;
