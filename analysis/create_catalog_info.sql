-- name: create_catalog_info
-- kind: statement
-- description: The catalog's catalog_info table: the layout version it was built with (raysweep.catalog.build.CATALOG_VERSION); a catalog of another version is rebuilt rather than read.
-- params: version  -- CATALOG_VERSION
-- columns: version
CREATE TABLE catalog_info AS
WITH final AS (
    SELECT $version AS version
)
SELECT * FROM final
