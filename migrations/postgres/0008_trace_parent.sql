-- The W3C trace context (`traceparent`) of the request that stored the event, when
-- tracing was on: StreamLeads hands it to consumers so their spans continue the
-- trace. Empty for events stored with tracing off and before this version.
ALTER TABLE events ADD COLUMN trace_parent TEXT;
