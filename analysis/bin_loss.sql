-- name: bin_loss
-- description: Per trial, step, split and training-frequency bin (floor(log3(count)); -1 = types unseen in training): number of types, occurrences, mean of per-type mean loss (token-balanced), occurrence-weighted loss, accuracy.
-- params: step := 'final', min_occurrences := 1  -- step as in token_type_loss; min_occurrences > 1 keeps only types seen that often in the eval split (a type seen once or twice has a noisy mean loss: a reviewer's confound)
-- columns: trial_id, step, split, bin, n_types, n_occurrences, type_mean_loss, occurrence_loss, accuracy
WITH typed AS (
    SELECT * FROM token_type_loss(step := step) WHERE n_occurrences >= min_occurrences
),
binned AS (
    SELECT typed.*, f.bin
    FROM typed
    JOIN trials tr ON tr.trial_id = typed.trial_id
    JOIN token_freq f ON f.data_key = tr.data_key AND f.token_id = typed.token_id
),
final AS (
    SELECT b.trial_id, b.step, b.split, b.bin,
           count(*) AS n_types,
           CAST(sum(b.n_occurrences) AS BIGINT) AS n_occurrences,
           avg(b.mean_loss) AS type_mean_loss,
           sum(b.mean_loss * b.n_occurrences) / sum(b.n_occurrences) AS occurrence_loss,
           sum(b.accuracy * b.n_occurrences) / sum(b.n_occurrences) AS accuracy
    FROM binned b
    GROUP BY b.trial_id, b.step, b.split, b.bin
)
SELECT * FROM final
