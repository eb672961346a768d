-- name: figure_rarest_bin_excess
-- description: Figure 6: per panel and weight decay (lambda = 0 included), the train split's excess loss of the rarest seen frequency bin (the lowest bin >= 0 of any split), mean over seeds, final step.
-- params: (none)
-- columns: panel, weight_decay, mean_excess
WITH excess AS (
    SELECT * FROM excess_loss_ci()
),
rarest AS (
    SELECT min(bin) AS bin FROM excess WHERE bin >= 0
),
panels AS (
    SELECT DISTINCT scale, vocab_size, regularizer, panel FROM trial_panels()
),
final AS (
    SELECT p.panel, e.weight_decay, e.mean_excess
    FROM excess e
    JOIN panels p ON p.scale = e.scale AND p.vocab_size = e.vocab_size AND p.regularizer = e.regularizer
    WHERE e.split = 'train' AND e.bin = (SELECT r.bin FROM rarest r)
)
SELECT * FROM final
