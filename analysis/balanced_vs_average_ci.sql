-- name: balanced_vs_average_ci
-- description: The paper's Table 1 over seeds: per scale, vocabulary size, regularizer, split and weight decay, the mean over seeds of average loss, token-balanced loss and accuracy, each with the half-width of its two-sided 95% Student-t confidence interval (NULL with one seed).
-- params: step := 'final', include_errors := false  -- step as in token_type_loss; include_errors: pool trials that ended in ERROR too (left out by default: their shards may stop anywhere)
-- columns: scale, vocab_size, regularizer, split, weight_decay, n_seeds, average_loss, average_ci95, balanced_loss, balanced_ci95, accuracy, accuracy_ci95
WITH per_seed AS (
    SELECT b.*, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay
    FROM balanced_vs_average(step := step) b JOIN trials tr ON tr.trial_id = b.trial_id
    WHERE include_errors OR tr.status IS DISTINCT FROM 'ERROR'
),
grouped AS (
    SELECT p.scale, p.vocab_size, p.regularizer, p.split, p.weight_decay, count(*) AS n_seeds,
           avg(p.average_loss) AS average_loss, stddev_samp(p.average_loss) / sqrt(count(*)) AS average_se,
           avg(p.balanced_loss) AS balanced_loss, stddev_samp(p.balanced_loss) / sqrt(count(*)) AS balanced_se,
           avg(p.accuracy) AS accuracy, stddev_samp(p.accuracy) / sqrt(count(*)) AS accuracy_se
    FROM per_seed p
    GROUP BY p.scale, p.vocab_size, p.regularizer, p.split, p.weight_decay
),
final AS (
    SELECT g.scale, g.vocab_size, g.regularizer, g.split, g.weight_decay, g.n_seeds,
           g.average_loss, q.t * g.average_se AS average_ci95,
           g.balanced_loss, q.t * g.balanced_se AS balanced_ci95,
           g.accuracy, q.t * g.accuracy_se AS accuracy_ci95
    FROM grouped g
    LEFT JOIN t_quantile() q ON q.df = g.n_seeds - 1
)
SELECT * FROM final ORDER BY split, scale, vocab_size, regularizer, weight_decay
