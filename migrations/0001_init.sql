-- cf-ssai control plane schema (D1 / SQLite).
CREATE TABLE orgs (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  created_ms  INTEGER NOT NULL
);

-- config is the JSON ChannelConfig (crates/core/src/config.rs), validated
-- on write by the admin API.
CREATE TABLE channels (
  org_id        TEXT NOT NULL REFERENCES orgs(id),
  slug          TEXT NOT NULL,
  config        TEXT NOT NULL,
  health        TEXT NOT NULL DEFAULT 'ok',
  health_detail TEXT,
  failures      INTEGER NOT NULL DEFAULT 0,
  updated_ms    INTEGER NOT NULL,
  PRIMARY KEY (org_id, slug)
);

-- API keys: only a salted SHA-256 of the key is stored; id is the key's
-- first 16 characters (to find the row).
CREATE TABLE api_keys (
  id          TEXT PRIMARY KEY,
  org_id      TEXT NOT NULL REFERENCES orgs(id),
  salt        TEXT NOT NULL,
  hash        TEXT NOT NULL,
  label       TEXT,
  revoked     INTEGER NOT NULL DEFAULT 0,
  created_ms  INTEGER NOT NULL
);

-- The ad library: creatives conditioned to a channel's ladder and cadence.
-- renditions / tracking are JSON (AdRendition[] / Tracking).
CREATE TABLE ads (
  org_id          TEXT NOT NULL REFERENCES orgs(id),
  id              TEXT NOT NULL,
  channel_slug    TEXT,
  creative_id     TEXT NOT NULL,
  universal_ad_id TEXT,
  duration_s      REAL NOT NULL,
  cadence_ms      INTEGER NOT NULL,
  renditions      TEXT NOT NULL,
  tracking        TEXT NOT NULL DEFAULT '{}',
  priority        INTEGER NOT NULL DEFAULT 0,
  active          INTEGER NOT NULL DEFAULT 1,
  created_ms      INTEGER NOT NULL,
  PRIMARY KEY (org_id, id)
);
CREATE INDEX ads_creative ON ads (org_id, creative_id);
CREATE INDEX ads_uaid ON ads (org_id, universal_ad_id);

-- Slates: channel_slug NULL = the org default.
CREATE TABLE slates (
  org_id        TEXT NOT NULL REFERENCES orgs(id),
  id            TEXT NOT NULL,
  channel_slug  TEXT,
  renditions    TEXT NOT NULL,
  created_ms    INTEGER NOT NULL,
  PRIMARY KEY (org_id, id)
);

-- Break history for the dashboard (the live state is in the Channel DO).
CREATE TABLE breaks (
  org_id      TEXT NOT NULL,
  slug        TEXT NOT NULL,
  break_id    TEXT NOT NULL,
  source      TEXT NOT NULL,
  record      TEXT NOT NULL,
  pod         TEXT NOT NULL,
  created_ms  INTEGER NOT NULL,
  PRIMARY KEY (org_id, slug, break_id)
);

-- Counters for the dashboard (monitor polls, decisions, beacons, ...).
CREATE TABLE metrics (
  scope  TEXT NOT NULL,
  name   TEXT NOT NULL,
  value  INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, name)
);
