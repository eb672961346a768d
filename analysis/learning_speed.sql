-- name: learning_speed
-- description: Per trial, split and token type: 1 - mean over eval steps of (type mean loss at step / type mean loss at the trial's first eval); higher = learned faster. Types absent from the first eval are left out.
-- params: (none)
-- columns: trial_id, split, token_id, bin, n_steps, first_step, first_loss, learning_speed
WITH first_eval AS (  -- its own scan (only the partition keys are read), so the per-type rows are never materialized
    SELECT e.trial_id, e.split, min(e.step) AS first_step, any_value(tr.data_key) AS data_key
    FROM token_type_loss(step := 'all') e
    JOIN trials tr ON tr.trial_id = e.trial_id
    GROUP BY e.trial_id, e.split
),
per_type AS (  -- a type's first loss is its loss at the smallest step it has; kept if that is the first eval
    SELECT t.trial_id, t.split, t.token_id,
           count(*) AS n_steps,
           min(t.step) AS type_first_step,
           arg_min(t.mean_loss, t.step) AS first_loss,
           avg(t.mean_loss) AS mean_over_steps
    FROM token_type_loss(step := 'all') t
    GROUP BY t.trial_id, t.split, t.token_id
),
final AS (
    SELECT p.trial_id, p.split, p.token_id, fr.bin, p.n_steps, f.first_step, p.first_loss,
           1 - p.mean_over_steps / p.first_loss AS learning_speed
    FROM per_type p
    JOIN first_eval f ON f.trial_id = p.trial_id AND f.split = p.split AND f.first_step = p.type_first_step
    JOIN token_freq fr ON fr.data_key = f.data_key AND fr.token_id = p.token_id
)
SELECT * FROM final
