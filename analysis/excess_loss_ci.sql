-- name: excess_loss_ci
-- description: Per scale, vocabulary size, regularizer, split, bin and weight decay: mean excess loss over seeds with a two-sided 95% Student-t confidence interval (NULL bounds with one seed).
-- params: step := 'final'  -- as in token_type_loss
-- columns: scale, vocab_size, regularizer, split, bin, weight_decay, n_seeds, mean_excess, ci95_low, ci95_high
WITH per_seed AS (
    SELECT * FROM excess_loss(step := step)
),
grouped AS (
    SELECT p.scale, p.vocab_size, p.regularizer, p.split, p.bin, p.weight_decay,
           count(*) AS n_seeds, avg(p.excess_loss) AS mean_excess,
           stddev_samp(p.excess_loss) / sqrt(count(*)) AS standard_error
    FROM per_seed p
    GROUP BY p.scale, p.vocab_size, p.regularizer, p.split, p.bin, p.weight_decay
),
final AS (
    SELECT g.scale, g.vocab_size, g.regularizer, g.split, g.bin, g.weight_decay, g.n_seeds, g.mean_excess,
           g.mean_excess - q.t * g.standard_error AS ci95_low,
           g.mean_excess + q.t * g.standard_error AS ci95_high
    FROM grouped g
    LEFT JOIN t_quantile() q ON q.df = g.n_seeds - 1
)
SELECT * FROM final
