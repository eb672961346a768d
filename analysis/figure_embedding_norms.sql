-- name: figure_embedding_norms
-- description: Figure 9: per panel, weight decay, eval step and frequency bin, the mean L2 norm of the bin's input-embedding and output-embedding (unembedding) rows (embedding_norms at every eval), mean over seeds.
-- params: (none)
-- columns: panel, weight_decay, step, bin, n_seeds, input_norm, output_norm
WITH final AS (
    SELECT p.panel, tr.weight_decay, e.step, e.bin, count(*) AS n_seeds,
           avg(e.input_norm) AS input_norm, avg(e.output_norm) AS output_norm
    FROM embedding_norms(step := 'all') e
    JOIN trials tr ON tr.trial_id = e.trial_id
    JOIN trial_panels() p ON p.trial_id = e.trial_id
    GROUP BY p.panel, tr.weight_decay, e.step, e.bin
)
SELECT * FROM final ORDER BY panel, weight_decay, bin, step
