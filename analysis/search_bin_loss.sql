-- name: search_bin_loss
-- description: The search_bin_loss table of a `search: optuna` sweep: every trial's token-balanced loss and accuracy per frequency bin, with its searched fields, final step.
-- params: (none)
-- columns: split, trial_id, weight_decay, lr, freq_decay_alpha, label_smoothing, dropout, bin, n_types, type_mean_loss, accuracy
WITH final AS (
    SELECT b.split, f.trial_id, f.weight_decay, f.lr, f.freq_decay_alpha, f.label_smoothing, f.dropout, b.bin,
           b.n_types, b.type_mean_loss, b.accuracy
    FROM bin_loss() b JOIN search_fields() f ON f.trial_id = b.trial_id
)
SELECT * FROM final ORDER BY split, trial_id, bin
