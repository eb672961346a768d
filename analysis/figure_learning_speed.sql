-- name: figure_learning_speed
-- description: Figure 4: per split, panel, weight decay and frequency bin, the learning speed averaged over seeds (the learning_speed_by_bin table, study_learning_speed_by_bin).
-- params: (none)
-- columns: split, panel, weight_decay, bin, speed
WITH panels AS (
    SELECT DISTINCT scale, vocab_size, regularizer, panel FROM trial_panels()
),
final AS (
    SELECT l.split, p.panel, l.weight_decay, l.bin, l.learning_speed AS speed
    FROM study_learning_speed_by_bin() l
    JOIN panels p ON p.scale = l.scale AND p.vocab_size = l.vocab_size AND p.regularizer = l.regularizer
)
SELECT * FROM final
