-- name: train_curves
-- description: Training metrics of every trial, one row per (trial, step): where a retry rewrote a step, the row from the latest chunk wins.
-- params: (none)
-- columns: trial_id, step, loss, lr, tokens_per_s, step_time_s, mfu, time, weight_decay, scale, seed, regularizer, vocab_size
WITH latest AS (
    SELECT m.* FROM train_metrics m
    QUALIFY row_number() OVER (PARTITION BY m.trial_id, m.step ORDER BY m.upto DESC) = 1
),
final AS (
    SELECT l.trial_id, l.step, l.loss, l.lr, l.tokens_per_s, l.step_time_s, l.mfu, l.time,
           tr.weight_decay, tr.scale, tr.seed, tr.regularizer, tr.vocab_size
    FROM latest l JOIN trials tr ON tr.trial_id = l.trial_id
)
SELECT * FROM final
