-- name: study_learning_speed_by_bin
-- description: The learning_speed_by_bin table: per split, grid point and bin, the learning speed (1 - mean over evals of loss / loss at the first eval), mean over seeds.
-- params: (none)
-- columns: split, scale, vocab_size, regularizer, weight_decay, bin, learning_speed
WITH final AS (
    SELECT l.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, l.bin,
           avg(l.learning_speed) AS learning_speed
    FROM learning_speed_bins() l JOIN trials tr ON tr.trial_id = l.trial_id
    GROUP BY l.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, l.bin
)
SELECT * FROM final ORDER BY ALL
