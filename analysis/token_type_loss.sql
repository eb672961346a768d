-- name: token_type_loss
-- description: Per trial, eval step, split and token type: occurrences, mean loss (nats), accuracy.
-- params: step := 'final'  -- 'final' (each trial's last step, trials.steps), 'all', or a step number
-- columns: trial_id, step, split, token_id, n_occurrences, mean_loss, accuracy
WITH wanted AS (           -- the (trial, step) pairs to read; constant-folded per call
    SELECT DISTINCT tr.trial_id, e.step
    FROM trials tr JOIN (SELECT DISTINCT x.trial_id, x.step FROM tokens x) e ON e.trial_id = tr.trial_id
    WHERE (CAST(step AS VARCHAR) = 'final' AND e.step = tr.steps) OR CAST(step AS VARCHAR) = 'all'
       OR e.step = TRY_CAST(step AS BIGINT)
),
selected AS (
    SELECT t.trial_id, t.step, t.split, t.token_id, t.loss, t.correct
    FROM tokens t SEMI JOIN wanted w ON w.trial_id = t.trial_id AND w.step = t.step
),
final AS (
    SELECT s.trial_id, s.step, s.split, s.token_id,
           count(*) AS n_occurrences,
           avg(s.loss) AS mean_loss,
           avg(CAST(s.correct AS DOUBLE)) AS accuracy
    FROM selected s
    GROUP BY s.trial_id, s.step, s.split, s.token_id
)
SELECT * FROM final
