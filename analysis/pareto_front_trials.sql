-- name: pareto_front_trials
-- description: Long form: the search's Pareto front, the finished trials that no other trial dominates (<= on every objective, < on one; a NULL objective neither dominates nor is dominated), one row per trial and objective with its searched fields. front_rank orders the front by the objectives, in the given order, then trial_id.
-- params: objectives := ['train_average_loss', 'train_balanced_loss']  -- objective names, as in search_objectives
-- columns: trial_id, front_rank, objective, value, weight_decay, lr, freq_decay_alpha, label_smoothing, dropout
WITH scored AS (
    SELECT * FROM search_objectives(objectives := objectives)
),
dominated AS (
    SELECT DISTINCT me.trial_id
    FROM scored me JOIN scored other ON other.objective = me.objective AND other.trial_id <> me.trial_id
    GROUP BY me.trial_id, other.trial_id
    HAVING count(*) FILTER (WHERE other.value <= me.value) = len(objectives)
       AND count(*) FILTER (WHERE other.value < me.value) > 0
),
front AS (
    SELECT s.trial_id, list(s.value ORDER BY list_position(objectives, s.objective)) AS sort_key
    FROM scored s
    WHERE NOT EXISTS (SELECT 1 FROM dominated d WHERE d.trial_id = s.trial_id)
    GROUP BY s.trial_id
),
ranked AS (
    SELECT f.trial_id, row_number() OVER (ORDER BY f.sort_key, f.trial_id) AS front_rank
    FROM front f
),
final AS (
    SELECT s.trial_id, r.front_rank, s.objective, s.value, s.weight_decay, s.lr, s.freq_decay_alpha,
           s.label_smoothing, s.dropout
    FROM scored s JOIN ranked r ON r.trial_id = s.trial_id
)
SELECT * FROM final ORDER BY front_rank, list_position(objectives, objective)
