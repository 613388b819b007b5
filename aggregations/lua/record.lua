-- Record one page view: every counter of the site in one atomic round trip.
-- KEYS: 1 salt, 2 seen, 3 visit-articles, 4..8 period hashes (day, week, month, year, total),
--       9..13 their visitor HyperLogLogs, 14 pending, 15 pending titles,
--       16..19 article zsets (day, week, month, total), 20 built marker,
--       21 client rate bucket, 22 site rate bucket
-- ARGV: 1 salt, 2 visitor, 3 now (ms), 4 visit timeout (ms), 5 seen retention (ms), 6 day label,
--       7 article or '', 8 title or '', 9 dedup '1'/'0', 10 max articles per day,
--       11..14 time to live (s) of day, week, month, year keys, 15 of the salt,
--       16 client limit per minute, 17 client burst, 18 site limit per minute, 19 site burst
-- Returns {1, new_visit, article, built} with article 0 none/deduplicated, 1 counted, 2 capped;
--         {0, salt} when the caller hashed with a salt other than the day's; {2, 'client'|'site'}
--         when a rate limit refused the hit (nothing counted).

local function bucket(key, now, per_minute, burst)
  -- token bucket: `burst` tokens, refilled at `per_minute` a minute; state "tokens time"
  if per_minute <= 0 then return true end
  local state = redis.call('GET', key)
  local tokens, last = burst, now
  if state then
    local sep = string.find(state, ' ', 1, true)
    tokens = tonumber(string.sub(state, 1, sep - 1))
    last = tonumber(string.sub(state, sep + 1))
    tokens = math.min(burst, tokens + (now - last) * per_minute / 60000)
  end
  if tokens < 1 then return false end
  redis.call('SET', key, string.format('%.4f %d', tokens - 1, now), 'PX',
    math.ceil(burst * 60000 / per_minute) + 1000)
  return true
end

local salt = redis.call('GET', KEYS[1])
if not salt then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[15])
  salt = ARGV[1]
end
if salt ~= ARGV[1] then return {0, salt} end

local now = tonumber(ARGV[3])
if not bucket(KEYS[21], now, tonumber(ARGV[16]), tonumber(ARGV[17])) then return {2, 'client'} end
if not bucket(KEYS[22], now, tonumber(ARGV[18]), tonumber(ARGV[19])) then return {2, 'site'} end

local visitor = ARGV[2]
local timeout = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local last = redis.call('ZSCORE', KEYS[2], visitor)
local new_visit = (not last) or (now - tonumber(last) >= timeout)
redis.call('ZADD', KEYS[2], now, visitor)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - keep))
redis.call('PEXPIRE', KEYS[2], keep)

for i = 4, 8 do
  local pv = redis.call('HINCRBY', KEYS[i], 'pv', 1)
  if new_visit then redis.call('HINCRBY', KEYS[i], 'visits', 1) end
  redis.call('PFADD', KEYS[i + 5], visitor)
  if pv == 1 and i < 8 then
    redis.call('EXPIRE', KEYS[i], ARGV[i + 7])
    redis.call('EXPIRE', KEYS[i + 5], ARGV[i + 7])
  end
end

local day = ARGV[6]
redis.call('HINCRBY', KEYS[14], day .. '|#pv', 1)
if new_visit then redis.call('HINCRBY', KEYS[14], day .. '|#visits', 1) end

local counted = 0
local article = ARGV[7]
if article ~= '' then
  local fresh = true
  if ARGV[9] == '1' then
    if new_visit then redis.call('DEL', KEYS[3]) end
    fresh = redis.call('SADD', KEYS[3], article) == 1
    redis.call('PEXPIRE', KEYS[3], timeout)
  end
  if fresh then
    if (not redis.call('ZSCORE', KEYS[16], article))
        and redis.call('ZCARD', KEYS[16]) >= tonumber(ARGV[10]) then
      counted = 2
    else
      counted = 1
      for i = 16, 19 do
        if redis.call('ZINCRBY', KEYS[i], 1, article) == '1' and i < 19
            and redis.call('TTL', KEYS[i]) == -1 then
          redis.call('EXPIRE', KEYS[i], ARGV[i - 5])
        end
      end
      redis.call('HINCRBY', KEYS[14], day .. '|' .. article, 1)
      if ARGV[8] ~= '' then redis.call('HSET', KEYS[15], article, ARGV[8]) end
    end
  end
end

return {1, new_visit and 1 or 0, counted, redis.call('EXISTS', KEYS[20])}
