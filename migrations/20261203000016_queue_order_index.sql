-- Today's Moves reads one status at a time, ordered by score, then age, then id. An index in
-- exactly that order lets the queue read its first page without sorting every row of the
-- status, whatever the planner believes about the table's size. It replaces the two that
-- matched the order only in part (the partial one served the literal 'pending' alone).
CREATE INDEX proposal_summaries_queue_order
    ON proposal_summaries (status, score DESC, created_at, id);
DROP INDEX proposal_summaries_ranked;
DROP INDEX proposal_summaries_pending_score;
