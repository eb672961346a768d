-- name: bin_loss_by_token_shape
-- description: Token-balanced loss per frequency bin, stratified by the shape of the piece: whether it starts a word (its decoded text begins with a space) and its length in characters without that space (1, 2-3, 4-6, 7+). Rare pieces are often long word-internal fragments; this separates frequency from shape (a reviewer's confound).
-- params: step := 'final'  -- as in token_type_loss
-- columns: trial_id, step, split, bin, starts_word, length_class, n_types, n_occurrences, type_mean_loss
WITH typed AS (
    SELECT * FROM token_type_loss(step := step)
),
shaped AS (
    SELECT typed.*, f.bin,
           starts_with(f.piece, ' ') AS starts_word,
           CASE WHEN length(ltrim(f.piece, ' ')) <= 1 THEN '1'
                WHEN length(ltrim(f.piece, ' ')) <= 3 THEN '2-3'
                WHEN length(ltrim(f.piece, ' ')) <= 6 THEN '4-6'
                ELSE '7+' END AS length_class
    FROM typed
    JOIN trials tr ON tr.trial_id = typed.trial_id
    JOIN token_freq f ON f.data_key = tr.data_key AND f.token_id = typed.token_id
),
final AS (
    SELECT s.trial_id, s.step, s.split, s.bin, s.starts_word, s.length_class,
           count(*) AS n_types,
           CAST(sum(s.n_occurrences) AS BIGINT) AS n_occurrences,
           avg(s.mean_loss) AS type_mean_loss
    FROM shaped s
    GROUP BY s.trial_id, s.step, s.split, s.bin, s.starts_word, s.length_class
)
SELECT * FROM final
