-- name: loss_vs_frequency_slope
-- description: Per trial, step and split: least-squares slope of per-type mean loss on ln(training count), over types seen in training; more negative = frequent types favoured more.
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, split, n_types, slope, r2
WITH typed AS (
    SELECT t.*, ln(f.count) AS log_count
    FROM token_type_loss(step := step) t
    JOIN trials tr ON tr.trial_id = t.trial_id
    JOIN token_freq f ON f.data_key = tr.data_key AND f.token_id = t.token_id
    WHERE f.count > 0
),
final AS (
    SELECT t.trial_id, t.step, t.split, count(*) AS n_types,
           regr_slope(t.mean_loss, t.log_count) AS slope,
           regr_r2(t.mean_loss, t.log_count) AS r2
    FROM typed t
    GROUP BY t.trial_id, t.step, t.split
)
SELECT * FROM final
