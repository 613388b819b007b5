-- Rollup last step: forget a batch that PostgreSQL has recorded as applied.
-- KEYS: 1 batches, 2 batch, 3 batch titles   ARGV: 1 batch id
-- UNLINK: a batch of a million fields is freed in the background, not while beacons wait
redis.call('UNLINK', KEYS[2], KEYS[3])
return redis.call('SREM', KEYS[1], ARGV[1])
