-- name: token_type_loss
-- description: Per trial, eval step, split and token type: occurrences, mean loss (nats), accuracy; from the per-type rollups each eval writes (token_types), one row per type.
-- params: step := 'final'  -- 'final' (each trial's last step, trials.steps), 'all', or a step number
-- columns: trial_id, step, split, token_id, n_occurrences, mean_loss, accuracy
WITH selected AS (  -- `step` is a constant, so DuckDB drops the branch that cannot match before reading
    SELECT t.trial_id, t.step, t.split, t.token_id, t.n_occurrences, t.sum_loss, t.n_correct
    FROM final_token_types t
    WHERE CAST(step AS VARCHAR) = 'final'
    UNION ALL
    SELECT t.trial_id, t.step, t.split, t.token_id, t.n_occurrences, t.sum_loss, t.n_correct
    FROM token_types t
    WHERE CAST(step AS VARCHAR) <> 'final'
      AND (CAST(step AS VARCHAR) = 'all' OR t.step = TRY_CAST(step AS BIGINT))
),
final AS (
    SELECT s.trial_id, s.step, s.split, s.token_id, s.n_occurrences,
           s.sum_loss / s.n_occurrences AS mean_loss,
           s.n_correct / s.n_occurrences AS accuracy
    FROM selected s
)
SELECT * FROM final
