-- The rollup's mark: every count recorded before ARGV[1] (unix seconds) is in PostgreSQL.
-- Only moves forward, whichever process writes it (two passes may finish out of order).
-- KEYS: 1 rollup state hash   ARGV: 1 pass start (seconds), 2 expiry (seconds)
local current = tonumber(redis.call('HGET', KEYS[1], 'drained_at'))
if current == nil or current < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'drained_at', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
