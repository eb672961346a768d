-- name: create_pareto_front
-- kind: statement
-- description: The catalog's pareto_front table (a `search: optuna` sweep's): pareto_front_trials made wide, one column per objective in the spec's order, then the searched fields; ordered by the objectives, then trial_id.
-- params: objectives  -- the spec's optuna.objectives
-- columns: trial_id, <each objective>, weight_decay, lr, freq_decay_alpha, label_smoothing, dropout
-- NOTE: a PIVOT's output columns are fixed when it is bound, which a macro parameter or a prepared
-- parameter is not in time for; a variable set beforehand is.
SET VARIABLE pareto_objectives = $objectives;
CREATE TABLE pareto_front AS
WITH front AS (
    SELECT p.trial_id, p.front_rank, p.objective, p.value
    FROM pareto_front_trials(objectives := getvariable('pareto_objectives')) p
),
wide AS (
    PIVOT front ON objective IN (SELECT unnest(getvariable('pareto_objectives')))
    USING first(value) GROUP BY front_rank, trial_id
),
final AS (
    SELECT w.* EXCLUDE (front_rank), f.* EXCLUDE (trial_id), w.front_rank
    FROM wide w JOIN search_fields() f ON f.trial_id = w.trial_id
)
SELECT * EXCLUDE (front_rank) FROM final ORDER BY front_rank;
RESET VARIABLE pareto_objectives;
