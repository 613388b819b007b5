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

-- Numbers are handed to redis.call as the strings they came in (ARGV) or made once a run:
-- Redis turns a Lua number into text with printf's %.17g, which cost more than the command it
-- went to (measured: ~2 400 instructions a number, 12 % of the script's run).

local function bucket(key, now, now_text, per_minute, burst, ttl)
  -- token bucket: `burst` tokens, refilled at `per_minute` a minute; state "tokens time", the
  -- tokens with four decimals (written with integers only: %f goes through printf's slow path)
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
  local left = math.floor((tokens - 1) * 10000 + 0.5)  -- to the nearest, as %.4f rounded
  redis.call('SET', key, string.format('%d.%04d ', math.floor(left / 10000), left % 10000)
    .. now_text, 'PX', ttl)
  return true
end

local function text(n)  -- a count as text; most counts of a run are 1
  if n == 1 then return '1' end
  return string.format('%d', n)
end

local function bucket_ttl(per_minute, burst)  -- ms, as text: the bucket refills within it
  if per_minute <= 0 then return '0' end
  return string.format('%d', math.ceil(burst * 60000 / per_minute) + 1000)
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
local client_ttl = bucket_ttl(client_limit, client_burst)
local site_ttl = bucket_ttl(site_limit, site_burst)

local out = {1, redis.call('EXISTS', KEYS[19])}
local pv, visits, latest = 0, 0, nil
local visitors = {}
local views, order, titles = {}, {}, {}  -- per article counted in this batch, in first-seen order
local hits = (#KEYS - 20) / 2
-- distinct articles of the day; a run that cannot reach the cap (each hit adds at most one)
-- skips asking whether each of its articles is new
local day_size = redis.call('ZCARD', KEYS[15])
local may_cap = day_size + hits > max_articles

for h = 0, hits - 1 do
  local visitor, now_text = ARGV[16 + 4 * h], ARGV[17 + 4 * h]
  local now = tonumber(now_text)
  local article, title = ARGV[18 + 4 * h], ARGV[19 + 4 * h]
  local status, new_visit, counted = 1, false, 0
  if not bucket(KEYS[22 + 2 * h], now, now_text, client_limit, client_burst, client_ttl) then
    status = 2
  elseif not bucket(KEYS[20], now, now_text, site_limit, site_burst, site_ttl) then
    status = 3
  else
    local last = redis.call('ZSCORE', KEYS[2], visitor)
    new_visit = (not last) or (now - tonumber(last) >= timeout)
    redis.call('ZADD', KEYS[2], now_text, visitor)
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
        redis.call('PEXPIRE', seen_articles, ARGV[2])
      end
      if fresh then
        counted = 1
        if may_cap and not views[article] and not redis.call('ZSCORE', KEYS[15], article) then
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
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('(%d', latest - keep))
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end

if pv > 0 then
  local pv_text, visits_text = text(pv), text(visits)
  for i = 3, 7 do
    local total = redis.call('HINCRBY', KEYS[i], 'pv', pv_text)
    if visits > 0 then redis.call('HINCRBY', KEYS[i], 'visits', visits_text) end
    redis.call('PFADD', KEYS[i + 5], unpack(visitors))
    if total == pv and i < 7 then  -- this batch made the period's keys
      redis.call('EXPIRE', KEYS[i], ARGV[i + 4])
      redis.call('EXPIRE', KEYS[i + 5], ARGV[i + 4])
    end
  end
  local day = ARGV[4]
  redis.call('HINCRBY', KEYS[13], day .. '|#pv', pv_text)
  if visits > 0 then redis.call('HINCRBY', KEYS[13], day .. '|#visits', visits_text) end
end

local title_fields = {}
for _, article in ipairs(order) do
  local n = views[article]
  local n_text = text(n)
  for i = 15, 18 do redis.call('ZINCRBY', KEYS[i], n_text, article) end
  redis.call('HINCRBY', KEYS[13], ARGV[4] .. '|' .. article, n_text)
  if titles[article] then
    title_fields[#title_fields + 1] = article
    title_fields[#title_fields + 1] = titles[article]
  end
end
if #title_fields > 0 then redis.call('HSET', KEYS[14], unpack(title_fields)) end
if #order > 0 then
  -- a day's, week's or month's ranking made by this run (or left without a lifetime) gets one;
  -- asked once a run rather than read off every ZINCRBY's reply
  for i = 15, 17 do
    if redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ARGV[i - 8]) end
  end
end

return out
