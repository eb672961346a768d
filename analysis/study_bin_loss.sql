-- name: study_bin_loss
-- description: The bin_loss table of `raysweep tables`: per split, grid point (scale, vocabulary size, regularizer, weight decay; seeds pooled) and frequency bin, the seeds' mean type count, token-balanced loss and accuracy, final step.
-- params: (none)
-- columns: split, scale, vocab_size, regularizer, weight_decay, bin, n_seeds, n_types, type_mean_loss, accuracy
WITH final AS (
    SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, b.bin, count(*) AS n_seeds,
           avg(b.n_types) AS n_types, avg(b.type_mean_loss) AS type_mean_loss, avg(b.accuracy) AS accuracy
    FROM bin_loss() b JOIN trials tr ON tr.trial_id = b.trial_id
    GROUP BY b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, b.bin
)
SELECT * FROM final ORDER BY ALL
