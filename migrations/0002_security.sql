-- API key scopes (space-separated: cue, read, admin) and last use; keys
-- created before this migration keep full rights in their org.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN last_used_ms INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_ms INTEGER;
