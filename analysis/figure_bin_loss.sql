-- name: figure_bin_loss
-- description: Figure 2: per split, panel, weight decay and frequency bin, the token-balanced loss and accuracy averaged over seeds (the bin_loss table, study_bin_loss), final step.
-- params: (none)
-- columns: split, panel, weight_decay, bin, loss, accuracy
WITH panels AS (
    SELECT DISTINCT scale, vocab_size, regularizer, panel FROM trial_panels()
),
final AS (
    SELECT b.split, p.panel, b.weight_decay, b.bin, b.type_mean_loss AS loss, b.accuracy
    FROM study_bin_loss() b
    JOIN panels p ON p.scale = b.scale AND p.vocab_size = b.vocab_size AND p.regularizer = b.regularizer
)
SELECT * FROM final
