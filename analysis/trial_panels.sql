-- name: trial_panels
-- description: The figure panel of every trial: its scale, plus the vocabulary size when the sweep has several and the regularizer when it is not plain AdamW, so each grid axis gets its own panels (the figure_* queries join it).
-- params: (none)
-- columns: trial_id, scale, vocab_size, regularizer, panel
WITH sweep AS (
    SELECT count(DISTINCT vocab_size) AS n_vocab_sizes FROM trials
),
final AS (
    SELECT tr.trial_id, tr.scale, tr.vocab_size, tr.regularizer,
           tr.scale
           || CASE WHEN s.n_vocab_sizes > 1 THEN ' / vocab ' || tr.vocab_size ELSE '' END
           -- a model scored from checkpoints has no regularizer (NULL): its panel is its name
           || CASE WHEN coalesce(tr.regularizer, 'adamw') = 'adamw' THEN '' ELSE ' / ' || tr.regularizer END AS panel
    FROM trials tr CROSS JOIN sweep s
)
SELECT * FROM final
