-- astra 0.1.0: API keys.
-- Released migrations are never edited; add astra--0.1.0--X.Y.Z.sql instead.

CREATE TABLE astra.api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- the public part of the key (the characters after astra_sk_live_ that identify it)
    lookup_id     text NOT NULL UNIQUE,
    -- SHA-256 of the whole key; the key itself is never stored
    key_hash      bytea NOT NULL,
    scope         text NOT NULL DEFAULT 'read' CHECK (scope IN ('read', 'write', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

-- a name names one live key; revoked keys keep theirs for the record
CREATE UNIQUE INDEX api_keys_live_name ON astra.api_keys (name) WHERE revoked_at IS NULL;
