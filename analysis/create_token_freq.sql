-- name: create_token_freq
-- kind: statement
-- description: The catalog's token_freq table: every data dir's training-split counts (data/<data_key>/token_freq.parquet, zero counts included), keyed by data_key, with each type's frequency bin.
-- params: files  -- the complete data dirs' token_freq.parquet files
-- columns: data_key, token_id, count, rank, share, piece, n_chars, bin
CREATE TABLE token_freq AS
WITH raw AS (
    SELECT * FROM read_parquet($files, filename = true)
),
final AS (
    SELECT regexp_extract(r.filename, '/data/([^/]+)/token_freq.parquet$', 1) AS data_key,
           r.token_id, r.count, r.rank, r.share, r.piece, r.n_chars, freq_bin(r.count) AS bin
    FROM raw r
)
SELECT * FROM final
