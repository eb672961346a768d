-- name: report_excess
-- description: The excess loss of every nonzero weight decay over its paired lambda = 0 trial, per bin, mean over seeds with its 95% interval (the HTML report's table), final step.
-- params: (none)
-- columns: scale, vocab_size, regularizer, split, bin, weight_decay, n_seeds, mean_excess, ci95_low, ci95_high
WITH final AS (
    SELECT * FROM excess_loss_ci() WHERE weight_decay > 0
)
SELECT * FROM final ORDER BY split, scale, vocab_size, regularizer, weight_decay, bin
