-- name: embedding_norms
-- description: Per trial, step and frequency bin: mean L2 norm of the input-embedding and output-embedding (unembedding) rows of the bin's types, over the whole vocabulary.
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, bin, n_types, input_norm, output_norm
WITH selected AS (
    SELECT e.*, f.bin
    FROM embeddings e
    JOIN trials tr ON tr.trial_id = e.trial_id
    JOIN token_freq f ON f.data_key = tr.data_key AND f.token_id = e.token_id
    WHERE (CAST(step AS VARCHAR) = 'final' AND e.step = tr.steps) OR CAST(step AS VARCHAR) = 'all'
       OR CAST(e.step AS VARCHAR) = CAST(step AS VARCHAR)
),
final AS (
    SELECT s.trial_id, s.step, s.bin, count(*) AS n_types,
           avg(s.input_norm) AS input_norm, avg(s.output_norm) AS output_norm
    FROM selected s
    GROUP BY s.trial_id, s.step, s.bin
)
SELECT * FROM final
