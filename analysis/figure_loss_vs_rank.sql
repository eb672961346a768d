-- name: figure_loss_vs_rank
-- description: Figure 1: per split, panel, weight decay and frequency rank (1 = most frequent type), the mean loss of the type at that rank, averaged over seeds, final step.
-- params: (none)
-- columns: split, panel, weight_decay, rank, loss
WITH typed AS (
    SELECT t.split, p.panel, tr.weight_decay, f.rank, t.mean_loss
    FROM token_type_loss() t
    JOIN trials tr ON tr.trial_id = t.trial_id
    JOIN trial_panels() p ON p.trial_id = t.trial_id
    JOIN token_freq f ON f.data_key = tr.data_key AND f.token_id = t.token_id
),
final AS (
    SELECT split, panel, weight_decay, rank, avg(mean_loss) AS loss
    FROM typed
    GROUP BY split, panel, weight_decay, rank
)
SELECT * FROM final
