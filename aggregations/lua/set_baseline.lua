-- Replace baselines (counts carried over from an older counter) in the live totals: each new
-- value replaces the old one, so the live total moves by the difference. PostgreSQL holds the
-- baselines durably; when the site is not built, the rebuild will bring them, so this does nothing.
-- KEYS: 1 built marker, 2 baseline hash, 3 total hash, 4 article baselines, 5 article totals
-- ARGV: 1 '1' when the site baseline is given, 2 pv, 3 visits, then article, views pairs
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '1' then
  local old = redis.call('HMGET', KEYS[2], 'pv', 'visits')
  redis.call('HSET', KEYS[2], 'pv', ARGV[2], 'visits', ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'pv', tonumber(ARGV[2]) - (tonumber(old[1]) or 0))
  redis.call('HINCRBY', KEYS[3], 'visits', tonumber(ARGV[3]) - (tonumber(old[2]) or 0))
end
for i = 4, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[4], ARGV[i])) or 0
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('ZINCRBY', KEYS[5], tonumber(ARGV[i + 1]) - old, ARGV[i])
end
return 1
