-- Quorums and deadlines: who approved or rejected so far and how many it takes, when a
-- pending proposal expires, and when the next level of its escalation ladder is told.
ALTER TABLE proposal_summaries
    ADD COLUMN approved_by       jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN approvals_needed  integer NOT NULL DEFAULT 1,
    ADD COLUMN rejected_by       jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN rejections_needed integer NOT NULL DEFAULT 1,
    ADD COLUMN expires_at        timestamptz,
    ADD COLUMN escalations       jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN escalation_level  integer NOT NULL DEFAULT 0,
    ADD COLUMN escalate_at       timestamptz;

-- Proposals decided before this migration: their one approver or rejecter, as a rebuild
-- from the events would record them.
UPDATE proposal_summaries s
SET approved_by = jsonb_build_array(e.payload::jsonb -> 'Approved' ->> 'actor')
FROM events e
WHERE e.aggregate_type = 'Proposal'
  AND e.aggregate_id = s.id
  AND e.event_type = 'Approved';

UPDATE proposal_summaries s
SET rejected_by = jsonb_build_array(e.payload::jsonb -> 'Rejected' ->> 'actor')
FROM events e
WHERE e.aggregate_type = 'Proposal'
  AND e.aggregate_id = s.id
  AND e.event_type = 'Rejected';

-- What is due: an index scan each, over pending proposals only.
CREATE INDEX proposal_summaries_expiry_due ON proposal_summaries (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;
CREATE INDEX proposal_summaries_escalation_due ON proposal_summaries (escalate_at)
    WHERE status = 'pending' AND escalate_at IS NOT NULL;
