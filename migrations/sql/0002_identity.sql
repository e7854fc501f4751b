-- Organizations, users, memberships and API keys. Written by the command side (the admin
-- command); the query side may read them to check an API key, never write.
CREATE SCHEMA identity;

CREATE TABLE identity.organizations (
    organization_id text        PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.users (
    user_id    text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.memberships (
    organization_id text        NOT NULL REFERENCES identity.organizations,
    user_id         text        NOT NULL REFERENCES identity.users,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_by_user ON identity.memberships (user_id);

-- Only the SHA-256 of a key is kept; the raw key is printed once by `admin create-key`.
CREATE TABLE identity.api_keys (
    key_hash   text        PRIMARY KEY,
    user_id    text        NOT NULL REFERENCES identity.users,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
