-- name: token_type_loss_raw
-- description: token_type_loss computed from the per-occurrence rows (tokens) instead of the rollups: the same answer from ~13x the rows (the paper's eval size); what the rollups are checked against.
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, split, token_id, n_occurrences, mean_loss, accuracy
WITH selected AS (  -- `step` is a constant, so DuckDB drops the branch that cannot match before reading
    SELECT t.trial_id, t.step, t.split, t.token_id, t.loss, t.correct
    FROM final_tokens t
    WHERE CAST(step AS VARCHAR) = 'final'
    UNION ALL
    SELECT t.trial_id, t.step, t.split, t.token_id, t.loss, t.correct
    FROM tokens t
    WHERE CAST(step AS VARCHAR) <> 'final'
      AND (CAST(step AS VARCHAR) = 'all' OR t.step = TRY_CAST(step AS BIGINT))
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
