-- name: search_fields
-- description: Per trial, the fields a `search: optuna` may vary (the spec's SearchParam, in its order): what the search tables and the Pareto front show beside the objectives.
-- params: (none)
-- columns: trial_id, weight_decay, lr, freq_decay_alpha, label_smoothing, dropout
WITH final AS (
    SELECT tr.trial_id, tr.weight_decay, tr.lr, tr.freq_decay_alpha, tr.label_smoothing, tr.dropout
    FROM trials tr
)
SELECT * FROM final
