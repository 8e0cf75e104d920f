-- Warden's PostgreSQL roles: least privilege for the gateway, everything else
-- for maintenance. Run as the database owner (or a superuser) in the Warden
-- database, after `warden migrate up`; safe to run again after each upgrade.
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/postgres-roles.sql
--   -- then give each login its group:
--   GRANT warden_gateway TO gateway_login;          -- the running gateways
--   GRANT warden_maintenance TO operator_login;     -- warden keys / audit prune / migrate
--
-- warden_gateway can: verify keys (read api_keys, touch last_used_at);
-- issue, decide and consume approvals; append audit events and integrate
-- them into the transparency log (leaves, tree hashes, checkpoints, the
-- queue). It cannot: UPDATE or DELETE an audit event, leaf, tree hash or
-- checkpoint; prune; create, revoke or re-role API keys; change the schema.
-- (The append-only triggers refuse UPDATE/DELETE on the log for every role,
-- and a trigger keeps approval history immutable; these grants refuse
-- before a trigger is reached.) The gateway can still decide a PENDING
-- approval itself: keep approvers on their own login (warden_maintenance).

DO $$
BEGIN
  CREATE ROLE warden_gateway NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
BEGIN
  CREATE ROLE warden_maintenance NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Nobody but the owner creates objects in the schema (the default before
-- PostgreSQL 15 let every role do so).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO warden_gateway, warden_maintenance;

-- The gateway: exactly what its storage operations need.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM warden_gateway;
GRANT SELECT ON api_keys TO warden_gateway;
GRANT UPDATE (last_used_at) ON api_keys TO warden_gateway;
GRANT SELECT, INSERT, UPDATE ON approval_requests TO warden_gateway;
GRANT SELECT, INSERT ON audit_events TO warden_gateway;
GRANT SELECT, INSERT, DELETE ON audit_pending TO warden_gateway;
GRANT SELECT, INSERT ON audit_leaves, audit_tree_hashes, audit_checkpoints TO warden_gateway;
GRANT SELECT ON audit_prune_permits, seaql_migrations TO warden_gateway;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO warden_gateway;

-- Maintenance: keys, approvals housekeeping, prune (under its permit), export.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO warden_maintenance;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO warden_maintenance;

-- What the gateway records: it may write the admin events of the approval
-- changes it makes (issue, consume, expiry, and a decision if it makes one),
-- and no other admin event (no key, policy or schema action in its name).
CREATE OR REPLACE FUNCTION warden_admin_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.tool_name IS DISTINCT FROM 'approval'
     AND pg_has_role(current_user, 'warden_gateway', 'MEMBER')
     AND NOT pg_has_role(current_user, 'warden_maintenance', 'MEMBER') THEN
    RAISE EXCEPTION 'the gateway role cannot record % events', NEW.method;
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS audit_events_admin_guard ON audit_events;
CREATE TRIGGER audit_events_admin_guard BEFORE INSERT ON audit_events
  FOR EACH ROW WHEN (NEW.kind = 'admin') EXECUTE FUNCTION warden_admin_event_guard();

-- No approval change by the gateway without its admin event in the same
-- transaction (checked at commit): a bare UPDATE cannot decide a call
-- off the record.
CREATE INDEX IF NOT EXISTS ix_audit_events_admin_resource
  ON audit_events ((sanitized_args -> 'resource' ->> 'id'), method) WHERE kind = 'admin';
CREATE OR REPLACE FUNCTION warden_approval_change_recorded() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  action text := CASE NEW.status
    WHEN 'PENDING' THEN 'approval.issue'
    WHEN 'APPROVED' THEN 'approval.approve'
    WHEN 'DENIED' THEN 'approval.deny'
    WHEN 'EXPIRED' THEN 'approval.expire'
    WHEN 'EXECUTED' THEN 'approval.consume'
  END;
BEGIN
  IF NOT pg_has_role(current_user, 'warden_gateway', 'MEMBER')
     OR pg_has_role(current_user, 'warden_maintenance', 'MEMBER') THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (
    SELECT 1 FROM audit_events e
    WHERE e.kind = 'admin' AND e.method = action
      AND (e.sanitized_args -> 'resource' ->> 'id') = NEW.id::text
  ) THEN
    RAISE EXCEPTION 'approval % changed to % without its audit event', NEW.id, NEW.status;
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS approval_change_recorded ON approval_requests;
CREATE CONSTRAINT TRIGGER approval_change_recorded AFTER INSERT OR UPDATE ON approval_requests
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION warden_approval_change_recorded();
