-- name: split_gap
-- description: Per trial, step and frequency bin, the train-sample and held-out token-balanced losses side by side and their gap (held-out - train): the paper measures on training data; this shows how far each bin's result carries to unseen text. A bin missing from one split has NULL there.
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, bin, train_loss, heldout_loss, gap, train_types, heldout_types
WITH bins AS (
    SELECT * FROM bin_loss(step := step)
),
final AS (
    SELECT coalesce(t.trial_id, h.trial_id) AS trial_id, coalesce(t.step, h.step) AS step,
           coalesce(t.bin, h.bin) AS bin,
           t.type_mean_loss AS train_loss, h.type_mean_loss AS heldout_loss,
           h.type_mean_loss - t.type_mean_loss AS gap,
           t.n_types AS train_types, h.n_types AS heldout_types
    FROM (SELECT * FROM bins WHERE split = 'train') t
    FULL OUTER JOIN (SELECT * FROM bins WHERE split = 'heldout') h
        ON h.trial_id = t.trial_id AND h.step = t.step AND h.bin = t.bin
)
SELECT * FROM final
