-- name: study_bin_loss_min5
-- description: The bin_loss_min5 table (a confound check): bin loss over the types seen at least 5 times in the eval split, per split, grid point and bin, mean over seeds, final step.
-- params: (none)
-- columns: split, scale, vocab_size, regularizer, weight_decay, bin, n_types, type_mean_loss
WITH final AS (
    SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, b.bin,
           avg(b.n_types) AS n_types, avg(b.type_mean_loss) AS type_mean_loss
    FROM bin_loss(min_occurrences := 5) b JOIN trials tr ON tr.trial_id = b.trial_id
    GROUP BY b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, b.bin
)
SELECT * FROM final ORDER BY ALL
