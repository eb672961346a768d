-- name: study_loss_plateau
-- description: The loss_plateau table: per grid point, the mean training loss over the last 10% of steps against the 10% before and their relative change (0 is flat), mean, min and max over seeds.
-- params: (none)
-- columns: scale, vocab_size, regularizer, weight_decay, n_seeds, window_steps, previous_loss, last_loss, relative_change, min_change, max_change
WITH final AS (
    SELECT tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, count(*) AS n_seeds,
           avg(p.window_steps) AS window_steps, avg(p.previous_loss) AS previous_loss,
           avg(p.last_loss) AS last_loss, avg(p.relative_change) AS relative_change,
           min(p.relative_change) AS min_change, max(p.relative_change) AS max_change
    FROM loss_plateau() p JOIN trials tr ON tr.trial_id = p.trial_id
    GROUP BY tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay
)
SELECT * FROM final ORDER BY ALL
