-- Every spot plays in full: a conditioned ad keeps its own length (what
-- beacons are timed on) and records the padding its last segment holds
-- (the last frame held, under one segment).
ALTER TABLE ads ADD COLUMN padding_s REAL NOT NULL DEFAULT 0;

-- A job's outcome for its reader and for metrics: the failure category
-- (stable, counted) beside the reason (ours, never a tool's raw text), and
-- the conditioner's notes (source chosen and why, the source's probe, VAST
-- Duration against the file, padding) as JSON.
ALTER TABLE conditioning_jobs ADD COLUMN failure_category TEXT;
ALTER TABLE conditioning_jobs ADD COLUMN notes TEXT;

-- Fair leasing between orgs: when each org was last served (the lease
-- goes to the org served longest ago, within its running quota).
ALTER TABLE conditioning_jobs ADD COLUMN leased_ms INTEGER;
CREATE INDEX conditioning_jobs_org_state ON conditioning_jobs (org_id, state);
