-- The durable record. Live counters are in Redis; these tables are what survives it.

CREATE TABLE sites (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    domains     text[] NOT NULL DEFAULT '{}',
    timezone    text NOT NULL DEFAULT 'Asia/Ho_Chi_Minh',
    respect_dnt boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- per site per local day; `hll` is the day's HyperLogLog of visitors, as Redis stores it
CREATE TABLE site_days (
    site_id    text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    day        date NOT NULL,
    pageviews  bigint NOT NULL DEFAULT 0,
    visits     bigint NOT NULL DEFAULT 0,
    visitors   bigint NOT NULL DEFAULT 0,
    hll        bytea,
    PRIMARY KEY (site_id, day)
);

CREATE TABLE article_days (
    site_id  text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    day      date NOT NULL,
    article  text NOT NULL,
    views    bigint NOT NULL,
    PRIMARY KEY (site_id, day, article)
);

-- per article lifetime views counted live (baselines are kept apart, in article_baselines)
CREATE TABLE articles (
    site_id     text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    article     text NOT NULL,
    views       bigint NOT NULL DEFAULT 0,
    title       text,
    first_seen  date,
    PRIMARY KEY (site_id, article)
);

-- counts carried over from an older counter: replaced on re-import, never added to
CREATE TABLE site_baselines (
    site_id     text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    pageviews   bigint NOT NULL DEFAULT 0,
    visits      bigint NOT NULL DEFAULT 0,
    source      text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE article_baselines (
    site_id     text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    article     text NOT NULL,
    views       bigint NOT NULL,
    source      text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, article)
);

-- the rollup's exactly-once ledger: a batch id is inserted in the transaction that applies it
CREATE TABLE rollup_batches (
    id          text PRIMARY KEY,
    site_id     text NOT NULL,
    rows        integer NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_batches_applied_at ON rollup_batches (applied_at);

-- HyperLogLog snapshots of each week, month, year and the lifetime, per site; merging a snapshot
-- back is idempotent, which is how unique visitors survive a Redis loss without double counting
CREATE TABLE period_visitors (
    site_id     text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    period      text NOT NULL,
    visitors    bigint NOT NULL,
    hll         bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, period)
);
