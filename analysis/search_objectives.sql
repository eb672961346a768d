-- name: search_objectives
-- description: Long form: per finished trial (status TERMINATED) and objective `<split>_<metric>` (a trial_objectives metric of that split, final step), its value, NULL where the trial has no rows of that split; with the trial's searched fields.
-- params: objectives := ['train_average_loss', 'train_balanced_loss']  -- objective names (default: the spec's optuna.objectives default)
-- columns: trial_id, objective, value, weight_decay, lr, freq_decay_alpha, label_smoothing, dropout
WITH per_split AS (
    SELECT o.trial_id, o.split, o.average_loss, o.balanced_loss, o.lowest_bin_loss
    FROM trial_objectives() o JOIN trials tr ON tr.trial_id = o.trial_id
    WHERE tr.status = 'TERMINATED'
),
measured AS (  -- one row per trial, split and metric (spec.schema.OBJECTIVE_METRICS)
    UNPIVOT per_split ON average_loss, balanced_loss, lowest_bin_loss INTO NAME metric VALUE value
),
wanted AS (
    SELECT DISTINCT p.trial_id, w.objective
    FROM per_split p CROSS JOIN (SELECT unnest(objectives) AS objective) w
),
scored AS (
    SELECT w.trial_id, w.objective, max(m.value) AS value
    FROM wanted w
    LEFT JOIN measured m ON m.trial_id = w.trial_id AND m.split || '_' || m.metric = w.objective
    GROUP BY w.trial_id, w.objective
),
final AS (
    SELECT s.trial_id, s.objective, s.value, f.weight_decay, f.lr, f.freq_decay_alpha, f.label_smoothing,
           f.dropout
    FROM scored s JOIN search_fields() f ON f.trial_id = s.trial_id
)
SELECT * FROM final ORDER BY trial_id, list_position(objectives, objective)
