-- name: learning_speed
-- description: Per trial, split and token type: 1 - mean over eval steps of (type mean loss at step / type mean loss at the trial's first eval); higher = learned faster. Types absent from the first eval are left out.
-- params: (none)
-- columns: trial_id, split, token_id, bin, n_steps, first_step, first_loss, learning_speed
WITH typed AS (
    SELECT * FROM token_type_loss(step := 'all')
),
first_eval AS (
    SELECT trial_id, split, min(step) AS first_step FROM typed GROUP BY trial_id, split
),
anchored AS (
    SELECT t.trial_id, t.split, t.token_id, t.step, t.mean_loss, f.first_step, base.mean_loss AS first_loss
    FROM typed t
    JOIN first_eval f ON f.trial_id = t.trial_id AND f.split = t.split
    JOIN typed base ON base.trial_id = t.trial_id AND base.split = t.split
                   AND base.token_id = t.token_id AND base.step = f.first_step
),
final AS (
    SELECT a.trial_id, a.split, a.token_id, fr.bin,
           count(*) AS n_steps,
           min(a.first_step) AS first_step,
           min(a.first_loss) AS first_loss,
           1 - avg(a.mean_loss / a.first_loss) AS learning_speed
    FROM anchored a
    JOIN trials tr ON tr.trial_id = a.trial_id
    JOIN token_freq fr ON fr.data_key = tr.data_key AND fr.token_id = a.token_id
    GROUP BY a.trial_id, a.split, a.token_id, fr.bin
)
SELECT * FROM final
