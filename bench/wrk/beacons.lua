-- Realistic page-view beacons, as the tracker sends them (text/plain JSON via sendBeacon):
-- distinct visitors (client address x user agent, behind a trusted proxy's X-Forwarded-For),
-- articles with a skewed popularity, Vietnamese titles, some referrers and some home pages.
-- Arguments (after `--`): site id, the site's domain, thread seed.
-- (The bench appends report.lua, which prints the WRKJSON line and reads `sent`.)

local user_agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
  "Mozilla/5.0 (Linux; Android 14; SM-A546E) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.104 Mobile Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 13; Redmi Note 12) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.107 Mobile Safari/537.36 ZaloTheme/light ZaloLanguage/vi",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
  "Mozilla/5.0 (Linux; Android 12; CPH2269) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36 coc_coc_browser/144.0.226",
}
local titles = {
  "Cao Bằng: Hội nghị triển khai nhiệm vụ phát triển kinh tế - xã hội năm 2026",
  "Thông báo tuyển dụng viên chức sự nghiệp giáo dục",
  "Lịch tiếp công dân của Chủ tịch UBND tỉnh tháng 12",
  "Hướng dẫn thủ tục hành chính trên Cổng dịch vụ công",
  "Bản tin thời tiết: không khí lạnh tăng cường",
}
local referrers = {
  "https://www.google.com/",
  "https://www.facebook.com/",
  "https://zalo.me/",
}

local site, domain
sent = 0 -- a global: the bench reads it with thread:get("sent")
local ADDRESSES = 131072 -- 198.18.0.0/15, the benchmarking range: one address per visitor device

function init(args)
  site = args[1]
  domain = args[2]
  math.randomseed(tonumber(args[3] or "1") * 7919 + id * 104729)
end

local function beacon()
  local body = '{"site":"' .. site .. '","url":"https://' .. domain
  local r = math.random()
  if r < 0.7 then
    -- article popularity is skewed: a few articles get most of the views
    local article = math.floor(5000 ^ math.random())
    body = body .. '/tin-tuc/' .. article .. '","article":"' .. article .. '","title":"'
      .. titles[article % #titles + 1] .. ' ' .. article .. '"'
  else
    body = body .. '/","title":"Cổng thông tin điện tử"'
  end
  if r < 0.2 then
    body = body .. ',"referrer":"' .. referrers[math.random(#referrers)] .. '"'
  end
  return body .. '}'
end

function request()
  sent = sent + 1
  local n = math.random(0, ADDRESSES - 1)
  local body = beacon()
  return "POST /collect HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port
    .. "\r\nUser-Agent: " .. user_agents[math.random(#user_agents)]
    .. "\r\nX-Forwarded-For: 198." .. (18 + math.floor(n / 65536)) .. "." .. math.floor(n / 256) % 256 .. "." .. n % 256
    .. "\r\nOrigin: https://" .. domain
    .. "\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: " .. #body
    .. "\r\n\r\n" .. body
end
