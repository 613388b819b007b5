-- Rollup step 1: move the site's pending counts aside under a new batch id, atomically.
-- KEYS: 1 built marker, 2 pending, 3 pending titles, 4 batches (set of ids in flight),
--       5 batch, 6 batch titles
-- ARGV: 1 new batch id
-- Returns the ids of every batch in flight (the new one included), or {} when there are none;
-- false when the site's live counters are not built (a rebuild must come first, so that nothing
-- counted after a Redis loss is applied to PostgreSQL before the rebuild has read it).
-- Idempotent: run again with the same id (a client that resends it after a lost reply), it moves
-- nothing more; a second RENAME onto the batch would overwrite the counts moved the first time.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[5])
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('RENAME', KEYS[3], KEYS[6]) end
  redis.call('SADD', KEYS[4], ARGV[1])
end
return redis.call('SMEMBERS', KEYS[4])
