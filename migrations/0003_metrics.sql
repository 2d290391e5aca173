-- Operator metrics (crates/core/src/metrics.rs): additive sums per
-- (org, channel, bucket, series). Series keys are in Prometheus text
-- syntax, e.g. skips_total{kind="frequency_cap"}; latencies are histogram
-- series (_bucket{le}, _sum, _count). Minutes are kept 48 h, then rolled
-- into hours (kept 90 days) by the monitor's cron.
CREATE TABLE metric_minutes (
  org_id   TEXT NOT NULL,
  channel  TEXT NOT NULL,
  t_ms     INTEGER NOT NULL,
  series   TEXT NOT NULL,
  value    REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, t_ms, channel, series)
);
CREATE TABLE metric_hours (
  org_id   TEXT NOT NULL,
  channel  TEXT NOT NULL,
  t_ms     INTEGER NOT NULL,
  series   TEXT NOT NULL,
  value    REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, t_ms, channel, series)
);
-- Running totals since the channel's first metric: what the OpenMetrics
-- endpoint serves (a scrape reads one small row set, not 48 h of minutes).
CREATE TABLE metric_totals (
  org_id   TEXT NOT NULL,
  channel  TEXT NOT NULL,
  series   TEXT NOT NULL,
  value    REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, channel, series)
);
