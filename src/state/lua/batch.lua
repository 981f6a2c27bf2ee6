-- A batch of state operations, run in order and atomically in one call: what the requests of
-- a gateway asked for while its previous call was in flight. Each operation behaves exactly as
-- if it had been a call of its own, made in this order.
--
-- ARGV is the list of operations, each its code then its arguments; KEYS holds their keys, in
-- the same order (an operation takes the keys its code names):
--   'l'        the tier limit alone. KEYS: the rate-limit key. ARGV: the limit (requests per
--              minute), the emission interval (ns).
--   'c'        the dedup claim alone. KEYS: the dedup key. ARGV: the caller's in-flight
--              marker, the claim's lease (ms).
--   'lc'       the limit, then, if it passes, the claim: the keys and arguments of 'l' then
--              those of 'c'.
--   'commit'   KEYS: the dedup key. ARGV: the caller's marker, the route's TTL (ms).
--   'release'  KEYS: the dedup key. ARGV: the caller's marker.
-- Returns the replies of the operations, in order, as one flat array of integers:
--   'l', 'c', 'lc': five, allowed, remaining, reset_secs, retry_after_secs, claim, where
--     allowed is 1 or 0 (1 when no limit was asked) and claim is 0 (not asked, or not reached
--     because the limit denied), 1 (claimed), 2 (in flight elsewhere) or 3 (already delivered);
--   'commit', 'release': one, 1 if done, 0 if the claim was no longer the caller's.
--
-- Time is Redis's own clock (TIME), so replicas with skewed clocks still agree. It is read once
-- per batch: the batch runs atomically, so its operations all happen at that one instant. For
-- the same reason a rate-limit key is read once per batch and written once at its end, with
-- the TAT its last operation left: the same decisions and the same stored value and expiry as
-- a GET and a SET per operation.

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

-- Redis's clock, read on first use: the whole second `base`, and `now` in ns after it.
local base, now
local function clock()
  if not base then
    local time = redis.call('TIME')
    base = tonumber(time[1])
    now = tonumber(time[2]) * 1000
  end
  return base, now
end

-- The TATs of the rate-limit keys this batch read or changed (ns after the whole second
-- `base`), and the changed keys, in the order they were first changed.
local tats, changed, order = {}, {}, {}

-- The TAT of `key`: as this batch left it, else as Redis stores it ("<seconds>:<nanoseconds>"
-- since the epoch), else `now` (no key: a full bucket, as a stored TAT of 0).
local function load(key, base, now)
  local tat = tats[key]
  if tat then
    return tat
  end
  tat = now
  local value = redis.call('GET', key)
  if value then
    local secs, nanos = string.match(value, '^(%d+):(%d+)$')
    if secs then
      tat = (tonumber(secs) - base) * NS + tonumber(nanos)
    end
  end
  tats[key] = tat
  return tat
end

local function save(key, tat)
  if not changed[key] then
    changed[key] = true
    order[#order + 1] = key
  end
  tats[key] = tat
end

-- Stores every changed TAT, expiring when the bucket is full again: then it carries no
-- information.
local function store()
  if #order == 0 then
    return
  end
  local base, now = clock()
  for _, key in ipairs(order) do
    local tat = tats[key]
    local secs = div(tat, NS)
    local value = string.format('%d:%09d', base + secs, tat - secs * NS)
    redis.call('SET', key, value, 'PX', math.max(1, ceil_div(tat - now, 1000000)))
  end
end

-- GCRA, line for line `ratelimit::gcra::decide`. Nanoseconds since the epoch (~1.8e18) are
-- beyond the 2^53 integers a double holds exactly, so every instant here is in nanoseconds
-- after the current whole second `base`: now < 1e9, horizon < 1e9 + 6e10.
local function gcra(key, limit, interval)
  local base, now = clock()
  local horizon = now + limit * interval
  local stored = load(key, base, now)
  local tat = math.min(math.max(stored, now), horizon)
  local next = tat + interval
  if next <= horizon then
    save(key, next)
    return 1, div(horizon - next, interval), ceil_div(next - now, NS), 0
  end
  if tat ~= stored then
    -- A TAT beyond the horizon (Redis's clock stepped back) is clamped, as in `decide`.
    save(key, tat)
  end
  return 0, 0, ceil_div(tat - now, NS), math.max(1, ceil_div(next - horizon, NS))
end

-- The claim: the in-flight marker holds the caller's random token, with a lease, so it
-- expires by itself if the caller dies. Only the delivered marker is 'd'.
local function claim(key, marker, lease)
  if redis.call('SET', key, marker, 'NX', 'PX', lease) then
    return 1
  elseif redis.call('GET', key) == 'd' then
    return 3
  end
  return 2
end

local replies = {}
local n = 0 -- replies so far
local k, a = 1, 1 -- the next key, the next argument
while a <= #ARGV do
  local code = ARGV[a]
  a = a + 1
  if code == 'commit' then
    -- The marker becomes 'd' for the TTL only if it is still the caller's (its lease did not
    -- run out, nobody claimed the ID since).
    local done = 0
    if redis.call('GET', KEYS[k]) == ARGV[a] then
      redis.call('SET', KEYS[k], 'd', 'PX', ARGV[a + 1])
      done = 1
    end
    n = n + 1
    replies[n] = done
    k, a = k + 1, a + 2
  elseif code == 'release' then
    -- Deleted only if still the caller's: a slow replica never deletes another's claim or a
    -- delivered marker.
    local done = 0
    if redis.call('GET', KEYS[k]) == ARGV[a] then
      redis.call('DEL', KEYS[k])
      done = 1
    end
    n = n + 1
    replies[n] = done
    k, a = k + 1, a + 1
  elseif code == 'l' or code == 'c' or code == 'lc' then
    local allowed, remaining, reset, retry, claimed = 1, 0, 0, 0, 0
    if code ~= 'c' then
      allowed, remaining, reset, retry = gcra(KEYS[k], tonumber(ARGV[a]), tonumber(ARGV[a + 1]))
      k, a = k + 1, a + 2
    end
    if code ~= 'l' then
      -- A denied request claims nothing, but its claim's key and arguments are still skipped.
      if allowed == 1 then
        claimed = claim(KEYS[k], ARGV[a], ARGV[a + 1])
      end
      k, a = k + 1, a + 2
    end
    replies[n + 1], replies[n + 2], replies[n + 3] = allowed, remaining, reset
    replies[n + 4], replies[n + 5] = retry, claimed
    n = n + 5
  else
    -- What ran so far stays done, as if the batch had ended here.
    store()
    return redis.error_reply('hookgate batch: unknown operation ' .. tostring(code))
  end
end
store()
return replies
