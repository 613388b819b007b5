-- Rebuild, last step: add PostgreSQL's durable record to what Redis counted since it lost the
-- site's data, atomically, and mark the site built. Does nothing if the site is already built.
-- KEYS: 1 built marker, 2 baseline hash, 3 article baselines, 4 staged article baselines,
--       5 scratch key for HyperLogLog bytes, then n_hashes period hashes, n_hlls HyperLogLogs, n_zsets article sorted sets,
--       then n_zsets staged sorted sets (same order)
-- ARGV: 1 n_hashes, 2 n_hlls, 3 n_zsets, 4 baseline pv, 5 baseline visits,
--       then per hash: pv, visits, time to live in s (0: none); per HLL: bytes or '', ttl;
--       per zset: ttl; last, the marker's value (when it was built)
local nh, nl, nz = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local staged = {KEYS[4]}
for i = 1, nz do staged[#staged + 1] = KEYS[5 + nh + nl + nz + i] end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', unpack(staged))
  return 0
end
local a = 6
for i = 1, nh do
  local key = KEYS[5 + i]
  redis.call('HINCRBY', key, 'pv', ARGV[a])
  redis.call('HINCRBY', key, 'visits', ARGV[a + 1])
  if ARGV[a + 2] ~= '0' then redis.call('EXPIRE', key, ARGV[a + 2]) end
  a = a + 3
end
local tmp = KEYS[5]
for i = 1, nl do
  local key = KEYS[5 + nh + i]
  if ARGV[a] ~= '' then
    redis.call('SET', tmp, ARGV[a])
    redis.call('PFMERGE', key, tmp)
    redis.call('DEL', tmp)
  end
  if ARGV[a + 1] ~= '0' and redis.call('EXISTS', key) == 1 then
    redis.call('EXPIRE', key, ARGV[a + 1])
  end
  a = a + 2
end
for i = 1, nz do
  local key = KEYS[5 + nh + nl + i]
  local stage = KEYS[5 + nh + nl + nz + i]
  redis.call('ZUNIONSTORE', key, 2, key, stage)
  if ARGV[a] ~= '0' and redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ARGV[a]) end
  a = a + 1
end
redis.call('DEL', KEYS[2], KEYS[3])
if ARGV[4] ~= '0' or ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[2], 'pv', ARGV[4], 'visits', ARGV[5])
end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('RENAME', KEYS[4], KEYS[3]) end
redis.call('DEL', unpack(staged))
redis.call('SET', KEYS[1], ARGV[#ARGV])
return 1
