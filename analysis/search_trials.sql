-- name: search_trials
-- description: The search_trials table of a `search: optuna` sweep: every trial with its searched fields and its objectives per split (trial_objectives), final step.
-- params: (none)
-- columns: split, trial_id, weight_decay, lr, freq_decay_alpha, label_smoothing, dropout, average_loss, balanced_loss, lowest_bin, lowest_bin_loss, accuracy
WITH final AS (
    SELECT o.split, f.trial_id, f.weight_decay, f.lr, f.freq_decay_alpha, f.label_smoothing, f.dropout,
           o.average_loss, o.balanced_loss, o.lowest_bin, o.lowest_bin_loss, o.accuracy
    FROM trial_objectives() o JOIN search_fields() f ON f.trial_id = o.trial_id
)
SELECT * FROM final ORDER BY split, trial_id
