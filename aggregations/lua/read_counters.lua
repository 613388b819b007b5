-- Read every counter the widget shows, atomically, in one round trip. Writes nothing.
-- KEYS: 1..8 period hashes (today, yesterday, this week, last week, this month, last month,
--       this year, total), 9..16 their visitor HyperLogLogs, 17 seen, 18 built marker
-- ARGV: 1 online since (ms)
-- Returns pv, visits, visitors for each of the 8 periods, then online, then built (0/1).
local out = {}
for i = 1, 8 do
  local v = redis.call('HMGET', KEYS[i], 'pv', 'visits')
  out[#out + 1] = tonumber(v[1]) or 0
  out[#out + 1] = tonumber(v[2]) or 0
  out[#out + 1] = redis.call('PFCOUNT', KEYS[i + 8])
end
out[#out + 1] = redis.call('ZCOUNT', KEYS[17], ARGV[1], '+inf')
out[#out + 1] = redis.call('EXISTS', KEYS[18])
return out
