-- name: figure_excess_loss
-- description: Figure 3: per panel, split, bin and nonzero weight decay, the excess loss over the paired lambda = 0 trial, mean over seeds with its 95% interval (report_excess), final step.
-- params: (none)
-- columns: panel, split, bin, weight_decay, n_seeds, mean_excess, ci95_low, ci95_high
WITH panels AS (
    SELECT DISTINCT scale, vocab_size, regularizer, panel FROM trial_panels()
),
final AS (
    SELECT p.panel, e.split, e.bin, e.weight_decay, e.n_seeds, e.mean_excess, e.ci95_low, e.ci95_high
    FROM report_excess() e
    JOIN panels p ON p.scale = e.scale AND p.vocab_size = e.vocab_size AND p.regularizer = e.regularizer
)
SELECT * FROM final
