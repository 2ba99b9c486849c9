-- Indexes that match how the inbox, the queue and the API page through proposals.
CREATE INDEX proposal_summaries_by_created ON proposal_summaries (created_at DESC, id DESC);
CREATE INDEX proposal_summaries_status_created ON proposal_summaries (status, created_at DESC, id DESC);
CREATE INDEX proposal_summaries_pending_score ON proposal_summaries (score DESC, created_at, id)
    WHERE status = 'pending';
