-- name: report_trials
-- description: Every trial of the sweep with its point, size and status, in grid order (the HTML report's trials table).
-- params: (none)
-- columns: trial_id, weight_decay, scale, seed, regularizer, n_params, status, error
WITH final AS (
    SELECT trial_id, weight_decay, scale, seed, regularizer, n_params, status, error, vocab_size
    FROM trials
)
SELECT * EXCLUDE (vocab_size) FROM final ORDER BY scale, vocab_size, regularizer, weight_decay, seed
