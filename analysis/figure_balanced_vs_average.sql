-- name: figure_balanced_vs_average
-- description: Figure 5, Table 1 as a plot: per split, panel and weight decay, the average and token-balanced loss averaged over seeds (balanced_vs_average_ci), final step.
-- params: (none)
-- columns: split, panel, weight_decay, average_loss, balanced_loss
WITH panels AS (
    SELECT DISTINCT scale, vocab_size, regularizer, panel FROM trial_panels()
),
final AS (
    SELECT t.split, p.panel, t.weight_decay, t.average_loss, t.balanced_loss
    FROM balanced_vs_average_ci() t
    JOIN panels p ON p.scale = t.scale AND p.vocab_size = t.vocab_size AND p.regularizer = t.regularizer
)
SELECT * FROM final
