-- astra 0.2.0: keys restricted to providers and/or collections.
-- NULL means unrestricted; an array limits the key to those provider prefixes
-- (e.g. earth-search) and/or local collection ids (e.g. es-sentinel-2-l2a).

ALTER TABLE astra.api_keys
    ADD COLUMN providers   text[] CHECK (providers IS NULL OR cardinality(providers) > 0),
    ADD COLUMN collections text[] CHECK (collections IS NULL OR cardinality(collections) > 0);
