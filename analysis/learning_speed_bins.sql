-- name: learning_speed_bins
-- description: Per trial, split and frequency bin: mean learning speed of the bin's types (see learning_speed).
-- params: (none)
-- columns: trial_id, split, bin, n_types, learning_speed
WITH final AS (
    SELECT l.trial_id, l.split, l.bin, count(*) AS n_types, avg(l.learning_speed) AS learning_speed
    FROM learning_speed() l
    GROUP BY l.trial_id, l.split, l.bin
)
SELECT * FROM final
