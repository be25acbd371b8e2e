-- astra 0.3.0: queryables every catalogue offers.
-- pgstac answers /queryables from its own queryables table; these rows (for every
-- collection, no index) make the provider view and the common scene fields
-- discoverable for CQL2 clients. Written with pgstac's upsert_queryable, so running
-- it again, or after an operator changed a definition, leaves one row per name.

SELECT pgstac.upsert_queryable(
    'astra:provider',
    '{"title": "Provider organisation", "description": "The organisation that publishes'
    ' the scene (copernicus, usgs, element84, microsoft, local, ...)", "type": "string"}',
    'to_text'
);
SELECT pgstac.upsert_queryable(
    'astra:collection',
    '{"title": "Local collection", "description": "The catalogue collection holding the'
    ' scene (the provider''s collection prefix and the upstream collection id)", "type": "string"}',
    'to_text'
);
SELECT pgstac.upsert_queryable(
    'eo:cloud_cover',
    '{"title": "Cloud cover", "description": "Estimate of cloud cover, in %",'
    ' "type": "number", "minimum": 0, "maximum": 100}',
    'to_float'
);
SELECT pgstac.upsert_queryable(
    'platform',
    '{"title": "Platform", "description": "Unique name of the platform the instrument is'
    ' attached to (sentinel-2a, landsat-9, ...)", "type": "string"}',
    'to_text'
);
SELECT pgstac.upsert_queryable(
    'constellation',
    '{"title": "Constellation", "description": "Name of the constellation the platform'
    ' belongs to", "type": "string"}',
    'to_text'
);
SELECT pgstac.upsert_queryable(
    'gsd',
    '{"title": "Ground sample distance", "description": "Nominal ground sample distance,'
    ' in metres", "type": "number", "exclusiveMinimum": 0}',
    'to_float'
);
