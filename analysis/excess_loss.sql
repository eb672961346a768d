-- name: excess_loss
-- description: Per scale, seed, split, frequency bin and weight decay: bin loss (token-balanced) of the trial minus that of its paired weight-decay-0 trial (same scale, seed, regularizer, lr, data).
-- params: step := 'final'  -- as in token_type_loss
-- columns: scale, vocab_size, seed, regularizer, split, bin, weight_decay, trial_id, baseline_trial_id, loss, baseline_loss, excess_loss
WITH bins AS (
    SELECT b.*, tr.scale, tr.vocab_size, tr.seed, tr.regularizer, tr.data_key, tr.weight_decay, tr.lr
    FROM bin_loss(step := step) b JOIN trials tr ON tr.trial_id = b.trial_id
),
final AS (
    SELECT x.scale, x.vocab_size, x.seed, x.regularizer, x.split, x.bin, x.weight_decay,
           x.trial_id, base.trial_id AS baseline_trial_id,
           x.type_mean_loss AS loss, base.type_mean_loss AS baseline_loss,
           x.type_mean_loss - base.type_mean_loss AS excess_loss
    FROM bins x
    JOIN bins base ON base.scale = x.scale AND base.seed = x.seed
                  AND base.regularizer = x.regularizer AND base.data_key = x.data_key AND base.lr = x.lr
                  AND base.split = x.split AND base.bin = x.bin AND base.step = x.step
                  AND base.weight_decay = 0
)
SELECT * FROM final
