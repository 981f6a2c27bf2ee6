-- Admission of one verified request, atomically: its tier limit (GCRA), then, if it passes,
-- its dedup claim. One script, so one round trip decides both.
--
-- KEYS: the rate-limit key if ARGV[1] contains 'l', then the dedup key if it contains 'c'.
-- ARGV[1]: 'l', 'c' or 'lc'; then, for 'l': the limit (requests per minute) and the emission
-- interval (ns); then, for 'c': the caller's in-flight marker and the claim's lease (ms).
-- Returns {allowed, remaining, reset_secs, retry_after_secs, claim}, where allowed is 1 or 0
-- and claim is 0 (not asked, or not reached because the limit denied), 1 (claimed), 2 (in
-- flight elsewhere) or 3 (already delivered).
--
-- Time is Redis's own clock (TIME), so replicas with skewed clocks still agree.

local NS = 1000000000

-- floor(a / b) for integers 0 <= a and 0 < b below 2^53, exactly (the division of two doubles
-- is corrected by one if it rounded across an integer).
local function div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return div(a + b - 1, b)
end

-- Stores a TAT (ns after the whole second `base`) as "<seconds>:<nanoseconds>" since the
-- epoch, expiring when the bucket is full again: then it carries no information.
local function save(key, tat, base, now)
  local secs = div(tat, NS)
  local value = string.format('%d:%09d', base + secs, tat - secs * NS)
  redis.call('SET', key, value, 'PX', math.max(1, ceil_div(tat - now, 1000000)))
end

-- GCRA, line for line `ratelimit::gcra::decide`. Nanoseconds since the epoch (~1.8e18) are
-- beyond the 2^53 integers a double holds exactly, so every instant here is in nanoseconds
-- after the current whole second `base`: now < 1e9, horizon < 1e9 + 6e10.
local function gcra(key, limit, interval)
  local time = redis.call('TIME')
  local base = tonumber(time[1])
  local now = tonumber(time[2]) * 1000
  local horizon = now + limit * interval
  local stored = now -- no key: a full bucket, as a stored TAT of 0
  local value = redis.call('GET', key)
  if value then
    local secs, nanos = string.match(value, '^(%d+):(%d+)$')
    if secs then
      stored = (tonumber(secs) - base) * NS + tonumber(nanos)
    end
  end
  local tat = math.min(math.max(stored, now), horizon)
  local next = tat + interval
  if next <= horizon then
    save(key, next, base, now)
    return 1, div(horizon - next, interval), ceil_div(next - now, NS), 0
  end
  if tat ~= stored then
    -- A TAT beyond the horizon (Redis's clock stepped back) is clamped, as in `decide`.
    save(key, tat, base, now)
  end
  return 0, 0, ceil_div(tat - now, NS), math.max(1, ceil_div(next - horizon, NS))
end

local mode = ARGV[1]
local key, arg = 1, 2
local allowed, remaining, reset, retry = 1, 0, 0, 0
if string.find(mode, 'l', 1, true) then
  allowed, remaining, reset, retry = gcra(KEYS[key], tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]))
  key, arg = key + 1, arg + 2
  if allowed == 0 then
    return {0, remaining, reset, retry, 0}
  end
end
local claim = 0
if string.find(mode, 'c', 1, true) then
  -- The in-flight marker holds the caller's random token, with a lease: it expires by itself
  -- if the caller dies. Only the delivered marker is 'd'.
  if redis.call('SET', KEYS[key], ARGV[arg], 'NX', 'PX', ARGV[arg + 1]) then
    claim = 1
  elseif redis.call('GET', KEYS[key]) == 'd' then
    claim = 3
  else
    claim = 2
  end
end
return {allowed, remaining, reset, retry, claim}
