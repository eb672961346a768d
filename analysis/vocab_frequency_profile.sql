-- name: vocab_frequency_profile
-- description: Per data dir (one per vocabulary size of a sweep): the vocabulary, how many of its types training saw, how many of those are low-frequency (seen 1 to `max_count` times), their share of the seen types and of the training occurrences, and the median training count: the long tail the weight-decay penalty falls on, against the vocabulary size.
-- params: max_count := 8  -- the low-frequency cut (8: bins 0 and 1, counts below 3^2)
-- columns: data_key, vocab_size, n_seen_types, n_unseen_types, n_low_frequency_types, low_frequency_type_share, low_frequency_occurrence_share, median_count
WITH final AS (
    SELECT f.data_key,
           count(*) AS vocab_size,
           count(*) FILTER (WHERE f.count > 0) AS n_seen_types,
           count(*) FILTER (WHERE f.count = 0) AS n_unseen_types,
           count(*) FILTER (WHERE f.count BETWEEN 1 AND max_count) AS n_low_frequency_types,
           count(*) FILTER (WHERE f.count BETWEEN 1 AND max_count) / count(*) FILTER (WHERE f.count > 0)
               AS low_frequency_type_share,
           sum(f.count) FILTER (WHERE f.count BETWEEN 1 AND max_count) / sum(f.count)
               AS low_frequency_occurrence_share,
           median(f.count) FILTER (WHERE f.count > 0) AS median_count
    FROM token_freq f
    GROUP BY f.data_key
)
SELECT * FROM final
