-- name: report_bins
-- description: The report's table in long form (raysweep report pivots it): per split, scale, vocabulary size, regularizer, lr and weight decay, the seeds' mean average and token-balanced loss, and each frequency bin's token-balanced loss, final step.
-- params: (none)
-- columns: split, scale, vocab_size, regularizer, lr, weight_decay, n_seeds, average_loss, balanced_loss, bin, bin_loss
WITH overall AS (
    SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay,
           count(DISTINCT tr.trial_id) AS n_seeds,  -- the one key the group leaves free is the seed
           avg(b.average_loss) AS average_loss, avg(b.balanced_loss) AS balanced_loss
    FROM balanced_vs_average() b JOIN trials tr ON tr.trial_id = b.trial_id
    GROUP BY b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay
),
bins AS (
    SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay, b.bin,
           avg(b.type_mean_loss) AS bin_loss
    FROM bin_loss() b JOIN trials tr ON tr.trial_id = b.trial_id
    GROUP BY b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay, b.bin
),
final AS (
    SELECT o.split, o.scale, o.vocab_size, o.regularizer, o.lr, o.weight_decay, o.n_seeds,
           o.average_loss, o.balanced_loss, b.bin, b.bin_loss
    -- a model scored from checkpoints has no regularizer, lr or weight decay (NULL): those keys still pair
    FROM overall o JOIN bins b
      ON o.split = b.split AND o.scale = b.scale AND o.vocab_size IS NOT DISTINCT FROM b.vocab_size
     AND o.regularizer IS NOT DISTINCT FROM b.regularizer AND o.lr IS NOT DISTINCT FROM b.lr
     AND o.weight_decay IS NOT DISTINCT FROM b.weight_decay
)
SELECT * FROM final ORDER BY split, scale, vocab_size, regularizer, lr, weight_decay, bin
