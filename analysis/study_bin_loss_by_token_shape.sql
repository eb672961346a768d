-- name: study_bin_loss_by_token_shape
-- description: The bin_loss_by_token_shape table (a confound check): per grid point, bin, word start and piece length class, the token-balanced loss of the train sample, mean over seeds, final step.
-- params: (none)
-- columns: scale, vocab_size, regularizer, weight_decay, bin, starts_word, length_class, n_types, type_mean_loss
WITH final AS (
    SELECT tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, b.bin, b.starts_word, b.length_class,
           avg(b.n_types) AS n_types, avg(b.type_mean_loss) AS type_mean_loss
    FROM bin_loss_by_token_shape() b JOIN trials tr ON tr.trial_id = b.trial_id
    WHERE b.split = 'train'
    GROUP BY tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay, b.bin, b.starts_word, b.length_class
)
SELECT * FROM final ORDER BY ALL
