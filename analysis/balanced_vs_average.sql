-- name: balanced_vs_average
-- description: Per trial, step and split: average loss (over occurrences), token-balanced loss (over types of their mean loss), balanced - average, balanced / average, and accuracy; the paper's Table 1.
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, split, n_types, n_occurrences, average_loss, balanced_loss, gap, ratio, accuracy
WITH typed AS (
    SELECT * FROM token_type_loss(step := step)
),
final AS (
    SELECT t.trial_id, t.step, t.split,
           count(*) AS n_types,
           CAST(sum(t.n_occurrences) AS BIGINT) AS n_occurrences,
           sum(t.mean_loss * t.n_occurrences) / sum(t.n_occurrences) AS average_loss,
           avg(t.mean_loss) AS balanced_loss,
           avg(t.mean_loss) - sum(t.mean_loss * t.n_occurrences) / sum(t.n_occurrences) AS gap,
           avg(t.mean_loss) / (sum(t.mean_loss * t.n_occurrences) / sum(t.n_occurrences)) AS ratio,
           sum(t.accuracy * t.n_occurrences) / sum(t.n_occurrences) AS accuracy
    FROM typed t
    GROUP BY t.trial_id, t.step, t.split
)
SELECT * FROM final
