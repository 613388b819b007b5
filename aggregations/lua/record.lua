-- Record a batch of page views of one site and day - the hits that arrived in one event-loop
-- tick - atomically, in one run. Each hit is judged in order exactly as if it ran alone (rate
-- limits, visit, per-visit article dedup, the per-day article cap); what they add up to is
-- written once: one HINCRBY per counter and one PFADD per period for the whole batch, one
-- ZINCRBY per distinct article and period. Redis spends most of a run on the calls themselves
-- (about 2 us each here), so a batch of n hits costs far less than n runs of one.
-- KEYS: 1 salt, 2 seen, 3..7 period hashes (day, week, month, year, total),
--       8..12 their visitor HyperLogLogs, 13 pending, 14 pending titles,
--       15..18 article zsets (day, week, month, total), 19 built marker, 20 site rate bucket,
--       then per hit h = 0, 1, ...: 21 + 2h its visit-articles set, 22 + 2h its client's bucket
-- ARGV: 1 salt, 2 visit timeout (ms), 3 seen retention (ms), 4 day label, 5 dedup '1'/'0',
--       6 max articles per day, 7..10 time to live (s) of day, week, month, year keys,
--       11 of the salt, 12 client limit per minute, 13 client burst, 14 site limit per minute,
--       15 site burst, then per hit h: 16 + 4h visitor, 17 + 4h now (ms), 18 + 4h article or '',
--       19 + 4h title or ''
-- Returns {0, salt} when the caller hashed with a salt other than the day's (nothing counted);
-- else {1, built, then per hit: status, new_visit, article}, status 1 counted, 2 refused by the
-- client's rate limit, 3 by the site's (that hit counted nowhere); article 0 none/deduplicated,
-- 1 counted, 2 capped.

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
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[11])
  salt = ARGV[1]
end
if salt ~= ARGV[1] then return {0, salt} end

local timeout = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local dedup = ARGV[5] == '1'
local max_articles = tonumber(ARGV[6])
local client_limit, client_burst = tonumber(ARGV[12]), tonumber(ARGV[13])
local site_limit, site_burst = tonumber(ARGV[14]), tonumber(ARGV[15])

local out = {1, redis.call('EXISTS', KEYS[19])}
local pv, visits, latest = 0, 0, nil
local visitors = {}
local views, order, titles = {}, {}, {}  -- per article counted in this batch, in first-seen order
local day_size = nil  -- distinct articles of the day, read once when a new id first needs it

for h = 0, (#KEYS - 20) / 2 - 1 do
  local visitor, now = ARGV[16 + 4 * h], tonumber(ARGV[17 + 4 * h])
  local article, title = ARGV[18 + 4 * h], ARGV[19 + 4 * h]
  local status, new_visit, counted = 1, false, 0
  if not bucket(KEYS[22 + 2 * h], now, client_limit, client_burst) then
    status = 2
  elseif not bucket(KEYS[20], now, site_limit, site_burst) then
    status = 3
  else
    local last = redis.call('ZSCORE', KEYS[2], visitor)
    new_visit = (not last) or (now - tonumber(last) >= timeout)
    redis.call('ZADD', KEYS[2], now, visitor)
    latest = now
    pv = pv + 1
    if new_visit then visits = visits + 1 end
    visitors[#visitors + 1] = visitor
    if article ~= '' then
      local fresh = true
      if dedup then
        local seen_articles = KEYS[21 + 2 * h]
        if new_visit then redis.call('DEL', seen_articles) end
        fresh = redis.call('SADD', seen_articles, article) == 1
        redis.call('PEXPIRE', seen_articles, timeout)
      end
      if fresh then
        counted = 1
        if not views[article] and not redis.call('ZSCORE', KEYS[15], article) then
          day_size = day_size or redis.call('ZCARD', KEYS[15])
          if day_size >= max_articles then
            counted = 2
          else
            day_size = day_size + 1
          end
        end
        if counted == 1 then
          if not views[article] then
            views[article] = 0
            order[#order + 1] = article
          end
          views[article] = views[article] + 1
          if title ~= '' then titles[article] = title end
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = new_visit and 1 or 0
  out[#out + 1] = counted
end

if latest then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (latest - keep))
  redis.call('PEXPIRE', KEYS[2], keep)
end

if pv > 0 then
  for i = 3, 7 do
    local total = redis.call('HINCRBY', KEYS[i], 'pv', pv)
    if visits > 0 then redis.call('HINCRBY', KEYS[i], 'visits', visits) end
    redis.call('PFADD', KEYS[i + 5], unpack(visitors))
    if total == pv and i < 7 then  -- this batch made the period's keys
      redis.call('EXPIRE', KEYS[i], ARGV[i + 4])
      redis.call('EXPIRE', KEYS[i + 5], ARGV[i + 4])
    end
  end
  local day = ARGV[4]
  redis.call('HINCRBY', KEYS[13], day .. '|#pv', pv)
  if visits > 0 then redis.call('HINCRBY', KEYS[13], day .. '|#visits', visits) end
end

local title_fields = {}
for _, article in ipairs(order) do
  local n = views[article]
  for i = 15, 18 do
    if tonumber(redis.call('ZINCRBY', KEYS[i], n, article)) == n and i < 18
        and redis.call('TTL', KEYS[i]) == -1 then
      redis.call('EXPIRE', KEYS[i], ARGV[i - 8])
    end
  end
  redis.call('HINCRBY', KEYS[13], ARGV[4] .. '|' .. article, n)
  if titles[article] then
    title_fields[#title_fields + 1] = article
    title_fields[#title_fields + 1] = titles[article]
  end
end
if #title_fields > 0 then redis.call('HSET', KEYS[14], unpack(title_fields)) end

return out
