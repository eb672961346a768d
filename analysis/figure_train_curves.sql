-- name: figure_train_curves
-- description: Figure 7: the training loss of every trial per step (train_curves) with its panel; per_scale := true puts every trial of a scale in one panel (a search's trials, whose regularizer and lr vary continuously).
-- params: per_scale := false  -- one panel per scale instead of trial_panels' panel
-- columns: trial_id, panel, weight_decay, step, loss
WITH final AS (
    SELECT c.trial_id, CASE WHEN per_scale THEN c.scale ELSE p.panel END AS panel, c.weight_decay, c.step, c.loss
    FROM train_curves() c JOIN trial_panels() p ON p.trial_id = c.trial_id
)
SELECT * FROM final ORDER BY trial_id, step
