-- Creative conditioning on first sight (crates/core/src/conditioning.rs).
-- A job per creative identity (UniversalAdId, else ad system + creative
-- id, else source URL) and org; leased by conditioners through the admin
-- API (lease_owner / lease_until_ms), attempts counted per lease.
CREATE TABLE conditioning_jobs (
  org_id          TEXT NOT NULL,
  id              TEXT NOT NULL,
  identity        TEXT NOT NULL,
  creative_id     TEXT NOT NULL,
  universal_ad_id TEXT,
  ad_system       TEXT NOT NULL DEFAULT '',
  duration_s      REAL NOT NULL DEFAULT 0,
  source_url      TEXT NOT NULL,
  source_kind     TEXT NOT NULL,
  source_size     INTEGER NOT NULL DEFAULT 0,
  source          TEXT NOT NULL,
  state           TEXT NOT NULL DEFAULT 'queued',
  reason          TEXT,
  attempts        INTEGER NOT NULL DEFAULT 0,
  lease_owner     TEXT,
  lease_until_ms  INTEGER,
  seen            INTEGER NOT NULL DEFAULT 1,
  created_ms      INTEGER NOT NULL,
  updated_ms      INTEGER NOT NULL,
  started_ms      INTEGER,
  finished_ms     INTEGER,
  ad_ids          TEXT,
  PRIMARY KEY (org_id, id)
);
CREATE INDEX conditioning_jobs_state ON conditioning_jobs (state, created_ms);

-- Conditioned ads come from an ad server's campaigns: matched to their
-- VAST creatives, never served as house ads from the library.
ALTER TABLE ads ADD COLUMN conditioned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ads ADD COLUMN source_url TEXT;
ALTER TABLE ads ADD COLUMN source_size INTEGER NOT NULL DEFAULT 0;

-- Per-org settings (conditioning: ladder, loudness target, true peak).
ALTER TABLE orgs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
