-- name: study_split_gap
-- description: The split_gap table: per grid point and bin, the train-sample and held-out token-balanced loss and their gap, mean over seeds, final step.
-- params: (none)
-- columns: scale, vocab_size, regularizer, weight_decay, bin, train_loss, heldout_loss, gap
WITH final AS (
    SELECT tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, g.bin, avg(g.train_loss) AS train_loss,
           avg(g.heldout_loss) AS heldout_loss, avg(g.gap) AS gap
    FROM split_gap() g JOIN trials tr ON tr.trial_id = g.trial_id
    GROUP BY tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, g.bin
)
SELECT * FROM final ORDER BY ALL
