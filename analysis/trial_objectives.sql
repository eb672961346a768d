-- name: trial_objectives
-- description: Per trial, step and split: what `search: optuna` minimizes. Average loss, token-balanced loss, and the token-balanced loss of the lowest training-frequency bin present in the split (the rarest seen types; bin >= 0, unseen types left out), with accuracy.
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, split, average_loss, balanced_loss, lowest_bin, lowest_bin_loss, accuracy
WITH overall AS (
    SELECT * FROM balanced_vs_average(step := step)
),
lowest AS (
    SELECT b.trial_id, b.step, b.split, min(b.bin) AS lowest_bin, arg_min(b.type_mean_loss, b.bin) AS lowest_bin_loss
    FROM bin_loss(step := step) b
    WHERE b.bin >= 0
    GROUP BY b.trial_id, b.step, b.split
),
final AS (
    SELECT o.trial_id, o.step, o.split, o.average_loss, o.balanced_loss, l.lowest_bin, l.lowest_bin_loss,
           o.accuracy
    FROM overall o JOIN lowest l USING (trial_id, step, split)
)
SELECT * FROM final
