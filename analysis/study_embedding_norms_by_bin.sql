-- name: study_embedding_norms_by_bin
-- description: The embedding_norms_by_bin table: per grid point and bin, the mean input and output embedding row norm, mean over seeds, final step.
-- params: (none)
-- columns: scale, vocab_size, regularizer, weight_decay, bin, input_norm, output_norm
WITH final AS (
    SELECT tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, e.bin, avg(e.input_norm) AS input_norm,
           avg(e.output_norm) AS output_norm
    FROM embedding_norms() e JOIN trials tr ON tr.trial_id = e.trial_id
    GROUP BY tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, e.bin
)
SELECT * FROM final ORDER BY ALL
